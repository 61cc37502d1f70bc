"""The deployment material, validated offline: the Dockerfile, the compose stack with its
Prometheus, Grafana and Tempo provisioning, the dashboard and the alert rules, the Kubernetes
base and production overlay.

No Docker engine or cluster is needed: `kubectl kustomize` renders the manifests, the objects are
validated against Kubernetes' schemas (kubernetes-validate, strict), the CRD objects and the
compose file are checked for what would break them, hadolint lints the Dockerfile, and every
metric the dashboard and the alerts query is compared with what a real gateway exports.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import kubernetes_validate
import openai
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mediagate.catalog import load_catalog
from mediagate.gateway import ConfigError, check_config
from mediagate.settings import Settings, group_env_name

from .conftest import GROUP_KEYS, Gateway, wait_until
from .otlp import OtlpReceiver
from .otlp import otlp as otlp  # a fixture
from .processes import clean_env, serving

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
PRODUCTION = DEPLOY / "kubernetes" / "overlays" / "production"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mediagate.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
TEMPO_CONFIG = DEPLOY / "tempo" / "tempo.yaml"
TEMPO_DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "tempo.yml"

# The oldest Kubernetes the manifests support, and the newest schemas the validator bundles.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
# Kinds without a bundled schema: the Prometheus Operator's CRDs, checked structurally below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Series Prometheus records itself for every scrape target; the app cannot export them.
SCRAPE_SERIES = {"up"}
# Labels Prometheus gives every series it scrapes.
SCRAPE_LABELS = {"job", "instance"}


def _tool(name: str) -> str:
    """A command-line tool the checks need; missing it fails under CI and skips elsewhere."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        reason = f"{name} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@cache
def _kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    kubectl = _tool("kubectl")
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def rendered(directory: Path) -> list[dict[str, Any]]:
    return list(_kustomize(directory))


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def setting_names() -> set[str]:
    """Every MEDIAGATE_* variable the gateway reads."""
    names = {f"MEDIAGATE_{field.upper()}" for field in Settings.model_fields}
    return names | {group_env_name(g) for g in load_catalog().groups()}


def container_environment(
    objects: list[dict[str, Any]], secrets: list[dict[str, Any]], name: str = "mediagate"
) -> dict[str, str]:
    """The environment the Deployment's container gets, built as the kubelet builds it: envFrom
    (ConfigMaps, Secrets) first, then `env` in order (values with $(VAR) references expanded,
    secretKeyRef read from `secrets`, the example Secrets; fieldRef as a stand-in)."""
    [container] = one(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    secret_data = {o["metadata"]["name"]: o["stringData"] for o in secrets if o["kind"] == "Secret"}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment |= config_maps[source["configMapRef"]["name"]]["data"]
        else:
            environment |= secret_data[source["secretRef"]["name"]]
    for entry in container.get("env", []):
        if "value" in entry:
            value = re.sub(r"\$\((\w+)\)", lambda m: environment.get(m[1], m[0]), entry["value"])
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secret_data[ref["name"]][ref["key"]]
        else:
            value = f"<{entry['valueFrom']['fieldRef']['fieldPath']}>"
        environment[entry["name"]] = value
    return environment


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, PRODUCTION], ids=["base", "production"])
def test_kustomize_renders_offline(directory: Path) -> None:
    kinds = {o["kind"] for o in rendered(directory)}
    assert kinds >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "StatefulSet",
        "NetworkPolicy",
        "ServiceAccount",
    }
    assert ("Secret" in kinds) == (directory == BASE)  # production: created out of band


@pytest.mark.parametrize("directory", [BASE, PRODUCTION], ids=["base", "production"])
def test_rendered_objects_validate_against_kubernetes_schemas(directory: Path) -> None:
    unchecked = set()
    for obj in rendered(directory):
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unchecked.add(obj["kind"])
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} ({version}): {where}: {exc}")
    assert unchecked == CRD_KINDS  # checked by the tests below


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = json.loads(json.dumps(one(rendered(BASE), "Deployment")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # sic: capital S
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_service_monitor_scrapes_the_gateway_service() -> None:
    objects = rendered(PRODUCTION)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "mediagate"
    spec = monitor["spec"]
    services = [
        s
        for s in objects
        if s["kind"] == "Service"
        and matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["mediagate"]
    service = services[0]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"], "no endpoint to scrape"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    # The alert rules say up{job="mediagate"}: the job label comes from the Service's label.
    assert service["metadata"]["labels"][spec["jobLabel"]] == "mediagate"
    # /metrics needs MEDIAGATE_METRICS_TOKEN: the monitor sends the token the gateway reads.
    [container] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    [token_env] = [e for e in container["env"] if e["name"] == "MEDIAGATE_METRICS_TOKEN"]
    reference = token_env["valueFrom"]["secretKeyRef"]
    for endpoint in spec["endpoints"]:
        sent = endpoint["bearerTokenSecret"]
        assert (sent["name"], sent["key"]) == (reference["name"], reference["key"])
    assert reference["name"] != "mediagate-keys"  # Prometheus is never given the keys


def test_the_ingress_does_not_expose_metrics() -> None:
    ingress = one(rendered(PRODUCTION), "Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            exposed = path["path"].rstrip("/") or "/"
            # A Prefix path exposes everything under it: only the OpenAI API's /v1.
            assert path["pathType"] in ("Prefix", "Exact")
            assert not "/metrics".startswith(exposed), path
            assert exposed == "/v1" or exposed.startswith("/v1/"), path


def test_the_compose_prometheus_sends_the_gateways_metrics_token() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    token = services["mediagate"]["environment"]["MEDIAGATE_METRICS_TOKEN"]
    assert compose["configs"]["metrics-token"]["content"] == token
    [mounted] = services["prometheus"]["configs"]
    assert mounted["source"] == "metrics-token"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in scrape["scrape_configs"] if j["job_name"] == "mediagate"]
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"] == mounted["target"]


def test_prometheus_rule_is_the_alert_file() -> None:
    rule = one(rendered(PRODUCTION), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    sys.path.insert(0, str(DEPLOY))
    try:
        import render_prometheusrule
    finally:
        sys.path.remove(str(DEPLOY))
    generated = (BASE / "prometheusrule.yaml").read_text()
    assert generated == render_prometheusrule.render(), "run `make deploy-sync`"


def test_alert_rules_are_well_formed() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    names = [rule["alert"] for group in groups for rule in group["rules"]]
    assert len(names) == len(set(names))
    for group in groups:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
            promql_parser.parse(rule["expr"])
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    # What an operator must act on, as the issue lists it.
    assert {
        "MediagateHighErrorRate",
        "MediagateUpstreamDown",
        "MediagateBudgetNearlySpent",
        "MediagateVideoJobsStuck",
    } <= set(names)


@pytest.mark.parametrize("directory", [BASE, PRODUCTION], ids=["base", "production"])
def test_the_gateway_deployment(directory: Path) -> None:
    objects = rendered(directory)
    deployment = one(objects, "Deployment", "mediagate")
    spec = deployment["spec"]
    assert "replicas" not in spec  # the HPA owns it
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert matches(spec["selector"]["matchLabels"], pod_labels)
    [container] = pod["containers"]

    # Reached through the Service, on the named port.
    service = one(objects, "Service", "mediagate")
    assert matches(service["spec"]["selector"], pod_labels)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names
    assert container["args"][-1] == str(port_names["http"])

    # Probes on the endpoints the app serves (the metric test below gets them).
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"

    # Security: non-root, read-only root filesystem, nothing extra.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no MEDIAGATE_SERVICE_* variables
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]

    # Writable: the data volume and /tmp (spooled uploads); the catalog is mounted read-only.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for mount in mounts.values():
        assert mount["name"] in volumes
    for path in ("/data", "/tmp"):
        assert not mounts[path].get("readOnly")
        assert "emptyDir" in volumes[mounts[path]["name"]]

    # Settings: the ConfigMap and Secret it reads exist, under the names kustomize gave them.
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    [config_ref] = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    [secret_ref] = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
    config = config_maps[config_ref]["data"]
    assert secret_ref == one(rendered(BASE), "Secret", "mediagate-keys")["metadata"]["name"]
    assert config["MEDIAGATE_DATA_DIR"] == "/data"
    catalog_mount = Path(config["MEDIAGATE_CONFIG"]).parent
    catalog_volume = volumes[mounts[str(catalog_mount)]["name"]]
    assert mounts[str(catalog_mount)]["readOnly"] is True
    catalog = config_maps[catalog_volume["configMap"]["name"]]["data"]
    assert Path(config["MEDIAGATE_CONFIG"]).name in catalog

    # Graceful termination: longer than the longest request, and than the gateway's own drain.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = int(config["MEDIAGATE_SHUTDOWN_TIMEOUT_S"])
    assert drain >= float(config.get("MEDIAGATE_UPSTREAM_TIMEOUT_S", 360))
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain

    # Several replicas share one PostgreSQL (the records) and one Redis (coordination): each URL
    # names an in-cluster StatefulSet's Service, on its port, reachable only from the gateway.
    database = httpx2.URL(config["MEDIAGATE_DATABASE_URL"])
    redis_url = httpx2.URL(config["MEDIAGATE_REDIS_URL"])
    assert (database.scheme, redis_url.scheme) == ("postgresql", "redis")
    assert "MEDIAGATE_STORE_URL" not in config  # a gateway with it refuses to start
    for url in (database, redis_url):
        store_service = one(objects, "Service", url.host)
        assert url.port in {p["port"] for p in store_service["spec"]["ports"]}
        stateful = one(objects, "StatefulSet", url.host)
        assert stateful["spec"]["serviceName"] == url.host
        store_labels = stateful["spec"]["template"]["metadata"]["labels"]
        assert matches(store_service["spec"]["selector"], store_labels)
        assert not matches(service["spec"]["selector"], store_labels)
        policy = one(objects, "NetworkPolicy", url.host)
        assert matches(policy["spec"]["podSelector"]["matchLabels"], store_labels)
        [allowed] = policy["spec"]["ingress"][0]["from"]
        assert matches(allowed["podSelector"]["matchLabels"], pod_labels)
        # Its data on a volume claimed per replica, mounted by the container.
        [claim] = stateful["spec"]["volumeClaimTemplates"]
        [store_container] = stateful["spec"]["template"]["spec"]["containers"]
        assert claim["metadata"]["name"] in {m["name"] for m in store_container["volumeMounts"]}
    redis = one(objects, "StatefulSet", redis_url.host)
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]

    # PostgreSQL: a headless Service (the StatefulSet's stable name); the URL's user and database
    # are the ones the image creates; its data directory is on the claimed volume; no password
    # in the ConfigMap: the gateway's PGPASSWORD and the server's POSTGRES_PASSWORD are the same
    # key of one Secret.
    postgres_service = one(objects, "Service", database.host)
    assert postgres_service["spec"]["clusterIP"] == "None"
    postgres = one(objects, "StatefulSet", database.host)
    [server] = postgres["spec"]["template"]["spec"]["containers"]
    assert server["image"].startswith("postgres:")
    server_env = {e["name"]: e for e in server["env"]}
    assert database.username == server_env["POSTGRES_USER"]["value"]
    assert database.path.lstrip("/") == server_env["POSTGRES_DB"]["value"]
    assert not database.password
    gateway_env = {e["name"]: e for e in container["env"]}
    secret_key = gateway_env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert server_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == secret_key
    [claim] = postgres["spec"]["volumeClaimTemplates"]
    [data_mount] = [m for m in server["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert Path(server_env["PGDATA"]["value"]).parent == Path(data_mount["mountPath"])
    probe = server["readinessProbe"]["exec"]["command"]
    assert probe[0] == "pg_isready" and database.username in probe
    # Restricted Pod Security (the production namespace enforces it): non-root, read-only root.
    server_pod = postgres["spec"]["template"]["spec"]
    assert server_pod["securityContext"]["runAsNonRoot"] is True
    assert server_pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert server["securityContext"]["capabilities"]["drop"] == ["ALL"]

    # Scaling and disruptions act on this Deployment's pods.
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mediagate",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one(objects, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("directory", [BASE, PRODUCTION], ids=["base", "production"])
def test_tracing_is_ready_to_point_at_the_clusters_collector(directory: Path) -> None:
    objects = rendered(directory)
    [container] = one(objects, "Deployment", "mediagate")["spec"]["template"]["spec"]["containers"]
    config = next(
        o["data"]
        for o in objects
        if o["kind"] == "ConfigMap" and "MEDIAGATE_DATABASE_URL" in o["data"]
    )
    # Off until the operator names their collector (tracing starts with the endpoint).
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in config
    assert config["OTEL_SERVICE_NAME"] == "mediagate"
    # Each span says which pod it came from: the variables it refers to are defined before it.
    env = container["env"]
    names = [e["name"] for e in env]
    attributes = next(e["value"] for e in env if e["name"] == "OTEL_RESOURCE_ATTRIBUTES")
    for reference in re.findall(r"\$\((\w+)\)", attributes):
        assert reference in names[: names.index("OTEL_RESOURCE_ATTRIBUTES")], reference
    assert "k8s.pod.name=$(POD_NAME)" in attributes


def test_production_overlay() -> None:
    objects = rendered(PRODUCTION)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "mediagate", obj["metadata"]["name"]
    deployment = one(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("registry.example.com/mediagate:")
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert one(objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    ingress = one(objects, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(objects, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    timeout = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
    assert int(timeout) > 360


def test_settings_are_ones_the_gateway_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    known = setting_names()
    # Every MEDIAGATE_* name the deployment files mention, comments included.
    files = [ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    files += [p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".env", ".json"}]
    mentioned = {
        (path.relative_to(ROOT), name)
        for path in files
        for name in re.findall(r"MEDIAGATE_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*<])", path.read_text())
    }
    assert len(mentioned) > 20
    unknown = sorted((str(path), name) for path, name in mentioned if name not in known)
    assert not unknown, f"settings the gateway does not read: {unknown}"

    # The production settings parse from the gateway container's environment as Kubernetes
    # builds it (ConfigMap, Secrets, env), and with real keys in the Secret the gateway would
    # start.
    environment = container_environment(rendered(PRODUCTION), secrets=rendered(BASE))
    assert "MEDIAGATE_STORE_URL" not in environment
    environment["MEDIAGATE_CONFIG"] = str(BASE / "catalog.yaml")
    for name in list(os.environ):
        if name.startswith("MEDIAGATE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.database_url == "postgresql://mediagate@mediagate-postgres:5432/mediagate"
    assert settings.redis_url == "redis://mediagate-redis:6379/0"
    assert environment["PGPASSWORD"] == "REPLACE_ME"  # the example Secret's, for libpq
    assert settings.public_url == "https://mediagate.example.com"
    with pytest.raises(ConfigError, match="MEDIAGATE_API_KEYS"):
        check_config(settings)  # the placeholders refuse to start, on purpose
    monkeypatch.setenv("MEDIAGATE_API_KEYS", "team-a:sk-real")
    check_config(Settings())


MANAGED_DATABASE = DEPLOY / "kubernetes" / "components" / "managed-database"


def test_the_managed_database_note_renders(tmp_path: Path) -> None:
    """The production overlay's note: with the managed-database component, the in-cluster
    PostgreSQL is gone, the URL names the managed one, and the settings still parse."""
    note = (PRODUCTION / "kustomization.yaml").read_text()
    assert "#   - ../../components/managed-database" in note
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(PRODUCTION, tmp_path)],
                "components": [os.path.relpath(MANAGED_DATABASE, tmp_path)],
            }
        )
    )
    objects = list(_kustomize(tmp_path))
    assert not [o for o in objects if o["metadata"]["name"] == "mediagate-postgres"]
    assert one(objects, "StatefulSet")["metadata"]["name"] == "mediagate-redis"
    environment = container_environment(objects, secrets=rendered(BASE))
    database = httpx2.URL(environment["MEDIAGATE_DATABASE_URL"])
    assert database.scheme == "postgresql" and database.host.endswith(".example.internal")
    assert database.params["sslmode"] == "verify-full" and not database.password
    assert environment["PGPASSWORD"]  # still from the Secret mediagate-postgres
    # Everything else is the production overlay's, the Deployment reads the merged ConfigMap.
    production = {(o["kind"], o["metadata"]["name"]) for o in rendered(PRODUCTION)}
    here = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert production - here == {
        ("StatefulSet", "mediagate-postgres"),
        ("Service", "mediagate-postgres"),
        ("NetworkPolicy", "mediagate-postgres"),
    } | {(k, n) for k, n in production if k == "ConfigMap" and n.startswith("mediagate-config-")}
    assert (
        Settings(
            database_url=environment["MEDIAGATE_DATABASE_URL"],
            redis_url=environment["MEDIAGATE_REDIS_URL"],
        )
        .records_url()
        .startswith("postgresql://")
    )


def test_example_secret_holds_no_real_value() -> None:
    secrets = [o for o in rendered(BASE) if o["kind"] == "Secret"]
    names = {s["metadata"]["name"] for s in secrets}
    assert names == {"mediagate-keys", "mediagate-metrics", "mediagate-postgres"}
    for secret in secrets:
        assert "data" not in secret
        assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    assert not [o for o in rendered(PRODUCTION) if o["kind"] == "Secret"]


def test_catalog_overrides_load() -> None:
    deployed = load_catalog(BASE / "catalog.yaml")
    assert deployed.routes["gpt-image-2.official"].price is not None
    example = load_catalog(DEPLOY / "catalog.example.yaml")
    assert "house-style" in example.models


# --- Container image --------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_conventions() -> None:
    steps = dockerfile()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) >= 2 and "AS build" in froms[0]  # multi-stage
    assert "slim" in next(a for k, a in steps if k == "ARG" and a.startswith("PYTHON_IMAGE"))
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    keywords = [k for k, _ in final]
    # Dependencies in their own layer: pyproject.toml is installed before the code is copied.
    build = steps[: len(steps) - len(final)]
    copies = [a for k, a in build if k == "COPY"]
    assert copies[0].startswith("pyproject.toml")
    assert any(a.startswith("mediagate") for a in copies[1:])
    # Non-root, by number (Kubernetes checks runAsNonRoot against it).
    [user] = [a for k, a in final if k == "USER"]
    assert int(user.split(":")[0]) != 0
    # Health check on /healthz, exec-form entry point (uvicorn is PID 1 and gets SIGTERM).
    [health] = [a for k, a in final if k == "HEALTHCHECK"]
    assert "/healthz" in health and "CMD [" in health
    entrypoint = json.loads(next(a for k, a in final if k == "ENTRYPOINT"))
    command = json.loads(next(a for k, a in final if k == "CMD"))
    assert [*entrypoint, *command][:2] == ["mediagate", "serve"]
    port = command[command.index("--port") + 1]
    assert next(a for k, a in final if k == "EXPOSE") == port
    assert f"127.0.0.1:{port}/healthz" in health
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    # Configuration only from the environment: no secret baked in.
    env = " ".join(a for k, a in steps if k in {"ENV", "ARG"})
    assert not re.search(r"MEDIAGATE_(KEY_|API_KEYS|ADMIN_KEY)|SECRET|PASSWORD", env)
    assert "MEDIAGATE_DATA_DIR=/data" in env


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"  # an allowlist
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "mediagate"}


# --- Compose, Prometheus, Grafana -------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+):-([^${}]*)\}")


def compose_default(value: str) -> str:
    """The value `docker compose` uses when the variables are unset: ${VAR:-default} -> default,
    nested ones too (${A:-x${B:-y}} -> xy)."""
    while (replaced := _INTERPOLATION.sub(lambda m: m.group(2), value)) != value:
        value = replaced
    return value


def seconds(duration: str) -> float:
    return promql_parser.parse_duration(duration).total_seconds()


def test_compose_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "mediagate",
        "postgres",
        "redis",
        "prometheus",
        "grafana",
        "tempo",
        "tempo-init",
    }
    gateway = services["mediagate"]
    assert gateway["build"] == "."

    # No secrets in the file: the upstream's variables come from an optional .env.
    assert gateway["env_file"] == [{"path": ".env", "required": False}]
    environment = {k: compose_default(str(v)) for k, v in gateway["environment"].items()}
    assert not [k for k in environment if re.search(r"KEY|SECRET|PASSWORD|UPSTREAM_URL", k)]
    for service in services.values():
        for value in (service.get("environment") or {}).values():
            assert not re.search(r"sk-|REPLACE", str(value))

    # With no .env: the simulator, its records in the stack's PostgreSQL (the database and user
    # the image creates, with the password it is given), coordinating through its Redis; the
    # gateway starts once both are healthy.
    assert "MEDIAGATE_STORE_URL" not in environment  # a gateway with it refuses to start
    database = httpx2.URL(environment["MEDIAGATE_DATABASE_URL"])
    assert database.scheme == "postgresql" and database.host == "postgres"
    postgres = services["postgres"]
    postgres_env = {k: compose_default(str(v)) for k, v in postgres["environment"].items()}
    assert postgres["image"].startswith("postgres:")
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == postgres_env["POSTGRES_DB"]
    assert database.port == 5432
    assert "ports" not in postgres  # reached on the stack's network only
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    redis_url = httpx2.URL(environment["MEDIAGATE_REDIS_URL"])
    assert redis_url.scheme == "redis" and redis_url.host == "redis"
    for store in ("postgres", "redis"):
        assert gateway["depends_on"][store]["condition"] == "service_healthy"
        assert services[store]["healthcheck"]
    assert "--appendonly" in services["redis"]["command"]
    assert seconds(gateway["stop_grace_period"]) > int(environment["MEDIAGATE_SHUTDOWN_TIMEOUT_S"])
    assert gateway["read_only"] is True and "/tmp" in gateway["tmpfs"]
    assert any(v.endswith(f":{environment['MEDIAGATE_DATA_DIR']}") for v in gateway["volumes"])

    # Every bind mount exists in the repository; every named volume is declared.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source
            else:
                assert source in compose["volumes"], source

    # Prometheus scrapes the gateway's container port and loads the alert rules.
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("."))
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [rules_glob] = config["rule_files"]
    assert Path(mounts["./deploy/prometheus/alerts.yml"]).match(rules_glob)
    [job] = config["scrape_configs"]
    assert job["job_name"] == "mediagate"  # the alert rules' up{job="mediagate"}
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["mediagate:8000"]}]
    assert any(p.endswith(":8000") for p in gateway["ports"])

    # Grafana: the provisioned datasource is that Prometheus, the dashboards are mounted where
    # the provider reads them.
    grafana = services["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    [datasource] = datasources
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in prometheus["ports"])
    [provider] = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/mediagate.yml").read_text()
    )["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning/datasources"].endswith("/datasources")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["current"]["value"] == datasource["uid"]

    # Tempo: the gateway exports its traces to it (OTLP/HTTP), Grafana reads them from it, the
    # dashboard's traces panel names that datasource.
    tempo = services["tempo"]
    config_flag = next(a for a in tempo["command"] if a.startswith("-config.file="))
    tempo_mounts = dict(v.split(":")[:2] for v in tempo["volumes"] if v.startswith("."))
    assert tempo_mounts["./deploy/tempo/tempo.yaml"] == config_flag.split("=", 1)[1]
    tempo_config = yaml.safe_load(TEMPO_CONFIG.read_text())
    otlp_http = tempo_config["distributor"]["receivers"]["otlp"]["protocols"]["http"]
    exporter = httpx2.URL(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (exporter.scheme, exporter.host) == ("http", "tempo")
    assert otlp_http["endpoint"] == f"0.0.0.0:{exporter.port}"  # every interface of the container
    assert gateway["depends_on"]["tempo"]["condition"] == "service_started"
    # Traces stay on the volume the one-shot gave to Tempo's user.
    [data_volume] = [v for v in tempo["volumes"] if not v.startswith(".")]
    volume_name, data_path = data_volume.split(":")[:2]
    storage = tempo_config["storage"]["trace"]
    for where in (storage["wal"]["path"], storage["local"]["path"]):
        assert where.startswith(data_path + "/")
    init = services["tempo-init"]
    assert init["image"] == tempo["image"] and init["entrypoint"][-1] == data_path
    assert f"{volume_name}:{data_path}" in init["volumes"]
    assert tempo["depends_on"]["tempo-init"]["condition"] == "service_completed_successfully"
    [tempo_source] = yaml.safe_load(TEMPO_DATASOURCE.read_text())["datasources"]
    assert tempo_source["type"] == "tempo"
    assert tempo_source["url"] == f"http://tempo:{tempo_config['server']['http_listen_port']}"
    assert "tempo" in grafana["depends_on"]
    traced = [
        t["datasource"]
        for p in panels(dashboard)
        for t in p.get("targets", [])
        if t["datasource"]["type"] == "tempo"
    ]
    assert traced and all(d["uid"] == tempo_source["uid"] for d in traced)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mediagate"
    everything = list(panels(dashboard))
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    for panel in everything:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            if target["datasource"]["type"] == "tempo":  # the traces panel: a TraceQL search
                assert target["queryType"] == "traceql"
                assert 'resource.service.name="mediagate"' in target["query"]
                continue
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            promql_parser.parse(grafana_to_promql(target["expr"]))
    # What the issue asks the dashboard to show.
    exprs = " ".join(t.get("expr", "") for p in everything for t in p.get("targets", []))
    for needed in (
        "sum by (model, route) (rate(mediagate_requests_total",  # requests by model and route
        'mediagate_requests_total{status=~"[45]..',  # errors
        "histogram_quantile(0.99, sum by (le) (rate(mediagate_request_duration_seconds_bucket",
        "mediagate_upstream_requests_total{status=~",  # upstream errors
        "mediagate_upstream_retries_total",
        "sum by (key, model) (rate(mediagate_cost_usd_total",
        "mediagate_budget_remaining_usd",
        "sum by (status) (increase(mediagate_videos_finished_total",
        'process_resident_memory_bytes{job="mediagate"}',  # the process itself
        'rate(process_cpu_seconds_total{job="mediagate"}',
        "python_gc_collections_total",
    ):
        assert needed in exprs, needed
    assert [p for p in everything if p["type"] == "table" and "traces" in p["title"].lower()]


# --- The metrics the dashboard and the alerts query exist ---------------------------------------

_GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")
_GRAFANA_VARIABLES = re.compile(r"\$\{?\w+(:\w+)?\}?")


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would get it (ranges and variables substituted)."""
    return _GRAFANA_VARIABLES.sub(".*", _GRAFANA_RANGES.sub("5m", expr))


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard target and alert rule."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = [
        (f"dashboard panel {p['title']!r}", grafana_to_promql(t["expr"]))
        for p in panels(dashboard)
        for t in p.get("targets", [])
        if t["datasource"]["type"] == "prometheus"
    ]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        found += [(f"alert {r['alert']}", r["expr"]) for r in group["rules"]]
    return found


def query_parts(expr: str) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], set[str]]:
    """The selectors (metric name, [(label, op, value)]) of a query, and the labels its
    aggregations and vector matches group on."""
    selectors: list[tuple[str, list[tuple[str, str, str]]]] = []
    grouping: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [(m.name, str(m.op), m.value) for m in node.matchers.matchers]
            selectors.append((node.name, matchers))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            if node.modifier.type == promql_parser.AggModifierType.By:
                grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                grouping.update(node.modifier.matching.labels)
            grouping.update(node.modifier.group_labels or [])

    promql_parser.walk(promql_parser.parse(expr), visit)
    return selectors, grouping


def exported_endpoints() -> set[str]:
    """The `endpoint` label values the app can give requests: its routes' names (the label is
    the name of the route that served, mediagate.http.middleware)."""
    from mediagate.http.files import files
    from mediagate.http.health import health
    from mediagate.http.images import images
    from mediagate.http.models import models
    from mediagate.http.openapi import openapi
    from mediagate.http.usage import usage
    from mediagate.http.videos import videos

    return {
        route.name
        for r in (images, models, videos, usage, files, openapi, health)
        for route in r.routes
    }


@pytest.fixture
def exposition(make_gateway: Callable[..., Gateway], tmp_path: Path) -> dict[str, set[str]]:
    """A gateway that has served a little of everything: {sample name: its label names}."""
    metered = "sk-deploy-metered"
    keys = tmp_path / "keys.yaml"
    entry = {
        "name": "metered",
        "sha256": hashlib.sha256(metered.encode()).hexdigest(),
        "budget_usd_per_day": 5.0,
        "budget_usd_per_month": 50.0,
    }
    keys.write_text(yaml.safe_dump({"keys": [entry]}))
    # The default group's pool starts with a key the upstream refuses: it gets benched.
    pool = f"sk-revoked,{GROUP_KEYS['default']}"
    # The catalog check on (the fixtures turn it off): its gauge gets a sample per route.
    gateway = make_gateway(
        keys_file=keys, key_default=pool, video_poll_after_ms=20, catalog_check_interval_s=3600
    )
    client = gateway.sdk(api_key=metered)
    for _ in range(2):
        client.images.generate(
            model="sora_image", prompt="a fox", extra_headers={"Idempotency-Key": uuid.uuid4().hex}
        )
    # Three 503s on the official route (two retries), then the enterprise fallback serves.
    burst = f"[sim:burst503=3:deploy{uuid.uuid4().hex[:8]}]"
    client.images.generate(model="gpt-image-2", prompt=f"a fox {burst}", size="1024x1024")
    video = client.videos.create_and_poll(model="sora-2", prompt="a fox", poll_interval_ms=20)
    assert video.status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="no-such-model", prompt="a fox")
    with gateway.http(api_key=None) as http:
        assert http.get("/healthz").status_code == 200  # the probes' endpoints
        assert http.get("/readyz").status_code == 200
        wait_until(lambda: "mediagate_catalog_route_listed{" in http.get("/metrics").text)
        text = http.get("/metrics").text

    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "summary": ["_sum", "_count", "_created"],
        }.get(family.type, [""])
        for suffix in suffixes:  # exported, even before a first sample
            samples.setdefault(family.name + suffix, set())
        for sample in family.samples:
            # Every series has its name as a label (`__name__`): a metric with a sample is never
            # without labels here, even one with no labels of its own (process_cpu_seconds).
            samples.setdefault(sample.name, set()).update({"__name__", *sample.labels})
    return samples


def query_problems(
    found: list[tuple[str, str]], exposition: dict[str, set[str]], endpoints: set[str]
) -> list[str]:
    """What is wrong with queries against an exposition: a metric the gateway does not export,
    a label it does not have, an endpoint it does not serve, a grouping on no label."""
    problems = []
    for where, expr in found:
        selectors, grouping = query_parts(expr)
        if not selectors:
            problems.append(f"{where}: selects no metric")
        labels_in_query = {"le"} if any(n.endswith("_bucket") for n, _ in selectors) else set()
        for name, matchers in selectors:
            if name in SCRAPE_SERIES:
                labels_in_query |= {"job", "instance"}
                continue
            if name not in exposition:
                problems.append(f"{where}: {name} is not exported by the gateway")
                continue
            labels = exposition[name]
            if not labels:
                problems.append(f"{where}: {name} has no sample here to check its labels on")
            labels = labels | SCRAPE_LABELS
            labels_in_query |= labels
            for label, op, value in matchers:
                if label not in labels:
                    problems.append(f"{where}: {name} has no label {label!r}")
                elif label == "endpoint" and value != ".*":
                    pattern = value if "Re" in op else re.escape(value)
                    if not any(re.fullmatch(pattern, e) for e in endpoints):
                        problems.append(f"{where}: no endpoint matches {value!r}")
        unknown = grouping - labels_in_query
        if unknown:
            problems.append(f"{where}: groups by labels no metric has: {sorted(unknown)}")
    return problems


def test_dashboard_and_alerts_query_only_exported_metrics(
    exposition: dict[str, set[str]],
) -> None:
    endpoints = exported_endpoints()
    assert {"images.generations", "videos.create", "videos.remix"} <= endpoints
    found = queries()
    assert query_problems(found, exposition, endpoints) == []

    # The dashboard's variables read labels that exist.
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"])
            assert match, variable["name"]
            assert match.group(2) in exposition[match.group(1)]

    used = {name for _, expr in found for name, _ in query_parts(expr)[0]}
    assert used >= {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "python_gc_collections_total",
        "mediagate_requests_total",
        "mediagate_request_duration_seconds_bucket",
        "mediagate_upstream_requests_total",
        "mediagate_upstream_retries_total",
        "mediagate_cost_usd_total",
        "mediagate_budget_remaining_usd",
        "mediagate_videos_finished_total",
        "mediagate_circuit_state",
    }


def test_the_metric_check_catches_mistakes() -> None:
    exposition = {"mediagate_requests_total": {"endpoint", "model", "status"}}
    bad = [
        ("typo", "rate(mediagate_request_total[5m])"),
        ("label", 'rate(mediagate_requests_total{route="x"}[5m])'),
        ("endpoint", 'rate(mediagate_requests_total{endpoint="images.generation"}[5m])'),
        ("grouping", "sum by (key) (rate(mediagate_requests_total[5m]))"),
        ("suffix", "rate(mediagate_requests[5m])"),
    ]
    problems = query_problems(bad, exposition, {"images.generations"})
    assert [p.split(":")[0] for p in problems] == [name for name, _ in bad]
    good = [
        ("ok", 'sum by (model) (rate(mediagate_requests_total{endpoint=~"images\\\\..*"}[5m]))')
    ]
    assert query_problems(good, exposition, {"images.generations"}) == []


# --- The compose service as it runs: simulator mode on PostgreSQL and Redis -----------------------


def test_compose_gateway_serves_the_simulator_on_postgresql_and_redis(
    tmp_path: Path, replica_store: dict[str, str], otlp: OtlpReceiver
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = {
        k: compose_default(str(v))
        for k, v in compose["services"]["mediagate"]["environment"].items()
    }
    # As in the container, with this machine's PostgreSQL, Redis and directory in place of the
    # stack's.
    environment |= {
        "MEDIAGATE_DATABASE_URL": replica_store["database_url"],
        "MEDIAGATE_REDIS_URL": replica_store["redis_url"],
        "MEDIAGATE_STORE_PREFIX": replica_store["store_prefix"],
        "MEDIAGATE_DATA_DIR": str(tmp_path / "data"),
        # A receiver on loopback stands in for the stack's Tempo.
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
    }
    with serving(["serve", "--host", "127.0.0.1"], clean_env(**environment), tmp_path) as gw:
        base = gw.url
        assert httpx2.get(f"{base}/readyz").json()["checks"] == {
            "catalog": True,
            "database": True,
            "store": True,
        }
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="anything", max_retries=0)
        assert client.images.generate(model="sora_image", prompt="a fox").data[0].b64_json
        video = client.videos.create_and_poll(model="sora-2", prompt="a fox", poll_interval_ms=50)
        assert video.status == "completed"
        gw.proc.terminate()  # the spans still queued are flushed at shutdown
        assert gw.proc.wait(timeout=30) == 0
    assert any("simulated upstream" in line for line in gw.output())
    # The records went to PostgreSQL: the gateway migrated it at start.
    import psycopg

    with psycopg.connect(replica_store["database_url"]) as conn:
        applied = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
        assert applied is not None and applied[0] >= 2
    # Tracing is on in the stack: each request's server span, with its upstream attempts.
    names = {s.name for s in otlp.spans}
    assert {"POST /v1/images/generations", "POST /v1/videos", "upstream POST"} <= names
    assert {s.resource["service.name"] for s in otlp.spans} == {"mediagate"}

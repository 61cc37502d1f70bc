"""OpenTelemetry traces, as an operator turns them on: the standard OTEL_EXPORTER_OTLP_ENDPOINT
on a `mediagate serve` process, exporting OTLP/HTTP to a receiver on loopback (tests/otlp.py).

One image generation whose first upstream attempt gets a 503 is traced as: the server span
(continuing the client's W3C traceparent) with a child span per upstream attempt and one for
the image download; nothing of the trace goes upstream; the request's log lines carry its
trace id."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path

import httpx2
import openai
import pytest

from .conftest import CLIENT_KEY, GROUP_KEYS, Sim
from .otlp import OtlpReceiver, Span
from .otlp import otlp as otlp  # a fixture
from .processes import clean_env, serving
from .resilience import catalog

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
ERROR = 2  # Status.StatusCode
PROPAGATION_HEADERS = {"traceparent", "tracestate", "baggage"}


def gateway_env(sim: Sim, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A `mediagate serve` on the session's simulator, with fast retries (and no OTEL_* of the
    developer's own)."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("OTEL_")}
    env.update(
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEY_OPENAIOFFICIAL=GROUP_KEYS["OpenAI Official"],
        MEDIAGATE_KEY_OPENAIOFFICIALENTERPRISE=GROUP_KEYS["OpenAI Official Enterprise"],
        MEDIAGATE_API_KEYS=f"team-a:{CLIENT_KEY}",
        MEDIAGATE_FETCH_ALLOW_HOSTS=f"127.0.0.1:{sim.port}",
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_CONFIG=str(catalog(tmp_path)),
    )
    env.update(extra)
    return env


def tree(spans: list[Span]) -> str:
    """The spans as an indented tree with their attributes (printed when a test fails)."""
    children: dict[str, list[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def show(span: Span, depth: int) -> None:
        attributes = " ".join(f"{k}={v}" for k, v in sorted(span.attributes.items()))
        lines.append(f"{'  ' * depth}{span.name} [{attributes}]")
        for name, fields in span.events:
            lines.append(f"{'  ' * depth}  * event {name} {fields}")
        for child in children.get(span.span_id, []):
            show(child, depth + 1)

    for span in spans:
        if span.parent_id not in ids:
            show(span, 0)
    return "\n".join(lines)


def test_an_image_generation_with_a_retried_upstream_call_is_traced(
    sim: Sim, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    env = gateway_env(
        sim,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
        OTEL_BSP_SCHEDULE_DELAY="50",  # ms: export at once rather than every 5 s
    )
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    prompt = f"a heron at dawn [sim:burst503=1:trace{uuid.uuid4().hex[:8]}]"
    with serving(["serve"], env, tmp_path) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        answer = client.images.with_raw_response.generate(
            model="sora_image",
            prompt=prompt,
            extra_headers={
                "traceparent": f"00-{trace_id}-{parent_id}-01",
                "baggage": "tenant=acme",
                "X-Request-ID": "lb-7f3a9c",
            },
        )
        assert answer.parse().data[0].b64_json
        assert answer.headers["x-client-request-id"] == "lb-7f3a9c"
        assert answer.headers["x-mediagate-retries"] == "1"
        otlp.wait_for(lambda spans: any(s.kind == SERVER and s.trace_id == trace_id for s in spans))
    spans = otlp.trace(trace_id)
    print(tree(spans))  # shown with -s, and on failure
    assert set(otlp.paths) == {"/v1/traces"}

    # The server span continues the client's trace, with what the gateway knows.
    [server] = [s for s in spans if s.kind == SERVER]
    assert server.parent_id == parent_id
    assert server.name == "POST /v1/images/generations"
    assert server.resource["service.name"] == "mediagate"
    attributes = server.attributes
    assert attributes["mediagate.key"] == "team-a"
    assert attributes["mediagate.model"] == "sora_image"
    assert attributes["mediagate.route"] == "sora_image"
    assert attributes["mediagate.group"] == "default"
    assert attributes["mediagate.endpoint"] == "images.generations"
    assert attributes["mediagate.client_request_id"] == "lb-7f3a9c"
    assert attributes["mediagate.request_id"] == answer.headers["x-request-id"]
    assert attributes["mediagate.retries"] == 1
    assert attributes["http.route"] == "/v1/images/generations"
    assert 200 in {attributes.get("http.status_code"), attributes.get("http.response.status_code")}
    [(event, fields)] = server.events
    assert event == "mediagate.retry" and fields["reason"] == "unavailable"

    # Its children: two upstream attempts (a 503, then the answer) and the image download.
    attempts = [s for s in spans if s.name.startswith("upstream ")]
    assert [
        (a.attributes["mediagate.attempt"], a.attributes["mediagate.outcome"]) for a in attempts
    ] == [
        (1, "http_503"),
        (2, "ok"),
    ]
    for attempt in attempts:
        assert attempt.parent_id == server.span_id and attempt.kind == CLIENT
        assert attempt.attributes["mediagate.route"] == "sora_image"
        assert attempt.attributes["mediagate.group"] == "default"
        assert attempt.attributes["url.path"] == "/chat/completions"
    assert attempts[0].status == ERROR
    assert [a.attributes["http.response.status_code"] for a in attempts] == [503, 200]
    [fetch] = [s for s in spans if s.name == "fetch image"]
    assert fetch.parent_id == server.span_id
    assert fetch.attributes["mediagate.outcome"] == "ok"
    assert fetch.attributes["server.address"] == f"127.0.0.1:{sim.port}"
    assert fetch.attributes["mediagate.bytes"] > 0

    # Never a key or a prompt in a span.
    exported = json.dumps([s.__dict__ for s in otlp.spans], default=str)
    for secret in [CLIENT_KEY, *GROUP_KEYS.values(), "heron"]:
        assert secret not in exported

    # Nothing of the trace went upstream: no trace context, no baggage, no id of ours.
    assert len(sim.sent("/v1/chat/completions")) == 2 and sim.state.headers
    for method, path, headers in sim.state.headers:
        assert not PROPAGATION_HEADERS & set(headers), (method, path)
        assert not any(trace_id in v or server.span_id in v for v in headers.values()), path

    # The request's log lines carry its request id and trace id.
    records = [json.loads(line) for line in gateway.output() if line.startswith("{")]
    lines = [r for r in records if r.get("client_request_id") == "lb-7f3a9c"]
    assert {r["msg"] for r in lines} >= {"retrying upstream call", "request"}
    assert {r.get("trace_id") for r in lines} == {trace_id}


def test_a_request_without_traceparent_starts_a_trace(
    sim: Sim, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    env = gateway_env(
        sim,
        tmp_path,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{otlp.url}/v1/traces",
        OTEL_SERVICE_NAME="gateway-eu",
    )
    with serving(["serve"], env, tmp_path) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            client.images.generate(model="no-such-model", prompt="x")
        assert client.images.generate(model="gpt-image-2", prompt="a wren").data
        # A hosted image link is a capability: its name stays out of spans and logs.
        link = client.images.generate(model="gpt-image-2", prompt="a wren", response_format="url")
        url = link.data[0].url or ""
        name = url.rsplit("/", 1)[1]
        assert "/v1/files/images/" in url and httpx2.get(url).status_code == 200
        for _ in range(3):
            assert client.models.list().data
        gateway.proc.terminate()  # the spans still queued are flushed at shutdown
        assert gateway.proc.wait(timeout=30) == 0
    servers = [s for s in otlp.spans if s.kind == SERVER]
    assert all(s.parent_id == "" and s.resource["service.name"] == "gateway-eu" for s in servers)
    by_name: dict[str, list[Span]] = {}
    for span in servers:
        by_name.setdefault(span.name, []).append(span)
    assert len(by_name["GET /v1/models"]) == 3
    codes = [
        s.attributes.get("mediagate.error.code") for s in by_name["POST /v1/images/generations"]
    ]
    assert sorted(map(str, codes)) == ["None", "None", "model_not_found"]
    assert len({s.trace_id for s in servers}) == len(servers)  # one trace per request
    assert len(by_name["GET /v1/files/images/{name}"]) == 1
    assert name not in json.dumps([s.__dict__ for s in otlp.spans], default=str)
    assert name not in "\n".join(gateway.output())
    # Probes and scrapes are not traced.
    assert not [s for s in servers if "healthz" in s.name or "metrics" in s.name]


def test_tracing_stays_off_unless_configured(sim: Sim, otlp: OtlpReceiver, tmp_path: Path) -> None:
    # MEDIAGATE_OTEL=false wins over the standard variable; and with neither, nothing is sent.
    env = gateway_env(sim, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, MEDIAGATE_OTEL="false")
    with serving(["serve"], env, tmp_path) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        assert client.images.generate(model="gpt-image-2", prompt="a wren").data
        gateway.proc.terminate()
        assert gateway.proc.wait(timeout=30) == 0
    assert otlp.paths == []
    records = [json.loads(line) for line in gateway.output() if line.startswith("{")]
    assert not [r for r in records if "trace_id" in r]

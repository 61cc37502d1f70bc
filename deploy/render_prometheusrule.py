"""Write deploy/kubernetes/base/prometheusrule.yaml from deploy/prometheus/alerts.yml.

The alert rules have one source, the Prometheus rule file the compose stack loads; the
Prometheus Operator wants the same groups wrapped in a PrometheusRule. `make deploy-sync` runs
this; tests/test_deploy.py fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "prometheus" / "alerts.yml"
TARGET = HERE / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `make deploy-sync`: edit that file instead.
# The Prometheus Operator's form of mediagate's alert rules. Your Prometheus may select rules by
# a label (kube-prometheus-stack: `release: <its release name>`): add it in your overlay.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule() -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text("utf-8"))["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "mediagate",
            "labels": {
                "app.kubernetes.io/name": "mediagate",
                "app.kubernetes.io/component": "gateway",
            },
        },
        "spec": {"groups": groups},
    }


def render() -> str:
    body = yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=100)
    return HEADER + body


if __name__ == "__main__":
    TARGET.write_text(render(), "utf-8")
    print(f"wrote {TARGET.relative_to(HERE.parent)}", file=sys.stderr)

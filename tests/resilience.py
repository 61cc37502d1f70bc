"""Helpers shared by the resilience tests (retries, key pools, fallbacks, idempotency, faults)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from mediagate.catalog import load_catalog
from mediagate.servethread import BackgroundServer
from mediagate.simulator import SimConfig, SimState, create_simulator_app

from .conftest import Sim

# Backoff that keeps tests quick; the policy itself is what is tested.
FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05}

# A simulated upstream whose groups have several keys each.
POOL_KEYS = {
    "sk-d1": "default",
    "sk-d2": "default",
    "sk-o1": "OpenAI Official",
    "sk-o2": "OpenAI Official",
    "sk-e1": "OpenAI Official Enterprise",
}


def catalog(tmp_path: Path, routes: dict[str, dict[str, Any]] | None = None, **models: Any) -> Path:
    """A MEDIAGATE_CONFIG file: every route retries (and every video route polls) fast, plus
    these route and model changes."""
    # Video routes also poll fast: the bundled intervals follow the upstreams (Muse: 15 s).
    merged: dict[str, dict[str, Any]] = {
        rid: {"retry": dict(FAST), **({"video": {"poll_interval_s": 0.02}} if r.video else {})}
        for rid, r in load_catalog().routes.items()
    }
    for rid, change in (routes or {}).items():
        for key, value in change.items():
            if isinstance(value, dict) and isinstance(merged[rid].get(key), dict):
                merged[rid][key] = {**merged[rid][key], **value}
            else:
                merged[rid][key] = value
    path = tmp_path / "catalog-override.yaml"
    data: dict[str, Any] = {"routes": merged}
    if models:
        data["models"] = models
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def pool_sim() -> Iterator[Sim]:
    state = SimState()
    app = create_simulator_app(SimConfig(keys=dict(POOL_KEYS)), state)
    with BackgroundServer(app) as server:
        yield Sim(server.url, server.port, state)


def pool_settings(sim: Sim, **keys: str) -> dict[str, Any]:
    """Gateway settings for `pool_sim`: keys per group (comma-separated pools)."""
    return {
        "upstream_url": f"{sim.url}/v1",
        "fetch_allow_hosts": [f"127.0.0.1:{sim.port}"],
        "key_default": keys.get("default", "sk-d1"),
        "key_openaiofficial": keys.get("official", "sk-o1"),
        "key_openaiofficialenterprise": keys.get("enterprise", "sk-e1"),
    }


def metric(gateway_url: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    text = httpx2.get(f"{gateway_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def statuses(sim: Sim, path: str = "/v1/images/generations") -> list[int]:
    return [c.status for c in sim.sent(path)]

"""/readyz: ready when the catalog is loaded and the records' database and the coordination
store answer; when one does not, a 503 that says which and why, and a request that needs a
budget decision fails closed with a stable code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import psycopg
import pytest

from .conftest import Gateway, Sim
from .test_keys import entry, keys_file


def test_ready_on_each_deployment(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str]
) -> None:
    gw = make_gateway(**job_store)
    answer = httpx2.get(f"{gw.url}/readyz")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ready",
        "checks": {"catalog": True, "database": True, "store": True},
    }


def test_a_lost_database_is_not_ready_says_why_and_a_budget_fails_closed(
    make_gateway: Callable[..., Gateway],
    sim: Sim,
    replica_store: dict[str, str],
    postgres_server: str,
    tmp_path: Path,
) -> None:
    path = keys_file(tmp_path / "keys.yaml", [entry("capped", "sk-capped", budget_usd_per_day=5.0)])
    gw = make_gateway(keys_file=path, **replica_store)
    assert httpx2.get(f"{gw.url}/readyz").status_code == 200
    sdk = gw.sdk(api_key="sk-capped")
    assert sdk.images.generate(model="gpt-image-2-web", prompt="a heron").data
    name = replica_store["database_url"].rsplit("/", 1)[1]
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    answer = httpx2.get(f"{gw.url}/readyz", timeout=30)
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "not ready" and body["checks"]["database"] is False
    assert body["checks"]["store"] is True  # Redis still answers
    assert body["reasons"]["database"]
    # A request that needs a budget decision is refused, not sent unmetered: a 503 with a
    # stable code (the SDKs retry it), and nothing reached the upstream.
    sent = len(sim.sent())
    with pytest.raises(openai.InternalServerError) as refused:
        sdk.images.generate(model="gpt-image-2-web", prompt="a heron, unmetered?")
    assert refused.value.status_code == 503
    assert refused.value.code == "job_store_unavailable"
    assert len(sim.sent()) == sent
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # for the fixture's drop

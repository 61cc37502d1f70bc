"""/readyz: ready when the catalog is loaded and the records' database and the coordination
store answer; when one does not, a 503 that says which and why, and a request that needs a
budget decision fails closed with a stable code."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import psycopg
import pytest

from .conftest import Gateway


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


def test_a_lost_database_is_not_ready_and_says_why(
    make_gateway: Callable[..., Gateway],
    replica_store: dict[str, str],
    postgres_server: str,
    tmp_path: pytest.TempPathFactory,
) -> None:
    gw = make_gateway(**replica_store)
    assert httpx2.get(f"{gw.url}/readyz").status_code == 200
    name = replica_store["database_url"].rsplit("/", 1)[1]
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    answer = httpx2.get(f"{gw.url}/readyz", timeout=30)
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "not ready" and body["checks"]["database"] is False
    assert body["checks"]["store"] is True  # Redis still answers
    assert body["reasons"]["database"]
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # for the fixture's drop

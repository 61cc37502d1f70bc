"""The databases a bench runs the gateway on: a PostgreSQL database of its own (created, then
dropped) on the server the tests use, and whether Redis answers.

The server: `MEDIAGATE_TEST_POSTGRES_URL`, else the local default the tests use
(postgresql://postgres:postgres@127.0.0.1:5432/postgres; `.ci/run` makes it answer).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

LOCAL_POSTGRES_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"


def postgres_server() -> str | None:
    """The URL of a PostgreSQL server's maintenance database, if one answers."""
    url = os.environ.get("MEDIAGATE_TEST_POSTGRES_URL", LOCAL_POSTGRES_URL)
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return url
    except Exception:
        return None


@contextlib.contextmanager
def fresh_postgres_database(server: str, prefix: str = "mediagate_bench") -> Iterator[str]:
    """A new, empty database on `server` (its URL), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url(default: str = "redis://127.0.0.1:6379/0") -> str | None:
    """BENCH_REDIS_URL (or the local default), if it answers."""
    url = os.environ.get("BENCH_REDIS_URL", default)
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return url if client.ping() else None
        finally:
            client.close()
    except Exception:
        return None

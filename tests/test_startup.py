"""Start-up imports only what the configuration uses (issue 28, "Fast start").

In a fresh interpreter: `import mediagate.app`, `create_app(settings)`, then the app's lifespan
(the gateway opened on the embedded SQLite store), with `sys.modules` read after each step. The
default configuration loads no Redis client, no OpenTelemetry SDK or exporter, no boto3, no
Pillow, no PostgreSQL driver; a configuration that asks for traces does load the SDK (so the
check can tell). Nor is what the configuration uses, but not before its first answer, loaded on
the way there: aiohttp (the upstream network, built after start or by the first upstream
call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

# Not needed by the default configuration: (module, what would need it).
UNUSED = {
    "redis": "MEDIAGATE_REDIS_URL=redis://...",
    "opentelemetry.sdk": "MEDIAGATE_OTEL / OTEL_EXPORTER_OTLP_ENDPOINT",
    "opentelemetry.exporter": "MEDIAGATE_OTEL / OTEL_EXPORTER_OTLP_ENDPOINT",
    "boto3": "MEDIAGATE_IMAGE_STORE_URL=s3://...",
    "botocore": "MEDIAGATE_IMAGE_STORE_URL=s3://...",
    "PIL": "a video's input_reference",
    "psycopg": "MEDIAGATE_DATABASE_URL=postgresql://...",
    "psycopg2": "a PostgreSQL store",
    "asyncpg": "a PostgreSQL store",
}

# Used by the default configuration, but not on the path to its first answer.
LATER = {
    "aiohttp": "the upstream network: built a moment after start, or by the first upstream call",
}

_PROBE = """
import asyncio, json, sys
from mediagate.settings import Settings
watched = json.loads(sys.argv[1])

def loaded():
    return sorted(m for m in watched if m in sys.modules)

keep_open_s = float(sys.argv[2])
seen = {}
import mediagate.app
seen["import"] = loaded()
app = mediagate.app.create_app(Settings())
seen["create_app"] = loaded()

async def opened():
    async with app.router.lifespan_context(app):
        seen["lifespan"] = loaded()
        if keep_open_s:
            await asyncio.sleep(keep_open_s)
            seen["open"] = loaded()

asyncio.run(opened())
print(json.dumps(seen))
"""


def _probe(tmp_path: Path, keep_open_s: str = "0", **env: str) -> dict[str, list[str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAGATE_", "OTEL_"))}
    environment.update(
        {
            # A configured gateway on the embedded default store; nothing is asked upstream
            # (the catalog check is off, no request is made).
            "MEDIAGATE_UPSTREAM_URL": "http://127.0.0.1:9/v1",
            "MEDIAGATE_KEY_DEFAULT": "sk-upstream-test",
            "MEDIAGATE_API_KEYS": "team-a:sk-client-test-0000000000000000",
            "MEDIAGATE_DATA_DIR": str(tmp_path / "data"),
            "MEDIAGATE_CATALOG_CHECK_INTERVAL_S": "0",
            **env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(sorted({*UNUSED, *LATER})), keep_open_s],
        cwd=PACKAGE_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def test_the_default_configuration_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    seen = _probe(tmp_path)
    for step in ("import", "create_app", "lifespan"):
        assert seen[step] == [], {m: {**UNUSED, **LATER}[m] for m in seen[step]}


def test_the_upstream_network_is_built_after_start(tmp_path: Path) -> None:
    """The control of LATER: the gateway, kept open past the moment it readies its upstream
    network, has aiohttp loaded (so the check above can tell)."""
    seen = _probe(tmp_path, keep_open_s="2.5")
    assert seen["lifespan"] == []
    assert seen["open"] == ["aiohttp"]


def test_a_configuration_with_traces_loads_the_sdk(tmp_path: Path) -> None:
    """The control: the probe sees a module the configuration does use."""
    seen = _probe(tmp_path, MEDIAGATE_OTEL="true", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert seen["import"] == []  # importing decides nothing
    assert "opentelemetry.sdk" in seen["create_app"]
    assert "opentelemetry.exporter" in seen["lifespan"]

"""Probes and metrics: /healthz (alive), /readyz (ready for traffic), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediagate.errors import AuthenticationFailed, GatewayError
from mediagate.gateway import Gateway
from mediagate.http.deps import gateway
from mediagate.http.routes import Routes

health = Routes()


@health.get("/healthz", name="health")
async def healthz() -> dict[str, str]:
    """Alive: the process answers. Nothing else is checked, so a store outage does not get
    every replica restarted."""
    return {"status": "ok"}


@health.get("/readyz", name="health")
async def readyz(request: Request) -> Response:
    """Ready for traffic: the catalog is loaded, the records' database answers (`database`)
    and so does what replicas coordinate through (`store`: Redis, or the SQLite file). A check
    that fails says why in `reasons` (the store's own message, passwords masked)."""
    gw: Gateway | None = getattr(request.app.state, "gateway", None)
    checks = {"catalog": bool(gw and gw.catalog.models), "database": False, "store": False}
    reasons: dict[str, str] = {}
    if gw is not None:
        for name, ping in (("database", gw.database.ping), ("store", gw.ledger.ping)):
            try:
                async with asyncio.timeout(2):
                    await ping()
                checks[name] = True
            except TimeoutError:
                reasons[name] = "no answer within 2 s"
            except GatewayError as exc:
                reasons[name] = exc.message
    else:
        reasons["catalog"] = "the gateway is starting"
    ready = all(checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": checks}
    if reasons:
        body["reasons"] = reasons
    return JSONResponse(body, status_code=200 if ready else 503)


@health.get("/metrics", name="health")
async def metrics(request: Request) -> Response:
    """Prometheus metrics; with MEDIAGATE_METRICS_TOKEN set, only for `Bearer <token>` (they
    name the tenants and show their spend and remaining budgets)."""
    gw = gateway(request)
    token = gw.settings.metrics_token
    if token is not None and token.get_secret_value():
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise AuthenticationFailed(
                "GET /metrics needs 'Authorization: Bearer <MEDIAGATE_METRICS_TOKEN>'.",
                headers={"www-authenticate": "Bearer"},
            )
    await gw.metering.flush()  # the cost counters of requests answered so far
    registry = gw.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

"""The application factory: `create_app(settings)`.

Cheap and pure: the app's middleware, error boundary and routes are wired here; the network,
the stores and the files are touched only when its lifespan starts (mediagate.gateway).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from fastapi import FastAPI

from mediagate.accounting.requestlog import RequestLog
from mediagate.allocator import Quiet
from mediagate.console import routers
from mediagate.console.web import render_error
from mediagate.errors import Scrubber
from mediagate.gateway import open_gateway
from mediagate.http.admin import admin
from mediagate.http.admin_keys import keys as admin_keys
from mediagate.http.admin_reads import OPENAPI_DOCUMENT, admin_document, reads
from mediagate.http.batches import batches
from mediagate.http.bodies import Bodies
from mediagate.http.errors import install_handlers
from mediagate.http.files import files
from mediagate.http.health import health
from mediagate.http.images import images
from mediagate.http.middleware import RequestBookkeeping
from mediagate.http.models import models
from mediagate.http.openapi import openapi
from mediagate.http.usage import usage
from mediagate.http.videos import videos
from mediagate.observability.metrics import Metrics
from mediagate.observability.tracing import Tracing, TracingMiddleware
from mediagate.settings import Settings

# The admin API's saved OpenAPI document (served by mediagate.http.admin_reads).
ADMIN_OPENAPI_FILE = Path(__file__).parent / "http" / OPENAPI_DOCUMENT


def create_app(
    settings: Settings,
    *,
    upstream_transport: httpx2.AsyncBaseTransport | None = None,
    on_started: Callable[[], None] | None = None,
) -> FastAPI:
    """A gateway app for these settings, with a metrics registry of its own. Tests may hand
    the upstream sender a transport of their own (a mock, or a recording one). `on_started`
    runs once the gateway is open, before the first request (`mediagate serve` freezes the
    heap there)."""
    metrics = Metrics()
    scrub = Scrubber(settings.all_upstream_keys())

    tracing = Tracing(bool(settings.otel))  # exports only while the lifespan runs
    # The request log's queue (written by the gateway once its database is open).
    request_log = RequestLog(
        metrics,
        capacity=settings.request_log_queue,
        flush_s=settings.request_log_flush_s,
        days=settings.request_log_days,
        traced=bool(settings.otel),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            tracing.running(),
            open_gateway(
                settings,
                metrics,
                scrub,
                upstream_transport,
                tracer=tracing.tracer,
                request_log=request_log,
            ) as gw,
        ):
            app.state.gateway = gw
            if on_started is not None:
                on_started()
            yield

    app = FastAPI(
        title="mediagate",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # The /v1 API's document is a saved file, served by mediagate.http.openapi; FastAPI's
        # generated one would describe the handlers (raw Request bodies), not the API.
        openapi_url=None,
        # A trailing-slash redirect would build its Location from the client's Host header (an
        # open redirect through a cache or a careless proxy): such a path is a plain 404.
        redirect_slashes=False,
        # FastAPI's own OpenTelemetry (off unless a global provider is set): the gateway's
        # spans are its own (mediagate.observability.tracing, on its own provider); asking
        # whether FastAPI's are on cost every request a look at the global providers.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_handlers(app, scrub, pages=render_error if settings.console else None)
    # The request bodies this replica holds, bounded, and the pace they must arrive at.
    bodies = Bodies(
        settings.max_inflight_body_bytes, settings.body_timeout_s, settings.body_min_bytes_per_s
    )
    app.state.bodies = bodies
    # Outermost: every answer, errors included, carries its request id and what was tried.
    # ...and past MEDIAGATE_MAX_INFLIGHT calls, a new one is a 503 at once.
    app.add_middleware(
        RequestBookkeeping,
        metrics=metrics,
        scrub=scrub,
        bodies=bodies,
        max_inflight=settings.inflight_limit(),
        request_log=request_log if settings.request_log else None,
        # A quiet replica gives the memory of its last answers back (mediagate.allocator).
        quiet=Quiet() if settings.allocator_keep_bytes() else None,
    )
    # Around that, the request's trace span, so the bookkeeping's log lines and attributes
    # belong to it. Not there at all when tracing is off: a pass-through layer would still
    # cost every request a coroutine frame, held for as long as the call is in flight.
    if tracing.enabled:
        app.add_middleware(TracingMiddleware, tracing=tracing)
    # Each module's routes declared on the app itself (mediagate.http.routes: analysed once,
    # matched once). Routes are matched in order: the videos' first, as a status poll is the
    # most frequent request (no two modules share a path).
    routes = (videos, images, models, usage, files, batches, openapi, health, admin, reads)
    for module_routes in (*routes, admin_keys):
        module_routes.declare(app)
    if settings.console:
        for page_routes in routers():
            page_routes.declare(app)
    return app


def admin_openapi(settings: Settings | None = None) -> dict[str, Any]:
    """The admin API's OpenAPI document as the app's routes make it (FastAPI's generation of
    every `/admin/v1` route): what `make admin-openapi` saves (mediagate/http/admin_openapi.json).
    """
    app = create_app(settings or Settings(upstream_url="http://upstream.invalid/v1"))
    return admin_document(app.routes)


def write_admin_openapi(path: Path = ADMIN_OPENAPI_FILE) -> None:
    """Save the admin API's document (`make admin-openapi`), as stable JSON."""
    path.write_text(json.dumps(admin_openapi(), indent=2, sort_keys=True) + "\n", "utf-8")

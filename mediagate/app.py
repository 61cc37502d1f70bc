"""The application factory: `create_app(settings)`.

Cheap and pure: the app's middleware, error boundary and routes are wired here; the network,
the stores and the files are touched only when its lifespan starts (mediagate.gateway).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI

from mediagate.errors import Scrubber
from mediagate.gateway import open_gateway
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            tracing.running(),
            open_gateway(settings, metrics, scrub, upstream_transport, tracer=tracing.tracer) as gw,
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
    )
    install_handlers(app, scrub)
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
    )
    # Around that, the request's trace span (a pass-through when tracing is off), so the
    # bookkeeping's log lines and attributes belong to it.
    app.add_middleware(TracingMiddleware, tracing=tracing)
    for router in (images, models, videos, usage, files, openapi, health):
        app.include_router(router)
    return app

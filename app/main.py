"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .api import api, public
from .attempts import AttemptHeaders
from .errors import Scrubber, install_handlers
from .gateway import open_gateway
from .metrics import Metrics
from .middleware import RequestContext
from .settings import Settings
from .usage import usage
from .videos import videos


def create_app(settings: Settings) -> FastAPI:
    """A gateway app for these settings. Cheap: the network and files are touched only when its
    lifespan starts."""
    metrics = Metrics()
    scrub = Scrubber(settings.all_upstream_keys())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_gateway(settings, metrics, scrub) as gw:
            app.state.gateway = gw
            yield

    app = FastAPI(
        title="mediagate",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_handlers(app, scrub)
    app.add_middleware(RequestContext, metrics=metrics, scrub=scrub)
    # Outermost: retries and fallbacks are reported on every answer, errors included.
    app.add_middleware(AttemptHeaders)
    app.include_router(api)
    app.include_router(videos)
    app.include_router(usage)
    app.include_router(public)
    return app

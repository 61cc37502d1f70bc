"""The HTTP surface: OpenAI-compatible endpoints plus health and metrics."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import InvalidRequest, NotFound
from .gateway import Gateway
from .images import generate_images
from .storage import CONTENT_TYPES


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def client(request: Request) -> str:
    """The calling client key's name (the dependency that enforces auth)."""
    gw = gateway(request)
    name = (
        gw.clients.identify(request.headers.get("authorization"))
        if gw.clients.enabled
        else "anonymous"
    )
    request.state.key_name = name
    return name


def endpoint(name: str) -> Any:
    def mark(request: Request) -> None:
        request.state.endpoint = name

    return Depends(mark)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object."
        ) from None


def _model_object(gw: Gateway, model_id: str) -> dict[str, Any]:
    model = gw.catalog.model(model_id)
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


api = APIRouter(prefix="/v1", dependencies=[Depends(client)])
public = APIRouter()


@api.post("/images/generations", dependencies=[endpoint("images.generations")])
async def images_generations(request: Request) -> Response:
    gw = gateway(request)
    body = await json_body(request)
    base_url = str(request.base_url).rstrip("/")
    result = await generate_images(gw, body, base_url, request.state)
    gw.metrics.images.labels(request.state.model, request.state.route.id).inc(result.count)
    request.state.normalized = {
        k: v for k, v in result.headers.items() if k != "x-mediagate-route"
    } or None
    return JSONResponse(result.body, headers=result.headers)


@api.get("/models", dependencies=[endpoint("models")])
async def list_models(request: Request) -> dict[str, Any]:
    gw = gateway(request)
    return {"object": "list", "data": [_model_object(gw, m) for m in sorted(gw.catalog.models)]}


@api.get("/models/{model_id:path}", dependencies=[endpoint("models")])
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return _model_object(gateway(request), model_id)


@public.get("/v1/files/images/{name}", dependencies=[endpoint("files")])
async def stored_image(name: str, request: Request) -> FileResponse:
    path = gateway(request).store.path(name)
    if path is None:
        raise NotFound("No such image (it may have expired).")
    return FileResponse(
        path,
        media_type=CONTENT_TYPES[path.suffix.lstrip(".")],
        headers={"cache-control": "private, max-age=86400, immutable"},
    )


@public.get("/healthz", dependencies=[endpoint("health")])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@public.get("/metrics", dependencies=[endpoint("health")])
async def metrics(request: Request) -> Response:
    registry = gateway(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

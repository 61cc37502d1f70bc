"""The HTTP surface: OpenAI-compatible endpoints plus health and metrics."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .disconnect import cancel_on_disconnect
from .errors import GatewayError, InvalidRequest, ModelNotFound, NotFound
from .gateway import Gateway
from .idempotency import form_digest, idempotent, json_digest
from .images import Job, prepare_edit, prepare_generation, run
from .jsonio import FastJSONResponse
from .keys import ANONYMOUS
from .ledger import Charge
from .metering import admit, settle_soon
from .pricing import actual_images, estimate_images
from .streaming import emulate, open_relay
from .uploads import MAX_IMAGES

_FORWARDED_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_FORWARDED_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def client(request: Request) -> str:
    """The calling client key's name (the dependency that enforces auth); its policy is left
    in `request.state.policy`. Async, like every dependency here, so that FastAPI runs it on
    the event loop instead of handing it to a worker thread (a thread hop per request)."""
    gw = gateway(request)
    policy = (
        gw.clients.identify(request.headers.get("authorization"))
        if gw.clients.enabled
        else ANONYMOUS
    )
    request.state.policy = policy
    request.state.key_name = policy.name
    return policy.name


def endpoint(name: str) -> Any:
    async def mark(request: Request) -> None:
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


def public_base(request: Request) -> str:
    """The gateway's own base URL as the client reaches it, for the links it hands out."""
    configured = gateway(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    # Behind a proxy the Host the gateway sees is not the one clients use; the usual
    # X-Forwarded-* headers say which is. Values that are not plainly a host are ignored.
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    prefix = request.headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
    base = str(request.base_url).rstrip("/")
    scheme, _, netloc = base.partition("://")
    scheme = proto if proto in ("http", "https") else scheme
    netloc = host if _FORWARDED_HOST.match(host) else netloc
    prefix = prefix if _FORWARDED_PREFIX.match(prefix) else ""
    return f"{scheme}://{netloc}{prefix}"


async def _then(events: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]]) -> Any:
    try:
        async for event in events:
            yield event
    finally:
        await cleanup()


async def _nothing() -> None:
    return None


async def _answer(
    request: Request,
    job: Job,
    cleanup: Callable[[], Awaitable[None]] = _nothing,
    input_images: int = 0,
) -> Response:
    """The job's ImagesResponse, or its event stream when the client asked to stream; metered
    against the client key's limits and budget."""
    estimate = estimate_images(job.route.price, job.plan, input_images)
    try:
        ticket = await admit(
            job.gw, request.state.policy, job.model, images=sum(job.plan.calls), estimate=estimate
        )
    except BaseException:
        await cleanup()
        raise

    async def settle(images: int, usage: dict[str, Any] | None) -> None:
        # Billed on the route that served (a fallback may have changed it), failures cost 0.
        cost = actual_images(job.route.price, job.plan, images, usage, estimate)
        request.state.cost = cost
        await ticket.settle(Charge(job.model, cost, images=images))

    headers = job.plan.headers()
    request.state.normalized = {k: v for k, v in headers.items() if k != "x-mediagate-route"}
    if job.gw.settings.log_prompts:
        request.state.prompt = job.plan.prompt
    if not job.plan.stream:
        try:
            # A client that goes away cancels the upstream calls instead of paying for them.
            result = await cancel_on_disconnect(request, run(job))
        except BaseException:
            settle_soon(ticket, Charge(job.model, 0.0))
            raise
        finally:
            await cleanup()
        await settle(result.count, result.body.get("usage"))
        job.gw.metrics.images.labels(job.model, job.route.id).inc(result.count)
        # Megabytes of base64: rendered by orjson (see app.jsonio).
        return FastJSONResponse(result.body, headers=result.headers)
    try:
        if job.route.stream == "passthrough":
            events = await open_relay(job, settle)
        else:
            events = emulate(job, job.gw.settings.stream_keepalive_s, settle)
    except BaseException:
        settle_soon(ticket, Charge(job.model, 0.0))
        await cleanup()
        raise

    async def finish() -> None:
        settle_soon(ticket, Charge(job.model, 0.0))  # a no-op once the stream has settled
        await cleanup()

    request.state.streaming = True
    headers = job.plan.headers()  # the route that serves, after any fallback
    headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
    return StreamingResponse(_then(events, finish), media_type="text/event-stream", headers=headers)


@api.post("/images/generations", dependencies=[endpoint("images.generations")])
async def images_generations(request: Request) -> Response:
    body = await json_body(request)

    async def work() -> Response:
        job = prepare_generation(gateway(request), body, public_base(request), request.state)
        return await _answer(request, job)

    # A repeated Idempotency-Key is answered before anything is metered or sent upstream.
    async def digest() -> str:
        return json_digest(body)

    return await idempotent(request, digest, work)


@api.post("/images/edits", dependencies=[endpoint("images.edits")])
async def images_edits(request: Request) -> Response:
    gw = gateway(request)
    limit = gw.settings.edit_max_total_bytes + 1024 * 1024  # files plus the text fields
    if int(request.headers.get("content-length") or 0) > limit:
        raise InvalidRequest(
            f"The request is larger than {limit} bytes.", param="image", code="file_too_large"
        )
    # The uploads are spooled to temporary files by the parser: the only copy the gateway
    # keeps, closed once the answer (or the stream) is done.
    form = await request.form(max_files=MAX_IMAGES + 4, max_fields=64)

    async def work() -> Response:
        try:
            job = await prepare_edit(gw, form, public_base(request), request.state)
        except BaseException:
            await form.close()
            raise
        assert job.edit is not None
        return await _answer(request, job, form.close, input_images=len(job.edit.files))

    return await idempotent(request, lambda: form_digest(form), work, skipped=form.close)


@api.get("/models", dependencies=[endpoint("models")])
async def list_models(request: Request) -> dict[str, Any]:
    gw = gateway(request)
    policy = request.state.policy
    allowed = [m for m in sorted(gw.catalog.models) if policy.allows(m)]
    return {"object": "list", "data": [_model_object(gw, m) for m in allowed]}


@api.get("/models/{model_id:path}", dependencies=[endpoint("models")])
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    if not request.state.policy.allows(model_id):
        raise ModelNotFound(
            f"The model '{model_id}' does not exist or you do not have access to it.",
            param="model",
        )
    return _model_object(gateway(request), model_id)


@public.get("/v1/files/images/{name}", dependencies=[endpoint("files")])
async def stored_image(name: str, request: Request) -> Response:
    # No key needed: the unguessable name is the credential, so links work in <img> tags.
    image = await gateway(request).store.get(name)
    if image is None:
        raise NotFound("No such image (it may have expired).")
    max_age = max(0, int(image.expires_at - time.time()))
    return StreamingResponse(
        image.chunks,
        media_type=image.content_type,
        headers={
            "content-length": str(image.size),
            "cache-control": f"private, max-age={max_age}, immutable",
            "x-content-type-options": "nosniff",
        },
    )


@public.get("/healthz", dependencies=[endpoint("health")])
async def healthz() -> dict[str, str]:
    """Alive: the process answers. Nothing else is checked, so a store outage does not get
    every replica restarted."""
    return {"status": "ok"}


@public.get("/readyz", dependencies=[endpoint("health")])
async def readyz(request: Request) -> Response:
    """Ready for traffic: the catalog is loaded and the store answers."""
    gw: Gateway | None = getattr(request.app.state, "gateway", None)
    checks = {"catalog": bool(gw and gw.catalog.models), "store": False}
    if gw is not None:
        try:
            async with asyncio.timeout(2):
                await gw.ledger.ping()
            checks["store"] = True
        except (TimeoutError, GatewayError):
            pass
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@public.get("/metrics", dependencies=[endpoint("health")])
async def metrics(request: Request) -> Response:
    registry = gateway(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

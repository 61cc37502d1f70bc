"""A strict stand-in for the reseller upstream, served on loopback so gateway tests run offline.

It answers like the real routes (token group picks the route, each route refuses what the
real one refuses) and records every request, so tests can assert both on what the gateway
returned and on exactly what it sent upstream.

Image links (`/files/{name}`) are served as stored, except that a name starting `gz-` is
served in `Content-Encoding: gzip` whatever the request's Accept-Encoding (a CDN that
compresses anyway): the links of an answer to a prompt with `[sim:gzipimage]` are such, and a
test may store one itself (`SimState.files["gz-x.png"]`) as a client's image link.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from mediagate.simulator.ark import register_ark_routes
from mediagate.simulator.dashscope import register_dashscope_routes
from mediagate.simulator.edits import (
    EditForm,
    check_files,
    check_form_shape,
    coerce_fields,
    is_multipart,
    read_edit_form,
)
from mediagate.simulator.faults import ClientGone, FaultInjector, pause
from mediagate.simulator.jobs import bearer_of, decode_body, is_json_content_type
from mediagate.simulator.listing import register_listing_routes
from mediagate.simulator.muse import register_muse_routes
from mediagate.simulator.png import make_gif, make_png, make_svg
from mediagate.simulator.rules import (
    ChatJob,
    ConnectionCut,
    Directives,
    ImageJob,
    Route,
    SimError,
    bad_b64,
    chat_prompt,
    chat_usage,
    image_usage,
    invalid,
    leaky_error,
    parse_directives,
    reports_usage,
    resolve_route,
    validate_chat,
    validate_images,
)
from mediagate.simulator.state import Call, SimConfig, SimState
from mediagate.simulator.streaming import QUIET_CUTS, image_events
from mediagate.simulator.videos import register_video_routes

REFUSAL_TEXT = "I can't create that image because it may violate our content policy."
_PNG = "image/png"
# Where each HTTP request's scope carries the way to drop its connection (see _SimulatorApp).
_ABORT_KEY = "mediagate.sim.abort"

Kind = Literal["images", "chat", "edits"]


class _SimulatorApp(FastAPI):
    """FastAPI plus a way for the `[sim:cut]` fault to drop a connection without answering,
    and a count of the requests in flight (which `SimState.reset` waits for).

    ASGI has no message for dropping a connection: an app that raises before answering still
    gets a 500 sent for it. uvicorn hands the app a bound method of its per-request cycle,
    which holds the socket's transport, so the handle is taken from there. Under any other
    server (or the in-process TestClient) there is none and the fault raises ConnectionCut
    instead.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        sim: SimState = self.state.sim
        # In flight until the answer is complete (or abandoned), so SimState.reset can wait.
        with sim.serving(scope["method"], scope["path"]):
            scope[_ABORT_KEY] = _transport_abort(send)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            sim.headers.append((scope["method"], scope["path"], headers))
            await super().__call__(scope, receive, send)


def _transport_abort(send: Send) -> Callable[[], None] | None:
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    # Duck-typed: uvloop's transports abort too but are not asyncio.Transport subclasses.
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None


def create_simulator_app(config: SimConfig, state: SimState | None = None) -> FastAPI:
    sim = state if state is not None else SimState()
    app = _SimulatorApp(
        title="mediagate upstream simulator", docs_url=None, redoc_url=None, openapi_url=None
    )
    # A planted mid-stream cut is raised inside the response body; it is not a crash to log.
    logging.getLogger("uvicorn.error").addFilter(QUIET_CUTS)
    app.state.sim = sim
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    def record_fault(method: str, path: str, token: str | None, raw: bytes, status: int) -> None:
        body = decode_body(raw)
        model = body.get("model") if isinstance(body, dict) else None
        sim.calls.append(Call(method, path, config.keys.get(token or ""), model, body, status))

    app.add_middleware(FaultInjector, plan=sim.faults, record=record_fault, abort_key=_ABORT_KEY)

    @app.post("/v1/images/generations")
    async def images_generations(request: Request) -> Response:
        return await _serve(request, config, sim, "images")

    @app.post("/v1/images/edits")
    async def images_edits(request: Request) -> Response:
        return await _serve(request, config, sim, "edits")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _serve(request, config, sim, "chat")

    @app.get("/files/{name}")
    async def get_file(name: str) -> Response:
        # Unauthenticated on purpose, like the reseller's CDN links.
        stored = sim.files.get(name)
        if stored is None:
            return _error_response(SimError(404, "File not found.", code="not_found"))
        content, content_type = stored
        if name.startswith(GZIP_FILE):
            packed = gzip.compress(content, mtime=0)
            return Response(packed, media_type=content_type, headers={"content-encoding": "gzip"})
        return Response(content=content, media_type=content_type)

    register_video_routes(app, config, sim)
    register_muse_routes(app, config, sim)
    register_ark_routes(app, config, sim)
    register_dashscope_routes(app, config, sim)
    register_listing_routes(app, config, sim)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown_v1(request: Request) -> Response:
        # Recorded too, so a gateway calling a path the upstream lacks shows up in tests.
        raw = await request.body()
        group = config.keys.get(_bearer(request) or "")
        call = Call(request.method, request.url.path, group, None, decode_body(raw), 0)
        sim.calls.append(call)
        error = SimError(404, f"Invalid URL ({request.method} {request.url.path})")
        response = _error_response(error)
        call.status = response.status_code
        return response

    return app


async def _serve(request: Request, config: SimConfig, sim: SimState, kind: Kind) -> Response:
    raw = await request.body()
    multipart = kind == "edits" and is_multipart(request)
    # Appended on arrival so concurrent requests keep arrival order; filled in as we learn.
    # Multipart bodies are recorded parsed (text fields plus file digests), never as bytes.
    call = Call(
        request.method, request.url.path, None, None, None if multipart else decode_body(raw), 0
    )
    sim.calls.append(call)
    request_id = secrets.token_hex(12)
    try:
        if kind == "edits":
            form = await read_edit_form(request)
            call.body = form.record() if isinstance(form, EditForm) else decode_body(raw)
            response = await _dispatch_edit(request, call, config, sim, form, request_id)
        else:
            response = await _dispatch(request, call, config, sim, kind, request_id)
    except SimError as error:
        response = _error_response(error)
    except ConnectionCut:
        # No answer at all; the call keeps status 0, "never answered".
        return await _drop_connection(request)
    except ClientGone:
        # The client hung up during a wait: nobody to answer, and the call stays "never
        # answered" (the fault layer lets nothing more out for this request).
        return Response(status_code=499)
    response.headers["x-request-id"] = request_id
    call.status = response.status_code
    return response


async def _drop_connection(request: Request) -> Response:
    abort: Callable[[], None] | None = request.scope.get(_ABORT_KEY)
    if abort is None:
        raise ConnectionCut("simulated connection reset")
    abort()
    # One turn of the loop lets the server see the connection is gone; after that it writes
    # nothing, so the response below never leaves and the server logs no error either.
    await asyncio.sleep(0)
    return Response(status_code=500)


def _authenticate(request: Request, call: Call, config: SimConfig, request_id: str) -> str:
    token = _bearer(request)
    group = config.keys.get(token) if token else None
    if group is None:
        raise SimError(401, f"Invalid token (request id {request_id})", code="invalid_api_key")
    call.group = group
    return group


async def _dispatch(
    request: Request,
    call: Call,
    config: SimConfig,
    sim: SimState,
    kind: Literal["images", "chat"],
    request_id: str,
) -> Response:
    group = _authenticate(request, call, config, request_id)
    body = call.body
    if not is_json_content_type(request):
        raise invalid("Content-Type must be application/json.", None, "invalid_content_type")
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    model = body.get("model")
    if "model" not in body:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid("Invalid 'model': expected a non-empty string.", "model", "invalid_type")
    call.model = model
    route = resolve_route(group, model, kind)

    # Faults come before validation so a test can trigger them with any otherwise-valid body.
    prompt = chat_prompt(body) if route == "chat" else body.get("prompt")
    directives = parse_directives(prompt if isinstance(prompt, str) else None)
    garbage = await _common_faults(request, directives)
    if garbage is not None:
        return garbage
    if directives.refuse and route == "chat":
        # The chat route refuses in prose with a 200, which the gateway must detect.
        return _chat_completion(model, _refusal_job(body), REFUSAL_TEXT)
    _images_faults(directives, wants_stream=route != "chat" and body.get("stream") is True)
    if directives.leakyerror:
        raise SimError(400, **_leaky(request))

    if route == "chat":
        chat = validate_chat(body)
        await _service_time(request, config)
        png = await _render(chat.width, chat.height, chat.prompt, model)
        url = _store(request, sim, png, gzipped=directives.gzipimage)
        content = f"> 🎨 Generating...\n\n![image]({url})\n"
        return _chat_completion(model, chat, content)

    job = replace(validate_images(route, body), model=model)
    return await _answer_images(request, config, sim, job, directives)


async def _dispatch_edit(
    request: Request,
    call: Call,
    config: SimConfig,
    sim: SimState,
    form: EditForm | SimError,
    request_id: str,
) -> Response:
    group = _authenticate(request, call, config, request_id)
    if isinstance(form, SimError):
        raise form
    check_form_shape(form)
    model = form.text("model")
    if model is None:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not model:
        raise invalid("Invalid 'model': expected a non-empty string.", "model", "invalid_type")
    call.model = model
    route = resolve_route(group, model, "images")

    # The same faults as generations, read from the prompt field, before any validation.
    directives = parse_directives(form.text("prompt"))
    garbage = await _common_faults(request, directives)
    if garbage is not None:
        return garbage
    _images_faults(directives, wants_stream=form.text("stream") == "true")
    if directives.leakyerror:
        raise SimError(400, **_leaky(request))

    job = validate_images(route, coerce_fields(form), edit=True)
    job = replace(job, input_images=check_files(route, form), model=model)
    return await _answer_images(request, config, sim, job, directives)


def _leaky(request: Request) -> dict[str, Any]:
    error = leaky_error(bearer_of(request))
    return {
        "message": error["message"],
        "type_": error["type"],
        "param": error["param"],
        "code": error["code"],
    }


async def _common_faults(request: Request, directives: Directives) -> Response | None:
    """Apply the faults every endpoint shares; returns the garbage answer if one is planted."""
    if directives.sleep_s:
        await pause(request.scope, directives.sleep_s)
    if directives.status is not None:
        headers = {"Retry-After": "1"} if directives.status == 429 else None
        raise SimError(
            directives.status,
            f"simulated upstream error {directives.status}",
            type_="upstream_error",
            headers=headers,
        )
    if directives.garbage:
        return HTMLResponse("<html>upstream exploded</html>")
    return None


def _images_faults(directives: Directives, *, wants_stream: bool) -> None:
    if directives.refuse:
        raise SimError(
            400, "Your request was rejected by the safety system.", code="moderation_blocked"
        )
    if directives.cut and not wants_stream:
        # A streaming request is cut after its first event instead (see _answer_images).
        raise ConnectionCut("simulated connection reset")


async def _answer_images(
    request: Request, config: SimConfig, sim: SimState, job: ImageJob, directives: Directives
) -> Response:
    if job.stream and not directives.nostream:
        # Streams always carry base64 (response_format and the b64 directives do not apply),
        # and the service time is spread over the events instead of paid up front.
        gap_s = max(config.latency_s, config.stream_gap_s)
        return StreamingResponse(
            image_events(job, gap_s=gap_s, cut=directives.cut, line_end=directives.line_end),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    await _service_time(request, config)
    form = "url" if directives.b64url else "b64_json" if directives.b64only else job.response_format
    body = await _images_body(request, sim, job.route, job, form, directives.gzipimage)
    junk = bad_b64(job.prompt)
    if junk is not None:
        for item in body["data"]:
            if "b64_json" in item:
                item["b64_json"] = junk
    if directives.echokey:
        # A leaky upstream: its key in every string it may write, and a field of its own.
        key = bearer_of(request)
        for item in body["data"]:
            item["revised_prompt"] = f"{job.prompt} ({key})"
        body.update(size=f"{job.size} {key}", upstream_debug={"key": key}, quality=key)
    return JSONResponse(body)


async def _images_body(
    request: Request,
    sim: SimState,
    route: Route,
    job: ImageJob,
    response_format: str,
    gzipped: bool = False,
) -> dict[str, Any]:
    data: list[dict[str, str]] = []
    for index in range(job.n):
        image, content_type = await _render_job(job, index)
        item: dict[str, str]
        if response_format == "url":
            item = {"url": _store(request, sim, image, gzipped=gzipped, content_type=content_type)}
        else:
            item = {"b64_json": _encode_b64(route, image)}
        if route == "web":
            # The ChatGPT web route rewrites prompts and says so.
            item["revised_prompt"] = job.prompt
        data.append(item)
    result: dict[str, Any] = {"created": int(time.time()), "data": data}
    if reports_usage(route):  # the official forward: usage, and what it actually made
        result["usage"] = image_usage(job)
        result.update(
            size=job.size,
            quality=job.quality,
            output_format=job.output_format,
            background=job.background,
        )
    return result


def _encode_b64(route: Route, png: bytes) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    # The reverse routes' quirks from the routes doc FAQ: padding stripped, and the web route
    # also prefixes a data: URL. A gateway that forwards these as-is breaks strict decoders.
    if route == "web":
        return "data:image/png;base64," + encoded.rstrip("=")
    if route == "vip":
        return encoded.rstrip("=")
    return encoded


def _chat_completion(model: str, job: ChatJob, content: str) -> JSONResponse:
    return JSONResponse(
        {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": chat_usage(job, content),
        }
    )


def _refusal_job(body: dict[str, Any]) -> ChatJob:
    """The job a refusal is billed for, without failing on the body it refuses."""
    prompt = chat_prompt(body) or ""
    return ChatJob(prompt, 1024, 1024, 0)


GZIP_FILE = "gz-"  # a stored file served gzip-encoded


_EXTENSIONS = {
    _PNG: "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
}


def _store(
    request: Request,
    sim: SimState,
    png: bytes,
    *,
    gzipped: bool = False,
    content_type: str = _PNG,
) -> str:
    name = f"{GZIP_FILE if gzipped else ''}{secrets.token_hex(16)}.{_EXTENSIONS[content_type]}"
    sim.files[name] = (png, content_type)
    # Built from the request so links point at whatever host and port the test bound.
    return f"{str(request.base_url).rstrip('/')}/files/{name}"


async def _render_job(job: ImageJob, index: int) -> tuple[bytes, str]:
    """Image `index` of the job in its output format (GIF and SVG really are, and the 2.6 web
    route's JPEG and WebP, which say their format and size only in their bytes; the official
    routes' jpeg and webp are answered as PNGs, which their `output_format` does not show) and
    its content type."""
    seed = job.seed(index)
    if job.output_format == "gif":
        return make_gif(job.width, job.height, seed, job.frame_count, job.model), "image/gif"
    if job.output_format == "svg":
        return make_svg(job.width, job.height, seed, job.model), "image/svg+xml"
    png = await _render(job.width, job.height, seed, job.model)
    if job.route == "web-2.6" and job.output_format in ("jpeg", "webp"):
        return await asyncio.to_thread(_converted, png, job.output_format)
    return png, _PNG


def _converted(png: bytes, output_format: str) -> tuple[bytes, str]:
    """A PNG as a JPEG or a WebP, and its content type."""
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").save(out, output_format.upper())
    return out.getvalue(), f"image/{output_format}"


async def _render(width: int, height: int, seed: str, model: str) -> bytes:
    # A 4K image takes ~0.2 s to draw and compress; off the loop, concurrent requests overlap
    # as they would upstream instead of queueing behind each other.
    return await asyncio.to_thread(make_png, width, height, seed, model)


async def _service_time(request: Request, config: SimConfig) -> None:
    if config.latency_s > 0:
        await pause(request.scope, config.latency_s)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _error_response(error: SimError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "Internal error"
    return _error_response(SimError(status, str(detail)))


async def _validation_error(request: Request, exc: Exception) -> Response:
    # No route declares typed parameters, but never let FastAPI's 422 shape leak out.
    return _error_response(invalid("Invalid request.", None))

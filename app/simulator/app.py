"""A strict stand-in for the reseller upstream, served on loopback so gateway tests run offline.

It answers like the real routes (token group picks the route, each route refuses what the
real one refuses) and records every request, so tests can assert both on what the gateway
returned and on exactly what it sent upstream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.simulator.png import make_png
from app.simulator.rules import (
    ChatJob,
    Endpoint,
    ImageJob,
    Route,
    SimError,
    chat_prompt,
    chat_usage,
    image_usage,
    invalid,
    parse_directives,
    resolve_route,
    validate_chat,
    validate_images,
)

DEFAULT_SIM_KEYS: dict[str, str] = {
    "sk-sim-default": "default",
    "sk-sim-official": "Sora2Official",
    "sk-sim-enterprise": "GPTImage2 Enterprise",
}

REFUSAL_TEXT = "I can't create that image because it may violate our content policy."
_PNG = "image/png"


@dataclass
class SimConfig:
    keys: dict[str, str]  # bearer token -> token group name
    latency_s: float = 0.0  # service time added to every generation


@dataclass
class Call:
    """One request the upstream received, as it arrived (body is the parsed JSON if any)."""

    method: str
    path: str
    group: str | None
    model: str | None
    body: Any
    status: int  # 0 while the request is still being answered


@dataclass
class SimState:
    calls: list[Call] = field(default_factory=list)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def forget_files(self) -> None:
        # Real upstream links expire; tests use this to prove the gateway kept its own copy.
        self.files.clear()

    def reset(self) -> None:
        self.calls.clear()
        self.files.clear()


def create_simulator_app(config: SimConfig, state: SimState | None = None) -> FastAPI:
    sim = state if state is not None else SimState()
    app = FastAPI(
        title="mediagate upstream simulator", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.sim = sim
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.post("/v1/images/generations")
    async def images_generations(request: Request) -> Response:
        return await _serve(request, config, sim, "images")

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
        return Response(content=content, media_type=content_type)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown_v1(request: Request) -> Response:
        # Recorded too, so a gateway calling a path the upstream lacks shows up in tests.
        raw = await request.body()
        group = config.keys.get(_bearer(request) or "")
        call = Call(request.method, request.url.path, group, None, _decode(raw), 0)
        sim.calls.append(call)
        error = SimError(404, f"Invalid URL ({request.method} {request.url.path})")
        response = _error_response(error)
        call.status = response.status_code
        return response

    return app


async def _serve(
    request: Request, config: SimConfig, sim: SimState, endpoint: Endpoint
) -> Response:
    raw = await request.body()
    # Appended on arrival so concurrent requests keep arrival order; filled in as we learn.
    call = Call(request.method, request.url.path, None, None, _decode(raw), 0)
    sim.calls.append(call)
    request_id = secrets.token_hex(12)
    try:
        response = await _dispatch(request, call, config, sim, endpoint, request_id)
    except SimError as error:
        response = _error_response(error)
    response.headers["x-request-id"] = request_id
    call.status = response.status_code
    return response


async def _dispatch(
    request: Request,
    call: Call,
    config: SimConfig,
    sim: SimState,
    endpoint: Endpoint,
    request_id: str,
) -> Response:
    token = _bearer(request)
    group = config.keys.get(token) if token else None
    if group is None:
        raise SimError(401, f"Invalid token (request id {request_id})", code="invalid_api_key")
    call.group = group

    body = call.body
    if not _is_json_content_type(request):
        raise invalid("Content-Type must be application/json.", None, "invalid_content_type")
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    model = body.get("model")
    if "model" not in body:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid("Invalid 'model': expected a non-empty string.", "model", "invalid_type")
    call.model = model
    route = resolve_route(group, model, endpoint)

    # Faults come before validation so a test can trigger them with any otherwise-valid body.
    prompt = chat_prompt(body) if route == "chat" else body.get("prompt")
    directives = parse_directives(prompt if isinstance(prompt, str) else None)
    if directives.sleep_s:
        await asyncio.sleep(directives.sleep_s)
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
    if directives.refuse:
        if route == "chat":
            # The chat route refuses in prose with a 200, which the gateway must detect.
            return _chat_completion(model, _refusal_job(body), REFUSAL_TEXT)
        raise SimError(
            400, "Your request was rejected by the safety system.", code="moderation_blocked"
        )

    if route == "chat":
        chat = validate_chat(body)
        await _service_time(config)
        png = await _render(chat.width, chat.height, chat.prompt)
        url = _store(request, sim, png)
        content = f"> 🎨 Generating...\n\n![image]({url})\n"
        return _chat_completion(model, chat, content)

    job = validate_images(route, body)
    await _service_time(config)
    form = "url" if directives.b64url else "b64_json" if directives.b64only else job.response_format
    return JSONResponse(await _images_body(request, sim, route, job, form))


async def _images_body(
    request: Request, sim: SimState, route: Route, job: ImageJob, response_format: str
) -> dict[str, Any]:
    data: list[dict[str, str]] = []
    for index in range(job.n):
        # The first image uses the bare prompt as seed (so tests can predict it); the rest
        # differ so a gateway that duplicates or drops images is caught.
        seed = job.prompt if index == 0 else f"{job.prompt}\x00{index}"
        png = await _render(job.width, job.height, seed)
        item: dict[str, str]
        if response_format == "url":
            item = {"url": _store(request, sim, png)}
        else:
            item = {"b64_json": _encode_b64(route, png)}
        if route == "web":
            # The ChatGPT web route rewrites prompts and says so.
            item["revised_prompt"] = job.prompt
        data.append(item)
    result: dict[str, Any] = {"created": int(time.time()), "data": data}
    if route in ("gpt-image-1", "official"):
        result["usage"] = image_usage(job)
    if route == "official":
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


def _store(request: Request, sim: SimState, png: bytes) -> str:
    name = f"{secrets.token_hex(16)}.png"
    sim.files[name] = (png, _PNG)
    # Built from the request so links point at whatever host and port the test bound.
    return f"{str(request.base_url).rstrip('/')}/files/{name}"


async def _render(width: int, height: int, seed: str) -> bytes:
    # A 4K image takes tens of milliseconds of zlib; off the loop, concurrent requests overlap
    # as they would upstream instead of queueing behind each other.
    return await asyncio.to_thread(make_png, width, height, seed)


async def _service_time(config: SimConfig) -> None:
    if config.latency_s > 0:
        await asyncio.sleep(config.latency_s)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _is_json_content_type(request: Request) -> bool:
    # Real upstreams parse by content type; a JSON body labelled as something else would work
    # here by luck and fail there, so it is refused.
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "application/json"


def _decode(raw: bytes) -> Any:
    """The body as recorded: parsed JSON when it parses, else the text as received."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _error_response(error: SimError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "Internal error"
    return _error_response(SimError(status, str(detail)))


async def _validation_error(request: Request, exc: Exception) -> Response:
    # No route declares typed parameters, but never let FastAPI's 422 shape leak out.
    return _error_response(invalid("Invalid request.", None))

"""What the video families (Muse, Seedance, Wan) share: the clock a task moves on, the prompt
markers that plant faults in it, signed result links, and how their requests are recorded.

Each family keeps its own contract in its own module (muse.py, ark.py, dashscope.py); this one
holds no contract of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from mediagate.simulator.rules import LEAKY_ERROR, SimError
from mediagate.simulator.state import Call, SimConfig, SimState
from mediagate.simulator.videofiles import Clip, file_response

Phase = Literal["queued", "running", "succeeded", "failed", "expired"]

_FAIL_RE = re.compile(r"\[sim:fail(?:=([A-Za-z_.]+))?\]")
_BYTES_RE = re.compile(r"\[sim:bytes=(\d+)\]")
_RENDER_RE = re.compile(r"\[sim:render=(\d+(?:\.\d+)?)\]")
_STATUS_RE = re.compile(r"\[sim:status=(\d{3})\]")
_MADE_RE = re.compile(r"\[sim:made=(\d+)\]")
_EXPIRE = "[sim:expire]"


@dataclass(frozen=True)
class Markers:
    """Faults a test plants in a prompt: `[sim:fail]` / `[sim:fail=CODE]` (the task fails),
    `[sim:render=S]` (seconds running), `[sim:bytes=N]` (content size), `[sim:status=NNN]` (the
    create itself fails), `[sim:expire]` (Seedance: the task expires in the queue),
    `[sim:made=S]` (Wan: the seconds actually made differ from those asked), `[sim:leakyerror]`
    (a failure reason holding the key and internal addresses), `[sim:usage=huge|negative|zero]`
    (Seedance's `completion_tokens`, Wan's `usage.duration`: a claim not to believe)."""

    fail_code: str | None = None
    render_s: float | None = None
    content_bytes: int | None = None
    create_status: int | None = None
    expire: bool = False
    made_s: int | None = None
    leaky: bool = False  # `[sim:leakyerror]`: a failure reason holding the key and addresses


def bearer_of(request: Request) -> str:
    """The key a request was made with (what a leaky upstream echoes)."""
    return request.headers.get("authorization", "").removeprefix("Bearer ").strip()


def markers(prompt: str | None, default_fail: str) -> Markers:
    if not prompt or "[sim:" not in prompt:
        return Markers()
    fail, render = _FAIL_RE.search(prompt), _RENDER_RE.search(prompt)
    leaky = LEAKY_ERROR in prompt
    size, status, made = (
        _BYTES_RE.search(prompt),
        _STATUS_RE.search(prompt),
        _MADE_RE.search(prompt),
    )
    return Markers(
        # A leaky error is a failure's reason: the task fails.
        fail_code=(fail.group(1) if fail else None) or (default_fail if fail or leaky else None),
        render_s=float(render.group(1)) if render else None,
        content_bytes=int(size.group(1)) if size else None,
        create_status=int(status.group(1)) if status else None,
        expire=_EXPIRE in prompt,
        made_s=int(made.group(1)) if made else None,
        leaky=leaky,
    )


@dataclass
class Clock:
    """A task's life on the simulator's clock: queued, then running, then terminal. Nothing
    runs in the background; the phase is computed whenever it is asked for."""

    created_at: int
    started: float  # monotonic
    queued_s: float
    render_s: float
    fail_code: str | None
    expire: bool

    @classmethod
    def start(cls, config: SimConfig, found: Markers) -> Clock:
        return cls(
            created_at=int(time.time()),
            started=time.monotonic(),
            queued_s=config.video_queued_s,
            render_s=found.render_s if found.render_s is not None else config.video_render_s,
            fail_code=found.fail_code,
            expire=found.expire,
        )

    def phase(self) -> tuple[Phase, int]:
        """The phase and its progress (0-100)."""
        elapsed = time.monotonic() - self.started
        if elapsed < self.queued_s:
            return "queued", 0
        if self.expire:
            return "expired", 0  # never left the queue
        if elapsed < self.queued_s + self.render_s:
            return "running", min(99, int(100 * (elapsed - self.queued_s) / self.render_s))
        return ("failed", 0) if self.fail_code else ("succeeded", 100)

    def finished_at(self) -> int:
        if self.expire:
            return self.created_at + round(self.queued_s)
        return self.created_at + round(self.queued_s + self.render_s)

    def updated_at(self) -> int:
        phase, _ = self.phase()
        if phase in ("queued",):
            return self.created_at
        if phase == "running":
            return self.created_at + round(self.queued_s)
        return self.finished_at()


def is_json_content_type(request: Request) -> bool:
    # Real upstreams parse by content type; a JSON body labelled as something else would work
    # here by luck and fail there, so it is refused.
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "application/json"


def decode_body(raw: bytes) -> Any:
    """The body as recorded: parsed JSON when it parses, else the text as received."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def masked_headers(request: Request, config: SimConfig) -> dict[str, str]:
    """The request's headers as recorded: the key replaced by the group it belongs to."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    if "authorization" in headers:
        scheme, _, token = headers["authorization"].partition(" ")
        group = config.keys.get(token.strip()) if scheme.lower() == "bearer" else None
        headers["authorization"] = f"Bearer <{group}>" if group else "<invalid>"
    return headers


def bearer_group(request: Request, config: SimConfig) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return config.keys.get(token.strip())


def no_channel(model: Any, group: str) -> SimError:
    """What a key of the wrong token group gets: a 503 naming the model and group, unbilled."""
    return SimError(
        503,
        f"No available channel for model {model} under group {group}",
        type_="upstream_error",
        code="model_not_found",
    )


def authorize(call: Call, group: str | Collection[str], model: Any = None) -> str:
    """The caller's group when it is `group` (or one of them): else 401 for an unknown key,
    `no_channel` for a key of another group."""
    if call.group is None:
        raise SimError(401, "Invalid token.", code="invalid_api_key")
    if call.group not in ((group,) if isinstance(group, str) else group):
        raise no_channel(model, call.group)
    return call.group


def authorize_create(call: Call, group: str | Collection[str], body: Any) -> str:
    """`authorize` for a create whose JSON body names the model, which the call records."""
    model = body.get("model") if isinstance(body, dict) else None
    call.model = model if isinstance(model, str) else None
    return authorize(call, group, model)


def sim_error_response(error: Exception) -> Response | None:
    """A `recorded` on_error for families whose own errors are SimErrors."""
    if isinstance(error, SimError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    return None


async def recorded(
    request: Request,
    config: SimConfig,
    sim: SimState,
    body: Any,
    handler: Callable[[Call], Awaitable[Response]],
    on_error: Callable[[Exception], Response | None],
) -> Response:
    """Records the request (appended on arrival), runs the handler, records its status.
    `on_error` turns a family's own error into its answer (None: not one of its errors)."""
    call = Call(request.method, request.url.path, None, None, body, 0)
    call.headers = masked_headers(request, config)
    call.group = bearer_group(request, config)
    sim.calls.append(call)
    try:
        response = await handler(call)
    except Exception as error:
        answer = on_error(error)
        if answer is None:
            raise
        response = answer
    call.status = response.status_code
    return response


# Sora-shaped video jobs (videos.py, and Muse in muse.py) expire an hour after completion.
_EXPIRES_S = 3600


@dataclass
class SimVideo:
    id: str
    group: str
    model: str
    prompt: str
    size: str
    seconds: str
    created_at: int
    started: float  # monotonic clock at creation
    queued_s: float
    render_s: float
    content_bytes: int | None  # None: a real clip; else that many generated bytes
    fail_code: str | None = None
    remixed_from: str | None = None
    # How long a completed job's content stays (its `expires_at`).
    lifetime_s: ClassVar[int] = _EXPIRES_S

    @property
    def clip(self) -> Clip:
        return Clip.of(self.id, self.size, self.seconds, self.model)

    def stamp(self) -> None:
        """Starts the job's clock now."""
        self.created_at, self.started = int(time.time()), time.monotonic()

    def status(self) -> tuple[str, int]:
        elapsed = time.monotonic() - self.started
        if elapsed < self.queued_s:
            return "queued", 0
        if elapsed < self.queued_s + self.render_s:
            return "in_progress", min(99, int(100 * (elapsed - self.queued_s) / self.render_s))
        return ("failed", 0) if self.fail_code else ("completed", 100)

    def body(self) -> dict[str, Any]:
        status, progress = self.status()
        done = self.created_at + round(self.queued_s + self.render_s)
        final = status in ("completed", "failed")
        error = None
        if status == "failed":
            error = {"code": self.fail_code, "message": "Video generation failed (simulated)."}
        return {
            "id": self.id,
            "object": "video",
            "model": self.model,
            "status": status,
            "progress": progress,
            "created_at": self.created_at,
            "completed_at": done if final else None,
            "expires_at": done + self.lifetime_s if status == "completed" else None,
            "prompt": self.prompt,
            "size": self.size,
            "seconds": self.seconds,
            "remixed_from_video_id": self.remixed_from,
            "error": error,
        }


def new_video_id() -> str:
    return f"video_{secrets.token_hex(16)}"


# --- signed links ------------------------------------------------------------------------------


def sign(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()[:40]


def signed_query(secret: bytes, path: str, ttl_s: float) -> str:
    expires = int(time.time() + ttl_s)
    return f"Expires={expires}&OSSAccessKeyId=SIMACCESSKEY&Signature={sign(secret, path, expires)}"


def check_signature(secret: bytes, path: str, query: dict[str, str]) -> str | None:
    """None when the link is good; else what is wrong: "bad" or "expired"."""
    expires, signature = query.get("Expires", ""), query.get("Signature", "")
    if not expires.isdigit() or not signature:
        return "bad"
    if not hmac.compare_digest(sign(secret, path, int(expires)), signature):
        return "bad"
    if int(expires) < time.time():
        return "expired"
    return None


def _oss_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(12).upper()}</RequestId>"
        "<HostId>sim-bucket.oss.simulated</HostId></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


async def serve_signed(
    request: Request,
    config: SimConfig,
    sim: SimState,
    find: Callable[[], tuple[str, Any] | None],
) -> Response:
    """A signed object-store link, answered like one: an Authorization header next to the
    query signature is a 400, a wrong signature a 403, an expired link a 403, an unknown key a
    404, each an XML error; else the file, with Range. `find` gives ("video", task with id,
    clip and content_bytes) or (media type, bytes), or None."""
    call = Call(request.method, request.url.path, None, None, None, 0)
    call.headers = masked_headers(request, config)
    call.group = bearer_group(request, config)  # who sent a key where none belongs
    sim.calls.append(call)
    problem = check_signature(sim.link_secret, request.url.path, dict(request.query_params))
    found = find()
    if "authorization" in request.headers:
        response = _oss_error(
            400,
            "InvalidArgument",
            "Authorization header and query string signature cannot both be present.",
        )
    elif problem == "bad":
        response = _oss_error(
            403, "SignatureDoesNotMatch", "The request signature we calculated does not match."
        )
    elif problem == "expired":
        response = _oss_error(403, "AccessDenied", "Request has expired.")
    elif found is None:
        response = _oss_error(404, "NoSuchKey", "The specified key does not exist.")
    elif found[0] == "video":
        task = found[1]
        response = await file_response(request, task.id, task.clip, task.content_bytes, "video")
    else:
        response = Response(found[1], media_type=found[0])
    call.status = response.status_code
    return response

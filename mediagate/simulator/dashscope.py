"""Wan 2.7 / 3.0 on the DashScope task contract, as upstream-2026/wan-2-7.md describes it.

- `POST /wan/api/v1/services/aigc/video-generation/video-synthesis`, JSON, token group `Wan`
  only (else "no available channel"), and the header `X-DashScope-Async: enable` (without it
  DashScope refuses: "current user api does not support synchronous calls").
- The body: `model`, `input` {`prompt`, `negative_prompt`, `media[]` of {type, url} with the
  types each model takes}, `parameters` {`resolution` `720P`/`1080P` (3.0 adds `480P`;
  omitted = 1080P), `duration` an integer (2.7: 2-15 s, 10 with a reference video; 3.0: 2-30),
  `prompt_extend`, `watermark`, `seed`}; anything else is refused. Field details are the
  doc's [secondary] ones; DashScope errors are {request_id, code, message}.
- The create answers DashScope's `{request_id, output: {task_id, task_status}}`, plus the
  top-level `task_id` LaoZhang says to keep (its exact shape is NOT FOUND upstream).
- Poll `GET /v1/tasks/{task_id}` on the main host: top-level `status` submitted /
  in_progress / completed / failed (the words of LaoZhang's table), `result_url` when
  completed, `error` when failed, `usage` with the seconds actually made
  (`output_video_duration`, alias `video_duration`) and billed (`duration`: input video +
  output), and the upstream's own object under `data` (which a client must not branch on).
  `[sim:made=S]` makes S seconds instead of those asked.
- `result_url` is a signed object-store link (about 24 h): it refuses a request carrying an
  Authorization header (400), a bad signature and an expired link (403), in XML.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mediagate.simulator.jobs import (
    Clock,
    authorize,
    authorize_create,
    bearer_of,
    decode_body,
    is_json_content_type,
    markers,
    recorded,
    serve_signed,
    signed_query,
    sim_error_response,
)
from mediagate.simulator.rules import SimError, claimed_usage, leaky_error
from mediagate.simulator.state import Call, SimConfig, SimState
from mediagate.simulator.videofiles import Clip

WAN_PATH = "/wan/api/v1/services/aigc/video-generation/video-synthesis"
WAN_GROUP = "Wan"
ASSUMED_INPUT_VIDEO_S = 5  # a reference/source video's length is unknown to the simulator


@dataclass(frozen=True)
class WanModel:
    media: dict[str, int]  # media type -> how many of it a task may carry
    needs: tuple[str, ...]  # one of these media types is required (empty: none)
    resolutions: tuple[str, ...]
    max_duration: int
    max_duration_with_video: int


_V27 = ("720P", "1080P")
_V30_MEDIA = {
    "first_frame": 1,
    "last_frame": 1,
    "reference_image": 10,
    "reference_video": 5,
    "reference_audio": 5,
    "file": 10,
    "link": 10,
}
MODELS: dict[str, WanModel] = {
    "wan2.7-t2v": WanModel({}, (), _V27, 15, 10),
    "wan2.7-i2v": WanModel(
        {"first_frame": 1, "last_frame": 1, "driving_audio": 1, "first_clip": 1},
        ("first_frame", "first_clip"),
        _V27,
        15,
        10,
    ),
    "wan2.7-r2v": WanModel(
        {"reference_image": 10, "reference_video": 5},
        ("reference_image", "reference_video"),
        _V27,
        15,
        10,
    ),
    "wan2.7-videoedit": WanModel({"video": 1, "reference_image": 10}, ("video",), _V27, 15, 10),
    "wan3.0-video": WanModel(_V30_MEDIA, (), ("480P", *_V27), 30, 30),
    "wan3.0-video-prime": WanModel(_V30_MEDIA, (), ("480P", *_V27), 30, 30),
}
_VIDEO_MEDIA = frozenset({"reference_video", "video", "first_clip"})
_PARAMETERS = frozenset({"resolution", "duration", "prompt_extend", "watermark", "seed"})
_STATUS = {
    "queued": ("submitted", "PENDING"),
    "running": ("in_progress", "RUNNING"),
    "succeeded": ("completed", "SUCCEEDED"),
    "failed": ("failed", "FAILED"),
}
_SR = {"480P": 480, "720P": 720, "1080P": 1080}
# USD per second billed, from 2026-10-14 (wan-2-7.md): what the doc states. Wan 2.7 1080P,
# Wan 3.0 480P and wan3.0-video-prime are NOT FOUND upstream, so they have no price here.
PRICE_PER_S: dict[tuple[str, str], float] = {
    **{(model, "720P"): 0.1028 for model in MODELS if model.startswith("wan2.7")},
    ("wan3.0-video", "720P"): 0.1028,
    ("wan3.0-video", "1080P"): 0.2057,
}
_PIXELS = {"480P": "832x480", "720P": "1280x720", "1080P": "1920x1080"}


class WanError(Exception):
    """A DashScope error answer: {request_id, code, message}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        body = {"request_id": secrets.token_hex(16), "code": self.code, "message": self.message}
        return JSONResponse(body, status_code=self.status)


def _bad(message: str) -> WanError:
    return WanError(400, "InvalidParameter", message)


@dataclass
class WanTask:
    id: str
    group: str
    model: str
    prompt: str
    resolution: str
    duration: int  # asked
    made_s: int  # actually made
    input_video_s: int
    clock: Clock
    content_bytes: int | None  # None: a real clip; else that many generated bytes
    base_url: str
    secret: bytes = field(repr=False)
    link: str | None = None
    leak: str | None = field(default=None, repr=False)  # `[sim:leakyerror]`: the key to echo

    @property
    def size(self) -> str:
        return _PIXELS[self.resolution]

    @property
    def clip(self) -> Clip:
        return Clip.of(self.id, self.size, self.made_s, self.model)

    def billed_seconds(self) -> int:
        return self.input_video_s + self.made_s

    def cost_usd(self) -> float | None:
        """Settled on the seconds billed once the task completed (0 unless it did); None
        where the doc gives no price for the model and resolution."""
        price = PRICE_PER_S.get((self.model, self.resolution))
        if price is None:
            return None
        return self.billed_seconds() * price if self.clock.phase()[0] == "succeeded" else 0.0

    def body(self, ttl_s: float) -> dict[str, Any]:
        phase, progress = self.clock.phase()
        status, inner = _STATUS[phase]
        usage = None
        output: dict[str, Any] = {"task_id": self.id, "task_status": inner}
        error = None
        if phase == "succeeded":
            if self.link is None:
                path = f"/oss/wan-results/{self.id}.mp4"
                query = signed_query(self.secret, path, ttl_s)
                self.link = f"{self.base_url}{path}?{query}"
            output["video_url"] = self.link
            usage = {
                "duration": claimed_usage(self.prompt, self.billed_seconds()),
                "input_video_duration": self.input_video_s,
                "output_video_duration": self.made_s,
                "video_duration": self.made_s,
                "video_count": 1,
                "SR": _SR[self.resolution],
            }
        elif phase == "failed":
            error = {
                "code": self.clock.fail_code or "InternalError",
                "message": "Video generation failed (simulated).",
            }
            if self.leak is not None:
                error = leaky_error(self.leak)
            output.update(code=error["code"], message=error["message"])
        return {
            "task_id": self.id,
            "model": self.model,
            "status": status,
            "progress": progress,
            "created_at": self.clock.created_at,
            "updated_at": self.clock.updated_at(),
            "resolution": self.resolution,
            "duration": self.duration,
            "result_url": self.link if phase == "succeeded" else None,
            "error": error,
            "usage": usage,
            "data": {"output": output, "usage": usage},
        }


def register_dashscope_routes(app: FastAPI, config: SimConfig, sim: SimState) -> None:
    def on_error(error: Exception) -> Response | None:
        if isinstance(error, WanError):
            return error.response()
        return sim_error_response(error)

    @app.post(WAN_PATH)
    async def create(request: Request) -> Response:
        body = decode_body(await request.body())

        async def handle(call: Call) -> Response:
            group = authorize_create(call, WAN_GROUP, body)
            if request.headers.get("x-dashscope-async", "").strip().lower() != "enable":
                raise WanError(
                    403, "AccessDenied", "current user api does not support synchronous calls"
                )
            if not is_json_content_type(request) or not isinstance(body, dict):
                raise _bad("The request body must be a JSON object (application/json).")
            task = _validate(body, group, config, sim, request)
            sim.videos[task.id] = task
            return JSONResponse(
                {
                    "request_id": secrets.token_hex(16),
                    "output": {"task_id": task.id, "task_status": "PENDING"},
                    "task_id": task.id,
                }
            )

        return await recorded(request, config, sim, body, handle, on_error)

    @app.get("/v1/tasks/{task_id}")
    async def get_task(task_id: str, request: Request) -> Response:
        async def handle(call: Call) -> Response:
            group = authorize(call, WAN_GROUP)
            task = sim.videos.get(task_id)
            if not isinstance(task, WanTask) or task.group != group:
                raise SimError(404, f"Task {task_id} not found.", code="task_not_exist")
            call.model = task.model
            return JSONResponse(task.body(config.signed_link_ttl_s))

        return await recorded(request, config, sim, None, handle, on_error)

    @app.get("/oss/wan-results/{name}")
    async def result_link(name: str, request: Request) -> Response:
        def find() -> tuple[str, Any] | None:
            task = sim.videos.get(name.removesuffix(".mp4"))
            if not isinstance(task, WanTask) or task.clock.phase()[0] != "succeeded":
                return None
            return ("video", task) if name.endswith(".mp4") else None

        return await serve_signed(request, config, sim, find)


def _validate(
    body: dict[str, Any], group: str, config: SimConfig, sim: SimState, request: Request
) -> WanTask:
    for name in body:
        if name not in ("model", "input", "parameters"):
            raise _bad(f"Unknown parameter: {name}.")
    model_id = body.get("model")
    if not isinstance(model_id, str) or model_id not in MODELS:
        raise WanError(400, "InvalidParameter", f"Model not exist: {model_id!r}.")
    spec = MODELS[model_id]
    given = body.get("input")
    if not isinstance(given, dict):
        raise _bad("input must be an object.")
    for name in given:
        if name not in ("prompt", "negative_prompt", "media"):
            raise _bad(f"Unknown parameter: input.{name}.")
    prompt = given.get("prompt", "")
    if not isinstance(prompt, str):
        raise _bad("input.prompt must be a string.")
    if "negative_prompt" in given and not isinstance(given["negative_prompt"], str):
        raise _bad("input.negative_prompt must be a string.")
    kinds = _check_media(given.get("media"), spec, model_id)
    if not prompt.strip() and not kinds:
        raise _bad("input.prompt is required.")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad("parameters must be an object.")
    for name in parameters:
        if name not in _PARAMETERS:
            raise _bad(f"Unknown parameter: parameters.{name}.")
    resolution = parameters.get("resolution", "1080P")  # omitted: 1080P, and billed so
    if resolution not in spec.resolutions:
        raise _bad(
            f"parameters.resolution {resolution!r} is not one of {', '.join(spec.resolutions)}."
        )
    with_video = bool(_VIDEO_MEDIA & set(kinds))
    top = spec.max_duration_with_video if with_video else spec.max_duration
    duration = parameters.get("duration", 5)
    if not isinstance(duration, int) or isinstance(duration, bool) or not 2 <= duration <= top:
        raise _bad(f"parameters.duration must be an integer from 2 to {top}, got {duration!r}.")
    for name in ("prompt_extend", "watermark"):
        if name in parameters and not isinstance(parameters[name], bool):
            raise _bad(f"parameters.{name} must be a boolean.")
    seed = parameters.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**31 - 1:
        raise _bad("parameters.seed must be an integer from 0 to 2147483647.")
    found = markers(prompt, "InternalError")
    if found.create_status is not None:
        raise SimError(found.create_status, "simulated upstream error", type_="upstream_error")
    input_video_s = sum(ASSUMED_INPUT_VIDEO_S for kind in kinds if kind in _VIDEO_MEDIA)
    return WanTask(
        id=secrets.token_hex(16),
        group=group,
        model=model_id,
        prompt=prompt,
        resolution=resolution,
        duration=duration,
        made_s=found.made_s if found.made_s is not None else duration,
        input_video_s=input_video_s,
        clock=Clock.start(config, found),
        content_bytes=found.content_bytes or config.video_bytes,
        base_url=str(request.base_url).rstrip("/"),
        secret=sim.link_secret,
        leak=bearer_of(request) if found.leaky else None,
    )


def _check_media(media: Any, spec: WanModel, model_id: str) -> list[str]:
    if media is None:
        media = []
    if not isinstance(media, list):
        raise _bad("input.media must be an array.")
    kinds: list[str] = []
    for index, item in enumerate(media):
        where = f"input.media[{index}]"
        if not isinstance(item, dict) or set(item) != {"type", "url"}:
            raise _bad(f"{where} must be {{type, url}}.")
        kind, url = item["type"], item["url"]
        if kind not in spec.media:
            allowed = ", ".join(spec.media) or "none"
            raise _bad(f"{where}.type {kind!r} is not accepted by {model_id} (takes: {allowed}).")
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
            raise _bad(f"{where}.url must be an http(s) or data URL.")
        kinds.append(kind)
    for kind, limit in spec.media.items():
        if kinds.count(kind) > limit:
            raise _bad(f"At most {limit} input.media of type {kind}.")
    if spec.needs and not set(spec.needs) & set(kinds):
        raise _bad(f"{model_id} needs input.media of type {' or '.join(spec.needs)}.")
    if "last_frame" in kinds and "first_frame" not in kinds:
        raise _bad("A last_frame needs a first_frame.")
    return kinds

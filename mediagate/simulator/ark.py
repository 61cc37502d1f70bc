"""Seedance 2.x on the Volcengine Ark task contract, as upstream-2026/seedance-2.md describes it.

- Under the `/seedance/api/v3` prefix: `POST /contents/generations/tasks` (answers `{"id"}`),
  `GET /contents/generations/tasks/{id}`. Any other path under `/seedance/` (the list call,
  `/seedance/v3/...` without `/api`) or a bare `/api/v3/...` answers the website's HTML with a
  200, as the relay does. Two routes of the same contract, told apart by the model id: the
  `doubao-*` ids in token group `SeeDance2` only, the `dreamina-*` ids (Dreamina Seedance,
  changes-2026-12.md section 1) in `Dreamina` and `default` only; a key of any other group gets
  "no available channel" (503), and a task is seen only by its own group.
- The body: `model` (the dated upstream ids below), `content[]` (text, image/video/audio
  references with roles, `draft_task` on 2.5), `ratio`, `resolution`, `duration`,
  `generate_audio`, `seed`, `watermark`, `return_last_frame`, `callback_url` (accepted,
  ignored: NOT FOUND whether the relay honours it), `draft` (2.5); anything else is refused.
  Per-model limits as the doc gives them ([secondary] for the exact numbers): 1080p only on
  2.0 and 2.5, `4k` only on Dreamina's 2.0 and 2.5 (its value and pixels NOT FOUND: twice the
  1080p sides), 720p at most elsewhere (a 400).
- Statuses queued / running / succeeded / failed / expired (`[sim:expire]`: never leaves
  the queue). `usage.completion_tokens` = frames x width x height / 1024, frames =
  24 x (output seconds + input video seconds) + 1: this reproduces the doc's own figures
  (5 s 720p 16:9 = 121 frames = 108,900 tokens; 1080p = 245,025) and its [secondary]
  formula. A reference video whose length the simulator cannot know counts 5 s (assumed).
- Result `content.video_url`: a signed object-store link (about 24 h, `SimConfig.
  signed_link_ttl_s`), refused with an Authorization header, a bad or expired signature; also
  `GET /v1/videos/{id}/content` on the main host with the same key. No thumbnail/spritesheet.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image

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
from mediagate.simulator.videofiles import Clip, file_response, png_frame

ARK_PREFIX = "/seedance/api/v3"
SEEDANCE_GROUPS = ("SeeDance2",)
DREAMINA_GROUPS = ("Dreamina", "default")
FPS = 24
ASSUMED_REFERENCE_VIDEO_S = 5
RATIOS = ("16:9", "9:16", "4:3", "3:4", "1:1", "21:9", "adaptive")
RESOLUTIONS = ("480p", "720p", "1080p", "4k")
# resolution -> ratio -> (width, height). 720p/1080p 16:9 are LaoZhang's (its token figures
# give 1280x720 and 1920x1080); the other cells follow the Ark docs of the same contract
# [secondary].
PIXELS: dict[str, dict[str, tuple[int, int]]] = {
    "480p": {
        "16:9": (864, 496),
        "4:3": (752, 560),
        "1:1": (640, 640),
        "3:4": (560, 752),
        "9:16": (496, 864),
        "21:9": (992, 432),
    },
    "720p": {
        "16:9": (1280, 720),
        "4:3": (1112, 834),
        "1:1": (960, 960),
        "3:4": (834, 1112),
        "9:16": (720, 1280),
        "21:9": (1470, 630),
    },
    "1080p": {
        "16:9": (1920, 1080),
        "4:3": (1664, 1248),
        "1:1": (1440, 1440),
        "3:4": (1248, 1664),
        "9:16": (1080, 1920),
        "21:9": (2206, 946),
    },
    "4k": {
        "16:9": (3840, 2160),
        "4:3": (3328, 2496),
        "1:1": (2880, 2880),
        "3:4": (2496, 3328),
        "9:16": (2160, 3840),
        "21:9": (4412, 1892),
    },
}


@dataclass(frozen=True)
class ArkModel:
    max_resolution: str
    max_duration: int
    default_duration: int  # -1: the model chooses
    images: int
    videos: int
    audios: int
    audio_only: bool  # may audio be the only reference
    # USD per 1M output tokens: resolution tier -> (no input video, with one); a tier without
    # a published price is absent
    prices: dict[str, tuple[float, float]]
    v25: bool = False
    groups: tuple[str, ...] = SEEDANCE_GROUPS  # the token groups that may call it


_LOW = ("480p", "720p")
MODELS: dict[str, ArkModel] = {
    "doubao-seedance-2-5-260628": ArkModel(
        "1080p", 30, -1, 30, 10, 10, True,
        {**dict.fromkeys(_LOW, (12.00, 7.20)), "1080p": (13.20, 7.88)}, v25=True,
    ),
    "doubao-seedance-2-0-260128": ArkModel(
        "1080p", 15, 5, 9, 3, 3, False,
        {**dict.fromkeys(_LOW, (7.88, 4.80)), "1080p": (8.74, 5.31)},
    ),
    "doubao-seedance-2-0-fast-260128": ArkModel(
        "720p", 15, 5, 9, 3, 3, False, dict.fromkeys(_LOW, (6.34, 3.77))
    ),
    "doubao-seedance-2-0-mini-260615": ArkModel(
        "720p", 15, 5, 9, 3, 3, False, dict.fromkeys(_LOW, (3.94, 2.40))
    ),
    # Dreamina Seedance: BytePlus's list price; the page's own figures where it gives them
    # (2.5 ~10.8, 2.5 Flash ~7.0, 2.0 Mini 3.50 per 1M at 480p), else about 11% below the
    # doubao-* twin. Limits as the twin's; 2.5 Flash as 2.5's, at most 720p.
    "dreamina-seedance-2-5-260628": ArkModel(
        "4k", 30, -1, 30, 10, 10, True,
        {**dict.fromkeys(_LOW, (10.80, 6.41)), "1080p": (11.75, 7.01)}, v25=True,
        groups=DREAMINA_GROUPS,
    ),
    "dreamina-seedance-2-5-flash-261115": ArkModel(
        "720p", 30, -1, 30, 10, 10, True, dict.fromkeys(_LOW, (7.00, 7.00)), v25=True,
        groups=DREAMINA_GROUPS,
    ),
    "dreamina-seedance-2-0-260128": ArkModel(
        "4k", 15, 5, 9, 3, 3, False,
        {**dict.fromkeys(_LOW, (7.01, 4.27)), "1080p": (7.78, 4.73)}, groups=DREAMINA_GROUPS,
    ),
    "dreamina-seedance-2-0-fast-260128": ArkModel(
        "720p", 15, 5, 9, 3, 3, False, dict.fromkeys(_LOW, (5.64, 3.36)),
        groups=DREAMINA_GROUPS,
    ),
    "dreamina-seedance-2-0-mini-260615": ArkModel(
        "720p", 15, 5, 9, 3, 3, False, dict.fromkeys(_LOW, (3.50, 2.14)),
        groups=DREAMINA_GROUPS,
    ),
}  # fmt: skip
ARK_GROUPS = frozenset(group for model in MODELS.values() for group in model.groups)
_TOP_FIELDS = frozenset(
    {"model", "content", "ratio", "resolution", "duration", "generate_audio", "seed"}
    | {"watermark", "return_last_frame", "callback_url", "draft"}
)
_MEDIA_ROLES = {
    "image_url": ("first_frame", "last_frame", "reference_image"),
    "video_url": ("reference_video",),
    "audio_url": ("reference_audio",),
}
_SITE_HTML = (
    "<!DOCTYPE html><html><head><title>LaoZhang API</title></head>"
    "<body><div id='root'></div></body></html>"
)


def bad(message: str, param: str | None = None) -> SimError:
    # Ark's error object: {"error": {"code", "message", "param", "type"}}.
    return SimError(400, message, type_="BadRequest", param=param, code="InvalidParameter")


@dataclass
class ArkTask:
    id: str
    group: str
    model: str
    prompt: str
    ratio: str
    resolution: str
    duration: int
    seed: int
    generate_audio: bool
    watermark: bool
    return_last_frame: bool
    input_video_s: int
    clock: Clock
    content_bytes: int | None  # None: a real clip; else that many generated bytes
    base_url: str
    secret: bytes = field(repr=False)
    links: dict[str, str] = field(default_factory=dict)  # made once, on first success
    leak: str | None = field(default=None, repr=False)  # `[sim:leakyerror]`: the key to echo

    @property
    def pixels(self) -> tuple[int, int]:
        return PIXELS[self.resolution][self.ratio]

    @property
    def size(self) -> str:
        return "{}x{}".format(*self.pixels)

    @property
    def clip(self) -> Clip:
        return Clip.of(self.id, self.size, self.duration, self.model)

    def completion_tokens(self) -> int:
        width, height = self.pixels
        frames = FPS * (self.duration + self.input_video_s) + 1
        return frames * width * height // 1024

    def cost_usd(self) -> float | None:
        """What the task costs once settled: tokens at the model's price (None where no price
        is published: Dreamina's 4K); nothing unless it succeeded (the refund of a failed
        task's pre-charge is implied, NOT CONFIRMED)."""
        if self.clock.phase()[0] != "succeeded":
            return 0.0
        prices = MODELS[self.model].prices.get(self.resolution)
        if prices is None:
            return None
        return self.completion_tokens() * prices[1 if self.input_video_s else 0] / 1_000_000

    def body(self, ttl_s: float) -> dict[str, Any]:
        phase, _ = self.clock.phase()
        result: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": phase,
            "error": None,
            "created_at": self.clock.created_at,
            "updated_at": self.clock.updated_at(),
            "seed": self.seed,
            "resolution": self.resolution,
            "ratio": self.ratio,
            "duration": self.duration,
            "framespersecond": FPS,
            "generate_audio": self.generate_audio,
        }
        if phase == "succeeded":
            if not self.links:
                self.links["video_url"] = self._signed(f"/tos/seedance/{self.id}.mp4", ttl_s)
                if self.return_last_frame:
                    path = f"/tos/seedance/{self.id}-last.png"
                    self.links["last_frame_url"] = self._signed(path, ttl_s)
            result["content"] = dict(self.links)
            tokens = claimed_usage(self.prompt, self.completion_tokens())
            result["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        elif phase == "failed":
            code = self.clock.fail_code or "InternalServiceError"
            result["error"] = {"code": code, "message": "Video generation failed (simulated)."}
            if self.leak is not None:
                result["error"] = leaky_error(self.leak)
        elif phase == "expired":
            result["error"] = {"code": "TaskExpired", "message": "The task expired in the queue."}
        return result

    def _signed(self, path: str, ttl_s: float) -> str:
        return f"{self.base_url}{path}?{signed_query(self.secret, path, ttl_s)}"

    async def content(self, request: Request, group: str) -> Response:
        """`GET /v1/videos/{id}/content` on the main host."""
        if group != self.group:
            raise SimError(404, "Video not found.", code="not_found")
        variant = request.query_params.get("variant", "video")
        if variant != "video":
            raise SimError(404, f"Seedance has no {variant}.", code="not_found")
        if self.clock.phase()[0] != "succeeded":
            raise SimError(400, "The video is not ready yet.", code="video_not_ready")
        return await file_response(request, self.id, self.clip, self.content_bytes, "video")

    def last_frame_png(self) -> bytes:
        """The clip's last frame, at the task's size."""
        return png_frame(self.clip, -1)


def register_ark_routes(app: FastAPI, config: SimConfig, sim: SimState) -> None:

    @app.post(f"{ARK_PREFIX}/contents/generations/tasks")
    async def create(request: Request) -> Response:
        body = decode_body(await request.body())

        async def handle(call: Call) -> Response:
            group = _authorize_create(call, body)
            if not is_json_content_type(request) or not isinstance(body, dict):
                raise bad("The request body must be a JSON object (application/json).")
            task = _validate(body, group, config, sim, request)
            sim.videos[task.id] = task
            return JSONResponse({"id": task.id})

        return await recorded(request, config, sim, body, handle, sim_error_response)

    @app.get(f"{ARK_PREFIX}/contents/generations/tasks/{{task_id}}")
    async def get_task(task_id: str, request: Request) -> Response:
        async def handle(call: Call) -> Response:
            group = authorize(call, ARK_GROUPS)
            task = sim.videos.get(task_id)
            if not isinstance(task, ArkTask) or task.group != group:
                raise SimError(
                    404,
                    f"The specified task {task_id} is not found.",
                    type_="NotFound",
                    code="ResourceNotFound",
                )
            call.model = task.model
            return JSONResponse(task.body(config.signed_link_ttl_s))

        return await recorded(request, config, sim, None, handle, sim_error_response)

    @app.get("/tos/seedance/{name}")
    async def signed_link(name: str, request: Request) -> Response:
        def find() -> tuple[str, Any] | None:
            task = sim.videos.get(name.removesuffix(".mp4").removesuffix("-last.png"))
            if not isinstance(task, ArkTask) or task.clock.phase()[0] != "succeeded":
                return None
            if name.endswith("-last.png") and task.return_last_frame:
                return "image/png", task.last_frame_png()
            if name == f"{task.id}.mp4":
                return "video", task
            return None

        return await serve_signed(request, config, sim, find)

    async def website(request: Request) -> Response:
        # The relay's website answers paths it does not route: a 200 in HTML, not JSON.
        body = await request.body()
        call = Call(request.method, request.url.path, None, None, body.decode(errors="replace"), 0)
        sim.calls.append(call)
        call.status = 200
        return HTMLResponse(_SITE_HTML)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app.add_api_route("/seedance/{rest:path}", website, methods=methods)
    app.add_api_route("/api/{rest:path}", website, methods=methods)


def _authorize_create(call: Call, body: Any) -> str:
    """The caller's group, if it may call the model the body names: a `doubao-*` id only from
    SeeDance2, a `dreamina-*` id only from Dreamina or default; any other group (or a model
    this route does not sell, asked by a group of neither) gets "no available channel"."""
    model = body.get("model") if isinstance(body, dict) else None
    spec = MODELS.get(model) if isinstance(model, str) else None
    return authorize_create(call, spec.groups if spec is not None else ARK_GROUPS, body)


def _validate(
    body: dict[str, Any], group: str, config: SimConfig, sim: SimState, request: Request
) -> ArkTask:
    model_id = body.get("model")
    if not isinstance(model_id, str) or model_id not in MODELS:
        raise bad(
            f"The model {model_id!r} does not exist or you do not have access to it.", "model"
        )
    spec = MODELS[model_id]
    for name in body:
        if name not in _TOP_FIELDS or (name == "draft" and not spec.v25):
            raise bad(f"Unknown parameter: {name}.", name)
    prompt, roles, first_image, input_video_s = _check_content(body.get("content"), spec, sim)
    ratio = body.get("ratio", "adaptive")
    if ratio not in RATIOS:
        raise bad(f"Invalid ratio {ratio!r}; one of {', '.join(RATIOS)}.", "ratio")
    resolution = body.get("resolution", "720p")
    if resolution not in RESOLUTIONS:
        raise bad(f"Invalid resolution {resolution!r}; one of {', '.join(RESOLUTIONS)}.",
                  "resolution")  # fmt: skip
    if RESOLUTIONS.index(resolution) > RESOLUTIONS.index(spec.max_resolution):
        raise bad(f"{model_id} supports up to {spec.max_resolution}.", "resolution")
    duration = body.get("duration", spec.default_duration)
    if (
        not isinstance(duration, int)
        or isinstance(duration, bool)
        or (duration != -1 and not 4 <= duration <= spec.max_duration)
    ):
        raise bad(
            f"Invalid duration {duration!r}: an integer 4-{spec.max_duration}, or -1.", "duration"
        )
    for name in ("generate_audio", "watermark", "return_last_frame", "draft"):
        if name in body and not isinstance(body[name], bool):
            raise bad(f"Invalid {name}: expected a boolean.", name)
    seed = body.get("seed", -1)
    if not isinstance(seed, int) or isinstance(seed, bool) or not -1 <= seed <= 2**32 - 1:
        raise bad("Invalid seed: an integer from -1 to 4294967295.", "seed")
    if "callback_url" in body and not isinstance(body["callback_url"], str):
        raise bad("Invalid callback_url: expected a URL string.", "callback_url")
    if body.get("draft") and resolution != "480p" and "resolution" in body:
        raise bad("A draft is made at 480p.", "resolution")
    frames = {"first_frame", "last_frame"} & roles
    if spec.v25 and (frames or "reference_video" in roles) and ratio != "adaptive":
        raise bad("Seedance 2.5 with frames or an input video needs ratio 'adaptive'.", "ratio")
    if ratio == "adaptive":
        ratio = _nearest_ratio(first_image) if first_image else "16:9"
    found = markers(prompt, "InternalServiceError")
    if found.create_status is not None:
        raise SimError(found.create_status, "simulated upstream error", type_="upstream_error")
    if duration == -1:
        duration = found.made_s or 5  # the model chooses; the simulator makes 5 s
    rng = random.Random(prompt)  # a stable seed for an unseeded prompt: reproducible tests
    return ArkTask(
        id=f"cgt-{secrets.token_hex(10)}",
        group=group,
        model=model_id,
        prompt=prompt,
        ratio=ratio,
        resolution="480p" if body.get("draft") else resolution,
        duration=duration,
        seed=seed if seed != -1 else rng.randrange(2**31),
        generate_audio=body.get("generate_audio", True),
        watermark=body.get("watermark", False),
        return_last_frame=body.get("return_last_frame", False),
        input_video_s=input_video_s,
        clock=Clock.start(config, found),
        content_bytes=found.content_bytes or config.video_bytes,
        base_url=str(request.base_url).rstrip("/"),
        secret=sim.link_secret,
        leak=bearer_of(request) if found.leaky else None,
    )


def _check_content(
    content: Any, spec: ArkModel, sim: SimState
) -> tuple[str, set[str], tuple[int, int] | None, int]:
    """(prompt, roles used, first frame's pixels if readable, input video seconds)."""
    if not isinstance(content, list) or not content:
        raise bad("content must be a non-empty array.", "content")
    texts: list[str] = []
    roles: list[str] = []
    first: tuple[int, int] | None = None
    video_s = 0
    for index, item in enumerate(content):
        where = f"content[{index}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object.", where)
        kind = item.get("type")
        if kind == "text":
            if set(item) != {"type", "text"} or not isinstance(item["text"], str):
                raise bad(f"{where}: a text item is {{type, text}}.", where)
            if not item["text"].strip():
                raise bad(f"{where}.text is empty.", where)
            texts.append(item["text"])
        elif kind == "draft_task":
            draft = item.get("draft_task")
            if not spec.v25 or set(item) != {"type", "draft_task"} or not isinstance(draft, dict):
                raise bad(f"{where}: draft_task is {{type, draft_task: {{id}}}} on 2.5.", where)
            roles.append("draft_task")
        elif kind in _MEDIA_ROLES:
            media = item.get(kind)
            if set(item) - {"type", kind, "role"} or not isinstance(media, dict):
                raise bad(f"{where}: a {kind} item is {{type, {kind}: {{url}}, role}}.", where)
            url = media.get("url")
            if set(media) != {"url"} or not isinstance(url, str):
                raise bad(f"{where}.{kind}.url must be a string.", where)
            role = item.get("role")
            if role not in _MEDIA_ROLES[kind]:
                allowed = ", ".join(_MEDIA_ROLES[kind])
                raise bad(f"{where}.role {role!r} is not allowed for {kind}: {allowed}.", where)
            pixels = _check_url(url, where, kind)
            if role == "first_frame":
                first = pixels
            if kind == "video_url":
                video_s += _video_seconds(url, sim)
            roles.append(role)
        else:
            raise bad(f"{where}.type {kind!r} is not one of text, image_url, video_url, "
                      "audio_url, draft_task.", where)  # fmt: skip
    if len(texts) > 1:
        raise bad("content may hold one text item.", "content")
    counts = {r: roles.count(r) for r in set(roles)}
    if counts.get("first_frame", 0) > 1 or counts.get("last_frame", 0) > 1:
        raise bad("At most one first_frame and one last_frame.", "content")
    if "last_frame" in counts and "first_frame" not in counts:
        raise bad("A last_frame needs a first_frame.", "content")
    references = {"reference_image", "reference_video", "reference_audio"} & set(counts)
    if ({"first_frame", "last_frame"} & set(counts)) and references:
        raise bad("First/last frames cannot be mixed with reference media.", "content")
    images = counts.get("first_frame", 0) + counts.get("last_frame", 0)
    images += counts.get("reference_image", 0)
    videos, audios = counts.get("reference_video", 0), counts.get("reference_audio", 0)
    if images > spec.images or videos > spec.videos or audios > spec.audios:
        raise bad(
            f"Too many references: up to {spec.images} images, {spec.videos} videos, "
            f"{spec.audios} audio.",
            "content",
        )
    if audios and not (images or videos) and not spec.audio_only:
        raise bad("Audio cannot be the only reference.", "content")
    if not texts and not roles:
        raise bad("content needs a text prompt or a reference.", "content")
    return (texts[0] if texts else ""), set(counts), first, video_s


def _check_url(url: str, where: str, kind: str) -> tuple[int, int] | None:
    if url.startswith(("http://", "https://", "asset://")):
        return None
    mime = kind.removesuffix("_url")
    if not url.startswith(f"data:{mime}/") or ";base64," not in url:
        raise bad(f"{where}: url must be http(s), asset:// or data:{mime}/...;base64,.", where)
    try:
        data = base64.b64decode(url.partition(";base64,")[2], validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"{where}: the data URL is not valid base64.", where) from None
    if kind != "image_url":
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except (OSError, SyntaxError, ValueError):
        raise bad(f"{where}: the data URL is not an image.", where) from None


def _video_seconds(url: str, sim: SimState) -> int:
    # A link to one of the simulator's own results has a known length; else assumed.
    name = url.split("?")[0].rsplit("/", 1)[-1].removesuffix(".mp4")
    task = sim.videos.get(name)
    if isinstance(task, ArkTask):
        return task.duration
    return ASSUMED_REFERENCE_VIDEO_S


def _nearest_ratio(pixels: tuple[int, int] | None) -> str:
    if pixels is None:
        return "16:9"
    width, height = pixels
    shapes = {name: w / h for name, (w, h) in PIXELS["720p"].items()}
    return min(shapes, key=lambda name: abs(shapes[name] - width / height))

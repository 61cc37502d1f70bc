"""Muse on `/v1/videos`, as upstream-2026/muse.md describes it: the Sora-shaped successor.

- Models `muse-video` (5, 8 or 10 s, default 10), `muse-video-20s` ... `-60s` (that length
  only), in token groups `default`, `vip`, `svip`; any other group: "no available channel".
- JSON or multipart. `size` (WxH) or `aspect_ratio`, not both; output is 720p-class (16:9 is
  1280x720; the sizes of the other ratios are NOT FOUND upstream, so the ones below are the
  simulator's assumption: 720 on the short side). `image` (URL or data URL) or, in multipart
  only, the file `input_reference` for the first frame; `last_frame` (URL, or a file in
  multipart); `video_url` continues a clip, the model then naming the TOTAL length (rule of
  2026-11-02), which must exceed the source's. Unknown fields are refused (the page lists no
  others; strict so that a gateway leaking Sora-only or OpenAI-only fields fails here).
- Looks and camera techniques (docs.laozhang.ai/en/announcements/muse-video-styles-2026-11.md,
  2026-11-04): `style_preset` one look id, `skill_preset` technique ids (an array, or one string
  separated by commas; `none` only by itself), `custom_style` / `custom_skill` free text of at
  most 2,000 characters. The page has 7 looks and 13 techniques but names 6 and 8: those are all
  the simulator knows. An unknown id is a 400 at submission: no task, no charge.
- Charged the flat price at create, refunded in full when the task fails (`cost_usd`).
- `video_url` on completion: an unauthenticated link (no Authorization needed), kept 7 days;
  `expires_at` says so. No thumbnail or spritesheet (not offered), no list/delete/remix (not
  documented: the route's own paths answer "Invalid URL" for Muse tasks).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image

from mediagate.simulator.jobs import SimVideo, markers, masked_headers, new_video_id, no_channel
from mediagate.simulator.rules import MAX_PROMPT_CHARS, SimError, invalid
from mediagate.simulator.state import Call, SimConfig, SimState
from mediagate.simulator.videofiles import file_response

MUSE_GROUPS = frozenset({"default", "vip", "svip"})
# model -> (the lengths it makes, its default, USD per video charged at create)
MUSE_MODELS: dict[str, tuple[tuple[int, ...], int, float]] = {
    "muse-video": ((5, 8, 10), 10, 0.30),
    "muse-video-20s": ((20,), 20, 0.55),
    "muse-video-30s": ((30,), 30, 0.80),
    "muse-video-40s": ((40,), 40, 1.05),
    "muse-video-50s": ((50,), 50, 1.30),
    "muse-video-60s": ((60,), 60, 1.55),
}
# aspect ratio -> size. Only 16:9 = 1280x720 is documented; the rest assume 720 short side.
MUSE_SIZES = {
    "16:9": "1280x720",
    "9:16": "720x1280",
    "1:1": "720x720",
    "4:3": "960x720",
    "3:4": "720x960",
}
MUSE_LINK_DAYS = 7
# The looks and camera techniques the announcement names (the zh copy lists them).
MUSE_STYLES = frozenset(
    {"cinematic_realistic", "2d_anime", "3d_xianxia", "american_comic", "cyberpunk_neon"}
    | {"ecommerce_ugc"}
)
MUSE_SKILLS = frozenset(
    {"whip_pan", "cut_on_action", "micro_drama_hook", "tvc_product_hero", "xianxia_speed_ramp"}
    | {"emotion_micro_acting", "over_shoulder_axis", "occlusion_wipe"}
)
MUSE_CUSTOM_CHARS = 2000
_FIELDS = frozenset(
    {"model", "prompt", "seconds", "size", "aspect_ratio", "image", "input_reference"}
    | {"last_frame", "video_url", "style_preset", "custom_style", "skill_preset", "custom_skill"}
)
_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
_DATA_URL_RE = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(.+)$", re.DOTALL)
_LINK_RE = re.compile(r"/cdn/muse/(video_[0-9a-f]+)\.mp4$")


def is_muse(model: Any) -> bool:
    return isinstance(model, str) and model in MUSE_MODELS


@dataclass
class MuseVideo(SimVideo):
    base_url: str = ""
    price_usd: float = 0.0
    aspect_ratio: str = "16:9"
    source_url: str | None = None
    lifetime_s: ClassVar[int] = MUSE_LINK_DAYS * 86400

    def link(self) -> str:
        return f"{self.base_url}/cdn/muse/{self.id}.mp4"

    def body(self) -> dict[str, Any]:
        body = super().body()
        del body["remixed_from_video_id"]  # Muse continues a clip by `video_url`, no remix
        body["video_url"] = self.link() if body["status"] == "completed" else None
        return body

    def cost_usd(self) -> float:
        """Charged at create; a failed task is refunded in full."""
        return 0.0 if self.status()[0] == "failed" else self.price_usd


def create_muse(
    request: Request,
    call: Call,
    config: SimConfig,
    sim: SimState,
    fields: dict[str, Any],
    multipart: bool,
    group: str,
) -> MuseVideo:
    """Validates a Muse create and starts its task (raises SimError for a refused one)."""
    call.headers = masked_headers(request, config)
    model = fields["model"]
    if group not in MUSE_GROUPS:
        raise no_channel(model, group)
    for name in fields:
        if name not in _FIELDS:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    lengths, default, price = MUSE_MODELS[model]
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid("Invalid 'prompt': too long.", "prompt", "string_above_max_length")
    seconds = _seconds(fields.get("seconds"), lengths, default, model)
    ratio, size = _shape(fields.get("size"), fields.get("aspect_ratio"))
    _presets(fields)
    first = _first_frame(fields, multipart)
    last = fields.get("last_frame")
    if last is not None:
        _image_input(last, "last_frame", allow_file=multipart)
    source = fields.get("video_url")
    source_video: MuseVideo | None = None
    if source is not None:
        if not isinstance(source, str) or not source.startswith(("http://", "https://")):
            raise invalid("Invalid 'video_url': expected an http(s) URL.", "video_url")
        if first or last is not None:
            raise invalid(
                "'video_url' continues a clip; it cannot be combined with first/last frames.",
                "video_url",
            )
        source_video = _known_source(source, sim)
        if source_video is not None and int(source_video.seconds) >= seconds:
            raise invalid(
                f"Invalid 'video_url': the source is {source_video.seconds} s; {model} makes "
                f"{seconds} s in total, which must be longer than the source.",
                "video_url",
            )
    found = markers(prompt, "video_generation_failed")
    if found.create_status is not None:
        raise SimError(found.create_status, "simulated upstream error", type_="upstream_error")
    video = MuseVideo(
        id=new_video_id(),
        group=group,
        model=model,
        prompt=prompt,
        size=size,
        seconds=str(seconds),
        created_at=0,
        started=0.0,
        queued_s=config.video_queued_s,
        render_s=found.render_s if found.render_s is not None else config.video_render_s,
        content_bytes=found.content_bytes or config.video_bytes,
        fail_code=found.fail_code,
        base_url=str(request.base_url).rstrip("/"),
        price_usd=price,
        aspect_ratio=ratio,
        source_url=source,
    )
    video.stamp()
    sim.videos[video.id] = video
    return video


def _seconds(value: Any, lengths: tuple[int, ...], default: int, model: str) -> int:
    if value is None:
        return default
    # Sora sent strings ("8"); whether Muse takes ints is NOT FOUND, so both are accepted, but
    # only whole numbers of the model's own lengths.
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isdigit() or int(text) not in lengths:
        allowed = ", ".join(str(n) for n in lengths)
        raise invalid(
            f"Invalid 'seconds': {value!r}; {model} makes {allowed} seconds.",
            "seconds",
        )
    return int(text)


def _presets(fields: dict[str, Any]) -> None:
    """The look and the camera techniques, checked before any task exists."""
    style = fields.get("style_preset")
    if style is not None and style not in MUSE_STYLES:
        raise invalid(
            f"Invalid 'style_preset': {style!r}; supported: {', '.join(sorted(MUSE_STYLES))}.",
            "style_preset",
        )
    skills = fields.get("skill_preset")
    if skills is not None:
        if isinstance(skills, str):
            ids = [part.strip() for part in skills.split(",")]
        elif isinstance(skills, list) and all(isinstance(part, str) for part in skills):
            ids = list(skills)
        else:
            raise invalid("Invalid 'skill_preset': expected a string or an array.", "skill_preset")
        for part in ids:
            if part != "none" and part not in MUSE_SKILLS:
                raise invalid(
                    f"Invalid 'skill_preset': {part!r}; supported: none, "
                    f"{', '.join(sorted(MUSE_SKILLS))}.",
                    "skill_preset",
                )
        if "none" in ids and len(ids) > 1:
            raise invalid("'none' cannot be combined with other skills.", "skill_preset")
    for name in ("custom_style", "custom_skill"):
        text = fields.get(name)
        if text is not None and (not isinstance(text, str) or len(text) > MUSE_CUSTOM_CHARS):
            raise invalid(
                f"Invalid '{name}': expected text of at most {MUSE_CUSTOM_CHARS} characters.",
                name,
            )


def _shape(size: Any, ratio: Any) -> tuple[str, str]:
    if size is not None and ratio is not None:
        raise invalid("Send either 'size' or 'aspect_ratio', not both.", "aspect_ratio")
    if ratio is not None:
        if ratio not in MUSE_SIZES:
            raise invalid(
                f"Invalid 'aspect_ratio': {ratio!r}; supported: {', '.join(MUSE_SIZES)}.",
                "aspect_ratio",
            )
        return ratio, MUSE_SIZES[ratio]
    if size is None:
        return "16:9", MUSE_SIZES["16:9"]
    for known, pixels in MUSE_SIZES.items():
        if size == pixels:
            return known, pixels
    raise invalid(f"Invalid 'size': {size!r}; supported: {', '.join(MUSE_SIZES.values())}.", "size")


def _first_frame(fields: dict[str, Any], multipart: bool) -> bool:
    image, upload = fields.get("image"), fields.get("input_reference")
    if image is not None and upload is not None:
        raise invalid("Send either 'image' or 'input_reference', not both.", "input_reference")
    if upload is not None:
        if not multipart:
            raise invalid(
                "'input_reference' is a file upload (multipart/form-data); in JSON send the "
                "first frame as 'image' (a URL or data URL).",
                "input_reference",
            )
        if not isinstance(upload, bytes):
            raise invalid("'input_reference' must be a file.", "input_reference")
        _check_image_bytes(upload, "input_reference")
        return True
    if image is not None:
        _image_input(image, "image", allow_file=False)
        return True
    return False


def _image_input(value: Any, name: str, *, allow_file: bool) -> None:
    if isinstance(value, bytes):
        if not allow_file:
            raise invalid(f"'{name}' must be a URL or data URL.", name)
        _check_image_bytes(value, name)
        return
    if not isinstance(value, str):
        raise invalid(f"Invalid '{name}': expected a URL or data URL string.", name)
    if value.startswith(("http://", "https://")):
        return
    match = _DATA_URL_RE.match(value)
    if match is None:
        raise invalid(
            f"Invalid '{name}': expected an http(s) URL or a data:image/...;base64, URL.", name
        )
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"Invalid '{name}': the data URL is not valid base64.", name) from None
    _check_image_bytes(data, name)


def _check_image_bytes(data: bytes, name: str) -> None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
    except (OSError, SyntaxError, ValueError):
        kind = None
    if kind not in _IMAGE_FORMATS:
        raise invalid(f"'{name}' must be a JPEG, PNG or WebP image.", name, "invalid_image_format")


def _known_source(url: str, sim: SimState) -> MuseVideo | None:
    match = _LINK_RE.search(url.split("?")[0])
    if match is None:
        return None  # someone else's clip: nothing to check against
    video = sim.videos.get(match.group(1))
    if not isinstance(video, MuseVideo) or video.status()[0] != "completed":
        raise invalid("Invalid 'video_url': no finished video at that link.", "video_url")
    return video


def register_muse_routes(app: FastAPI, config: SimConfig, sim: SimState) -> None:
    @app.get("/cdn/muse/{name}")
    async def muse_link(name: str, request: Request) -> Response:
        # The completed task's `video_url`: no Authorization needed (none is refused either).
        call = Call(request.method, request.url.path, None, None, None, 0)
        call.headers = masked_headers(request, config)
        sim.calls.append(call)
        video = sim.videos.get(name.removesuffix(".mp4"))
        if (
            not name.endswith(".mp4")
            or not isinstance(video, MuseVideo)
            or video.status()[0] != "completed"
        ):
            response: Response = Response("Not Found", status_code=404, media_type="text/plain")
        else:
            response = await file_response(
                request, video.id, video.clip, video.content_bytes, "video"
            )
        call.status = response.status_code
        return response

"""The upstream's Videos API, simulated: async jobs that only the creating token group can see.

Strict like the rest of the simulator: multipart only, the model's own sizes, 4/8/12 seconds,
and a reference image whose pixels equal `size` exactly, so a gateway that forgets to fit one
fails here. Jobs move queued -> in_progress -> completed on the clock (no background tasks:
the state is computed when asked). Content is generated on the fly in chunks, so a 500 MB
video costs no memory. Prompt directives: `[sim:fail]` or `[sim:fail=CODE]` (the job fails),
`[sim:bytes=N]` (content size), `[sim:render=S]` (seconds in progress), `[sim:echokey]` (the
upstream key echoed in the content's ETag and Content-Disposition), `[sim:status=NNN]`
(the create itself fails).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile

from mediagate.simulator.jobs import (
    SimVideo,
    bearer_of,
    decode_body,
    markers,
    masked_headers,
    new_video_id,
)
from mediagate.simulator.rules import MAX_PROMPT_CHARS, SimError, invalid
from mediagate.simulator.state import Call, SimConfig, SimState
from mediagate.simulator.videofiles import content_chunks, file_response

__all__ = ["SimVideo", "content_chunks", "new_video_id", "register_video_routes"]

VIDEO_GROUPS = frozenset({"OpenAI Official", "OpenAI Official Enterprise"})
VIDEO_SIZES = {
    "sora-2": ("720x1280", "1280x720"),
    "sora-2-pro": ("720x1280", "1280x720", "1024x1792", "1792x1024"),
}
VIDEO_SECONDS = ("4", "8", "12")
_FIELDS = frozenset({"model", "prompt", "size", "seconds", "input_reference"})
_REFERENCE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _error(error: SimError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def invalid_url(request: Request) -> SimError:
    """What the upstream answers for a path it does not have (as app.py's catch-all)."""
    return SimError(404, f"Invalid URL ({request.method} {request.url.path})")


def _not_found() -> SimError:
    return SimError(404, "Video not found.", code="not_found")


def register_video_routes(app: FastAPI, config: SimConfig, sim: SimState) -> None:
    def group_of(request: Request, call: Call) -> str:
        group = config.keys.get(_bearer(request) or "")
        if group is None:
            raise SimError(401, "Invalid token.", code="invalid_api_key")
        call.group = group
        return group

    def find(video_id: str, group: str, request: Request | None = None) -> SimVideo:
        """The group's job; with `request`, a Sora job only (Muse documents create, get and
        content; its other paths answer like any path the upstream lacks)."""
        from mediagate.simulator.muse import MuseVideo

        video = sim.videos.get(video_id)
        if request is not None and isinstance(video, MuseVideo) and video.group == group:
            raise invalid_url(request)
        # Another group's job looks exactly like one that does not exist.
        if not isinstance(video, SimVideo) or video.group != group:
            raise _not_found()
        return video

    async def served(request: Request, body: Any, handler: Any) -> Response:
        call = Call(request.method, request.url.path, None, None, body, 0)
        call.headers = masked_headers(request, config)
        sim.calls.append(call)
        try:
            response: Response = await handler(call, group_of(request, call))
        except SimError as error:
            response = _error(error)
        call.status = response.status_code
        return response

    def new_video(group: str, model: str, prompt: str, size: str, seconds: str) -> SimVideo:
        found = markers(prompt, "video_generation_failed")
        video = SimVideo(
            id=new_video_id(),
            group=group,
            model=model,
            prompt=prompt,
            size=size,
            seconds=seconds,
            created_at=int(time.time()),
            started=time.monotonic(),
            queued_s=config.video_queued_s,
            render_s=found.render_s if found.render_s is not None else config.video_render_s,
            content_bytes=found.content_bytes or config.video_bytes,
            fail_code=found.fail_code,
        )
        sim.videos[video.id] = video
        return video

    @app.post("/v1/videos")
    async def create(request: Request) -> Response:
        from mediagate.simulator.muse import create_muse, is_muse

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fields: dict[str, Any] = {}
        recorded: Any = {}
        if kind == "multipart/form-data":
            async with request.form() as form:
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        data = await value.read()
                        fields[name] = data
                        recorded[name] = _describe(data, value.content_type)
                    else:
                        fields[name] = recorded[name] = value
        else:
            raw = (await request.body()).decode(errors="replace")
            try:
                parsed = json.loads(raw) if kind == "application/json" else None
            except ValueError:
                parsed = None
            # Only Muse takes JSON; the Sora route took multipart only.
            if not (isinstance(parsed, dict) and is_muse(parsed.get("model"))):
                call = Call("POST", request.url.path, None, None, raw, 0)
                sim.calls.append(call)
                response = _error(
                    invalid(
                        "Content-Type must be multipart/form-data.", None, "invalid_content_type"
                    )
                )
                call.status = response.status_code
                return response
            fields = recorded = parsed

        async def handle(call: Call, group: str) -> Response:
            call.model = fields.get("model") if isinstance(fields.get("model"), str) else None
            if is_muse(call.model):
                multipart = kind == "multipart/form-data"
                muse = create_muse(request, call, config, sim, fields, multipart, group)
                return JSONResponse(muse.body())
            if config.sora_closed and call.model in VIDEO_SIZES:
                raise SimError(
                    404,
                    f"The model {call.model} has been retired (since 2026-07-01); use "
                    "muse-video, Seedance 2.0 or Wan 2.7.",
                    code="model_not_found",
                )
            model, prompt, size, seconds = _check_create(fields, group)
            status = markers(prompt, "video_generation_failed").create_status
            if status is not None:
                raise SimError(status, "simulated upstream error", type_="upstream_error")
            video = new_video(group, model, prompt, size, seconds)
            return JSONResponse(video.body())

        return await served(request, recorded, handle)

    @app.get("/v1/videos")
    async def list_videos(request: Request) -> Response:
        from mediagate.simulator.muse import MuseVideo

        async def handle(call: Call, group: str) -> Response:
            if group not in VIDEO_GROUPS:
                raise invalid_url(request)  # Muse documents no list
            videos = [
                v
                for v in sim.videos.values()
                if isinstance(v, SimVideo) and not isinstance(v, MuseVideo) and v.group == group
            ]
            if request.query_params.get("order", "desc") == "desc":
                videos.reverse()
            after = request.query_params.get("after")
            if after:
                ids = [v.id for v in videos]
                videos = videos[ids.index(after) + 1 :] if after in ids else []
            limit = int(request.query_params.get("limit") or 20)
            page = [v.body() for v in videos[:limit]]
            return JSONResponse(
                {
                    "object": "list",
                    "data": page,
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None,
                    "has_more": len(videos) > limit,
                }
            )

        return await served(request, None, handle)

    @app.get("/v1/videos/{video_id}")
    async def retrieve(video_id: str, request: Request) -> Response:
        async def handle(call: Call, group: str) -> Response:
            return JSONResponse(find(video_id, group).body())

        return await served(request, None, handle)

    @app.delete("/v1/videos/{video_id}")
    async def delete(video_id: str, request: Request) -> Response:
        async def handle(call: Call, group: str) -> Response:
            video = find(video_id, group, request)
            if video.status()[0] not in ("completed", "failed"):
                raise invalid("Only a completed or failed video can be deleted.", None)
            del sim.videos[video_id]
            return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

        return await served(request, None, handle)

    @app.post("/v1/videos/{video_id}/remix")
    async def remix(video_id: str, request: Request) -> Response:
        body = decode_body(await request.body())

        async def handle(call: Call, group: str) -> Response:
            source = find(video_id, group, request)
            call.model = source.model
            if not isinstance(body, dict) or set(body) != {"prompt"}:
                raise invalid("The body must be a JSON object with only 'prompt'.", None)
            prompt = body["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                raise invalid("Invalid 'prompt': expected a non-empty string.", "prompt")
            if source.status()[0] != "completed":
                raise invalid("Only a completed video can be remixed.", None, "video_not_ready")
            video = new_video(group, source.model, prompt, source.size, source.seconds)
            video.remixed_from = source.id
            return JSONResponse(video.body())

        return await served(request, body, handle)

    @app.get("/v1/videos/{video_id}/content")
    async def content(video_id: str, request: Request) -> Response:
        from mediagate.simulator.ark import ArkTask
        from mediagate.simulator.muse import MuseVideo

        async def handle(call: Call, group: str) -> Response:
            task = sim.videos.get(video_id)
            if isinstance(task, ArkTask):
                # Seedance's "compatibility" download on the main host (seedance-2.md).
                return task.content(request, group)
            video = find(video_id, group)
            variant = request.query_params.get("variant", "video")
            if variant not in ("video", "thumbnail", "spritesheet"):
                raise invalid(f"Invalid variant '{variant}'.", "variant")
            if isinstance(video, MuseVideo) and variant != "video":
                raise SimError(404, f"Muse has no {variant}.", code="not_found")
            if video.status()[0] != "completed":
                raise invalid("The video is not ready yet.", None, "video_not_ready")
            response = file_response(request, video.id, video.size, video.content_bytes, variant)
            if "[sim:echokey]" in video.prompt:
                # A leaky upstream: its key in the file's ETag and Content-Disposition.
                key = bearer_of(request)
                response.headers["etag"] = f'"{video.id}-{key}"'
                response.headers["content-disposition"] = f'attachment; filename="{key}.mp4"'
            return response

        return await served(request, dict(request.query_params), handle)


def _describe(data: bytes, declared: str | None) -> dict[str, Any]:
    """How an uploaded reference is recorded: enough for tests, not the bytes themselves."""
    info: dict[str, Any] = {
        "bytes": len(data),
        "declared_type": declared,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        with Image.open(io.BytesIO(data)) as image:
            info.update(format=image.format, width=image.width, height=image.height)
    except (OSError, SyntaxError, ValueError):
        info["format"] = None
    return info


def _check_create(fields: dict[str, Any], group: str) -> tuple[str, str, str, str]:
    for name in fields:
        if name not in _FIELDS:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    for name in ("model", "prompt", "size", "seconds"):
        if name in fields and not isinstance(fields[name], str):
            raise invalid(f"Invalid '{name}': expected a text field.", name)
    model = fields.get("model")
    if not model:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if model not in VIDEO_SIZES or group not in VIDEO_GROUPS:
        raise SimError(
            503,
            f"No available channel for model {model} under group {group}",
            type_="upstream_error",
            code="model_not_found",
        )
    prompt = fields.get("prompt")
    if not prompt or not prompt.strip():
        raise invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid("Invalid 'prompt': too long.", "prompt", "string_above_max_length")
    size = fields.get("size", "720x1280")
    if size not in VIDEO_SIZES[model]:
        raise invalid(f"Invalid 'size': {size} is not supported by {model}.", "size")
    seconds = fields.get("seconds", "4")
    if seconds not in VIDEO_SECONDS:
        raise invalid(f"Invalid 'seconds': {seconds}; supported: 4, 8, 12.", "seconds")
    reference = fields.get("input_reference")
    if reference is not None:
        if not isinstance(reference, bytes):
            raise invalid("input_reference must be a file.", "input_reference")
        _check_reference(reference, size)
    return model, prompt, size, seconds


def _check_reference(data: bytes, size: str) -> None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, width, height = image.format, image.width, image.height
    except (OSError, SyntaxError, ValueError):
        kind, width, height = None, 0, 0
    if kind not in _REFERENCE_TYPES:
        raise invalid(
            "input_reference must be a JPEG, PNG or WebP image.",
            "input_reference",
            "invalid_image_format",
        )
    if f"{width}x{height}" != size:
        raise invalid(
            f"Input reference image dimensions ({width}x{height}) must match the requested "
            f"video size ({size}).",
            "input_reference",
            "invalid_image_size",
        )

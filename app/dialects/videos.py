"""The Videos dialect: OpenAI video requests to the upstream's job API, its video objects back.

The upstream forwards OpenAI's own Videos API, so the shapes are nearly the same; what differs
is who knows what. The upstream wants multipart with every field explicit and knows jobs by its
own ids; clients know jobs by ours and see what our record says. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..catalog import Route
from ..errors import UpstreamError
from ..jobstore import STATUSES, TERMINAL, Job

# Where a status sits in a job's life, so an older answer (two pollers, two replicas) never
# moves a job backwards.
_RANK = {"queued": 0, "in_progress": 1, "completed": 2, "failed": 2}
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class VideoSpec:
    """A create request after the route's policy: every field explicit."""

    prompt: str
    size: str
    seconds: str


@dataclass(frozen=True)
class Reference:
    """An input_reference image, already the video's exact size."""

    data: bytes
    content_type: str  # image/png, image/jpeg or image/webp, from the bytes
    width: int
    height: int

    @property
    def filename(self) -> str:
        return f"input_reference.{_EXTENSIONS[self.content_type]}"


@dataclass(frozen=True)
class UpstreamVideo:
    id: str
    status: str
    progress: int
    error: dict[str, Any] | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    size: str | None = None
    seconds: str | None = None


def job_path(upstream_id: str, suffix: str = "") -> str:
    return f"/videos/{quote(upstream_id, safe='')}{suffix}"


def build_create(
    route: Route, spec: VideoSpec, reference: Reference | None
) -> tuple[str, list[tuple[str, Any]]]:
    """The path and multipart parts of a create. Text fields are parts too (a file name of
    None), so the body is multipart even without a reference, as the upstream requires."""
    parts: list[tuple[str, Any]] = [
        ("model", (None, route.upstream_model)),
        ("prompt", (None, spec.prompt)),
        ("size", (None, spec.size)),
        ("seconds", (None, spec.seconds)),
    ]
    if reference is not None:
        parts.append(
            ("input_reference", (reference.filename, reference.data, reference.content_type))
        )
    return "/videos", parts


def build_remix(upstream_id: str, prompt: str) -> tuple[str, dict[str, Any]]:
    return job_path(upstream_id, "/remix"), {"prompt": prompt}


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _error(value: Any) -> dict[str, Any] | None:
    """The upstream's error object in the SDK's shape: code and message always strings."""
    if not isinstance(value, dict):
        return None
    error = {
        "code": str(value.get("code") or "video_generation_failed"),
        "message": str(value.get("message") or "The upstream failed to make the video."),
    }
    for optional in ("param", "type"):
        if isinstance(value.get(optional), str):
            error[optional] = value[optional]
    return error


def parse_video(payload: Any, route: Route) -> UpstreamVideo:
    """The upstream's video object, or a GatewayError when it is not one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        raise UpstreamError(
            f"The upstream route {route.id} answered without a video object.",
            code="bad_upstream_response",
        )
    status = payload.get("status")
    if status not in STATUSES:
        raise UpstreamError(
            f"The upstream route {route.id} reported an unknown video status {status!r}.",
            code="bad_upstream_response",
        )
    progress = _int_or_none(payload.get("progress")) or 0
    if status == "completed":
        progress = 100
    error = _error(payload.get("error"))
    if status == "failed" and error is None:
        error = _error({})
    seconds = payload.get("seconds")
    return UpstreamVideo(
        id=payload["id"],
        status=status,
        progress=max(0, min(100, progress)),
        error=error if status == "failed" else None,
        completed_at=_int_or_none(payload.get("completed_at")),
        expires_at=_int_or_none(payload.get("expires_at")),
        size=payload["size"] if isinstance(payload.get("size"), str) else None,
        seconds=str(seconds) if isinstance(seconds, str | int) else None,
    )


def job_changes(job: Job, video: UpstreamVideo, now: float) -> dict[str, Any]:
    """What the upstream's latest answer changes in our record: only moves forward."""
    changes: dict[str, Any] = {}
    if _RANK[video.status] > _RANK[job.status]:
        changes["status"] = video.status
    if video.progress > job.progress and _RANK[video.status] >= _RANK[job.status]:
        changes["progress"] = video.progress
    if video.expires_at is not None and video.expires_at != job.expires_at:
        changes["expires_at"] = video.expires_at
    if changes.get("status") in TERMINAL:
        changes["completed_at"] = video.completed_at or int(now)
        changes["error"] = video.error
    if changes:
        changes["updated_at"] = now
    return changes


def openai_video(job: Job) -> dict[str, Any]:
    """Our record as the OpenAI video object, under our id."""
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": job.status,
        "progress": job.progress,
        "created_at": job.created_at,
        "completed_at": job.completed_at,
        "expires_at": job.expires_at,
        "prompt": job.prompt,
        "size": job.size,
        "seconds": job.seconds,
        "remixed_from_video_id": job.remixed_from,
        "error": job.error,
    }

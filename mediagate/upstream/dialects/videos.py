"""The Videos dialect: OpenAI video requests to the upstream's job API, its video objects back.

The upstream forwards OpenAI's own Videos API, so the shapes are nearly the same; what differs
is who knows what. The upstream wants multipart with every field explicit and knows jobs by its
own ids; clients know jobs by ours and see what our record says (that record, and how an upstream
answer changes it, is `mediagate.videos.records`). Pure: no I/O, no storage records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from mediagate.catalog import Route
from mediagate.errors import UpstreamError
from mediagate.upstream.dialects import UpstreamRequest

# The statuses the upstream reports for a job; any other answer is not a video object.
STATUSES = frozenset({"queued", "in_progress", "completed", "failed"})
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


def _job_path(upstream_id: str, suffix: str = "") -> str:
    return f"/videos/{quote(upstream_id, safe='')}{suffix}"


def build_create(route: Route, spec: VideoSpec, reference: Reference | None) -> UpstreamRequest:
    """A create, as multipart. Text fields are parts too (a file name of None), so the body is
    multipart even without a reference, as the upstream requires."""
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
    return UpstreamRequest("/videos", parts=parts)


def build_remix(upstream_id: str, prompt: str) -> UpstreamRequest:
    return UpstreamRequest(_job_path(upstream_id, "/remix"), json={"prompt": prompt})


def build_status(upstream_id: str) -> UpstreamRequest:
    return UpstreamRequest(_job_path(upstream_id), method="GET")


def build_delete(upstream_id: str) -> UpstreamRequest:
    return UpstreamRequest(_job_path(upstream_id), method="DELETE")


def build_content(upstream_id: str, variant: str, headers: dict[str, str]) -> UpstreamRequest:
    """A download of the job's content; `headers` are the client's Range and validators."""
    path = _job_path(upstream_id, "/content")
    return UpstreamRequest(path, method="GET", params={"variant": variant}, headers=headers)


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

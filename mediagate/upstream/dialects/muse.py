"""Muse's contract (muse.md): the `/v1/videos` shape Sora had. Create as multipart (`model`,
`prompt`, `size`, `seconds`, `input_reference` file, `last_frame`, the looks and camera
techniques `style_preset`, `custom_style`, `skill_preset` as ids separated by commas,
`custom_skill`), poll `GET /videos/{id}`
(queued / in_progress / completed / failed), the result at `video_url` (no key needed, kept 7
days) or `GET /videos/{id}/content` with the key. A continuation ("remix") is a new create with
`video_url` set to the source clip. Pure."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mediagate.catalog import Route
from mediagate.upstream.dialects import UpstreamRequest
from mediagate.upstream.dialects.videos import (
    STATUSES,
    Reference,
    UpstreamVideo,
    VideoSpec,
    error_object,
    int_or_none,
    link_expiry,
    not_a_video,
    unknown_status,
)


def _job_path(upstream_id: str, suffix: str = "") -> str:
    return f"/videos/{quote(upstream_id, safe='')}{suffix}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):  # ids (skill_preset): one field, separated by commas
        return ",".join(str(part) for part in value)
    return str(value)


class MuseDialect:
    def build_create(
        self, route: Route, spec: VideoSpec, reference: Reference | None
    ) -> UpstreamRequest:
        """Multipart, text fields as parts (a file name of None), every field explicit."""
        parts: list[tuple[str, Any]] = [
            ("model", (None, route.upstream_model)),
            ("prompt", (None, spec.prompt)),
            ("size", (None, spec.size)),
            ("seconds", (None, str(spec.seconds))),  # Sora's shape: seconds as text
        ]
        for name, value in sorted(spec.options.items()):
            parts.append((name, (None, _text(value))))
        if reference is not None:
            parts.append(
                ("input_reference", (reference.filename, reference.data, reference.content_type))
            )
        return UpstreamRequest("/videos", parts=parts)

    def build_remix(self, route: Route, upstream_id: str, spec: VideoSpec) -> UpstreamRequest:
        """A continuation: a new create extending the source clip (`video_url`); the model
        sets the finished video's total length."""
        body: dict[str, Any] = {
            "model": route.upstream_model,
            "prompt": spec.prompt,
            "video_url": spec.source_url,
            "size": spec.size,
            "seconds": str(spec.seconds),
        }
        return UpstreamRequest("/videos", json=body)

    def build_status(self, route: Route, upstream_id: str) -> UpstreamRequest:
        return UpstreamRequest(_job_path(upstream_id), method="GET")

    def build_delete(self, route: Route, upstream_id: str) -> UpstreamRequest | None:
        return None  # muse.md shows no delete: the job is only hidden on our side

    def build_content(
        self, route: Route, upstream_id: str, variant: str, headers: dict[str, str]
    ) -> UpstreamRequest | None:
        path = _job_path(upstream_id, "/content")
        return UpstreamRequest(path, method="GET", params={"variant": variant}, headers=headers)

    def parse(self, payload: Any, route: Route, now: float) -> UpstreamVideo:
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise not_a_video(route)
        status = payload.get("status")
        if status not in STATUSES:
            raise unknown_status(route, status)
        progress = int_or_none(payload.get("progress")) or 0
        if status == "completed":
            progress = 100
        completed_at = int_or_none(payload.get("completed_at"))
        expires_at = int_or_none(payload.get("expires_at"))
        if status == "completed" and expires_at is None:
            expires_at = link_expiry(route, completed_at, now)
        seconds = payload.get("seconds")  # "8" in Sora's shape; 8 taken too
        if isinstance(seconds, str):
            seconds = int(seconds) if seconds.isascii() and seconds.isdigit() else None
        url = payload.get("video_url")
        return UpstreamVideo(
            id=payload["id"],
            status=status,
            progress=max(0, min(100, progress)),
            error=error_object(payload.get("error")) if status == "failed" else None,
            completed_at=completed_at,
            expires_at=expires_at,
            size=payload["size"] if isinstance(payload.get("size"), str) else None,
            seconds=int_or_none(seconds),
            result_url=url if isinstance(url, str) and url else None,
        )


DIALECT = MuseDialect()

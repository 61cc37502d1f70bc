"""DashScope's task contract, as the upstream relays it for Wan 2.7 / 3.0 (wan-2-7.md):
`POST /wan/api/v1/services/aigc/video-generation/video-synthesis` with the header
`X-DashScope-Async: enable`, `input.prompt`, `input.negative_prompt`, `input.media[]`
(`{type, url}`), `parameters.resolution` (`720P` / `1080P`: always sent, an omitted one is made
and billed as 1080P) and `parameters.duration` (an integer); poll `GET /v1/tasks/{task_id}`
(submitted / in_progress / completed / failed, at the top level); the result at the top-level
`result_url`, a signed object-store link fetched WITHOUT the upstream key. Billed per second on
the seconds actually made. No delete, no content endpoint, no remix. Pure."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mediagate.catalog import Route
from mediagate.upstream.dialects import UpstreamRequest
from mediagate.upstream.dialects.videos import (
    Reference,
    UpstreamVideo,
    VideoSpec,
    error_object,
    int_or_none,
    link_expiry,
    not_a_video,
    unknown_status,
)

SYNTHESIS = "/wan/api/v1/services/aigc/video-generation/video-synthesis"
_STATUS = {
    "submitted": "queued",
    "in_progress": "in_progress",
    "completed": "completed",
    "failed": "failed",
    # DashScope's own task_status, should the relay pass it through unmapped.
    "PENDING": "queued",
    "RUNNING": "in_progress",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELED": "failed",
    "UNKNOWN": "failed",
}
_INPUT_OPTIONS = frozenset({"negative_prompt"})


class DashScopeDialect:
    def build_create(
        self, route: Route, spec: VideoSpec, reference: Reference | None
    ) -> UpstreamRequest:
        media: list[dict[str, Any]] = []
        options = dict(spec.options)
        if reference is not None:
            kind = (
                "reference_image"
                if route.video and route.video.reference_role == ("reference_image")
                else "first_frame"
            )
            media.append({"type": kind, "url": reference.data_url})
        last_frame = options.pop("last_frame", None)
        if isinstance(last_frame, str):
            media.append({"type": "last_frame", "url": last_frame})
        given: dict[str, Any] = {"prompt": spec.prompt}
        for name in sorted(_INPUT_OPTIONS & set(options)):
            given[name] = options.pop(name)
        if media:
            given["media"] = media
        parameters: dict[str, Any] = {
            "resolution": spec.resolution,
            "duration": spec.seconds,
        }
        parameters.update(options)
        body = {"model": route.upstream_model, "input": given, "parameters": parameters}
        headers = {"X-DashScope-Async": "enable"}
        return UpstreamRequest(SYNTHESIS, json=body, headers=headers, root=True)

    def build_remix(self, route: Route, upstream_id: str, spec: VideoSpec) -> None:
        return None

    def build_status(self, route: Route, upstream_id: str) -> UpstreamRequest:
        return UpstreamRequest(f"/tasks/{quote(upstream_id, safe='')}", method="GET")

    def build_delete(self, route: Route, upstream_id: str) -> None:
        return None

    def build_content(
        self, route: Route, upstream_id: str, variant: str, headers: dict[str, str]
    ) -> None:
        return None  # the result_url, fetched without the key

    def parse(self, payload: Any, route: Route, now: float) -> UpstreamVideo:
        if not isinstance(payload, dict):
            raise not_a_video(route, "a task")
        output = payload.get("output") if isinstance(payload.get("output"), dict) else {}
        assert isinstance(output, dict)
        task_id = payload.get("task_id") or output.get("task_id") or payload.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise not_a_video(route, "a task id")
        given = payload.get("status") or output.get("task_status") or "submitted"
        status = _STATUS.get(given) if isinstance(given, str) else None
        if status is None:
            raise unknown_status(route, given)
        url = payload.get("result_url") or output.get("video_url")
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        # `duration`: the seconds billed (input video + output); else the seconds made.
        made = usage.get("duration")
        if made is None:
            made = usage.get("output_video_duration", usage.get("video_duration"))
        actual = (
            float(made) if isinstance(made, int | float) and not isinstance(made, bool) else None
        )
        error = None
        if status == "failed":
            raw = payload.get("error")
            if not isinstance(raw, dict) and (output.get("code") or output.get("message")):
                raw = {"code": output.get("code"), "message": output.get("message")}
            error = error_object(raw)
        completed_at = int_or_none(payload.get("completed_at")) if status == "completed" else None
        return UpstreamVideo(
            id=task_id,
            status=status,
            progress=100 if status == "completed" else int_or_none(payload.get("progress")) or 0,
            error=error,
            completed_at=completed_at,
            expires_at=link_expiry(route, completed_at, now) if status == "completed" else None,
            seconds=int(actual) if actual else None,
            result_url=url if isinstance(url, str) and url else None,
            actual_seconds=actual,
        )


DIALECT = DashScopeDialect()

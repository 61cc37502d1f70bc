"""Volcengine Ark's task contract, as the upstream relays it for Seedance 2.x (seedance-2.md):
`POST /seedance/api/v3/contents/generations/tasks` with a `content` array (the prompt as a
`text` item, images / videos as `image_url` / `video_url` items with a `role`), `ratio`,
`resolution`, `duration` (an integer), `generate_audio`, `seed`, `watermark`,
`return_last_frame`; poll `GET .../tasks/{id}` (queued / running / succeeded / failed /
expired); the result at `content.video_url` (signed, about 24 h) or `GET /v1/videos/{id}/content`
on the main host with the key; billed on `usage.completion_tokens`. There is no list (it
answers HTML) and no delete. A remix is an edit: a new task with the source clip as its
`reference_video`. Pure."""

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

TASKS = "/seedance/api/v3/contents/generations/tasks"
_STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "expired": "failed",
}


def _body(route: Route, spec: VideoSpec, content: list[dict[str, Any]]) -> dict[str, Any]:
    ratio = spec.ratio
    if content and route.video is not None and route.video.frame_ratio is not None:
        ratio = route.video.frame_ratio  # a first frame or a source video sets the shape
    body: dict[str, Any] = {
        "model": route.upstream_model,
        "content": [{"type": "text", "text": spec.prompt}, *content],
        "ratio": ratio,
        "resolution": spec.resolution,
        "duration": spec.seconds,
    }
    options = dict(spec.options)
    last_frame = options.pop("last_frame", None)
    if isinstance(last_frame, str):
        body["content"].append(
            {"type": "image_url", "image_url": {"url": last_frame}, "role": "last_frame"}
        )
    body.update(options)
    return body


class ArkDialect:
    def build_create(
        self, route: Route, spec: VideoSpec, reference: Reference | None
    ) -> UpstreamRequest:
        content: list[dict[str, Any]] = []
        if reference is not None:
            image = {"type": "image_url", "image_url": {"url": reference.data_url}}
            content.append({**image, "role": "first_frame"})
        return UpstreamRequest(TASKS, json=_body(route, spec, content), root=True)

    def build_remix(self, route: Route, upstream_id: str, spec: VideoSpec) -> UpstreamRequest:
        """Video editing: the source clip as the new task's reference video."""
        video = {"type": "video_url", "video_url": {"url": spec.source_url}}
        content = [{**video, "role": "reference_video"}]
        return UpstreamRequest(TASKS, json=_body(route, spec, content), root=True)

    def build_status(self, route: Route, upstream_id: str) -> UpstreamRequest:
        return UpstreamRequest(f"{TASKS}/{quote(upstream_id, safe='')}", method="GET", root=True)

    def build_delete(self, route: Route, upstream_id: str) -> UpstreamRequest | None:
        return None  # not offered by the relay: the job is only hidden on our side

    def build_content(
        self, route: Route, upstream_id: str, variant: str, headers: dict[str, str]
    ) -> UpstreamRequest | None:
        if variant != "video":
            return None
        # The "compatibility" download on the main host, with the key (seedance-2.md).
        path = f"/videos/{quote(upstream_id, safe='')}/content"
        return UpstreamRequest(path, method="GET", headers=headers)

    def parse(self, payload: Any, route: Route, now: float) -> UpstreamVideo:
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise not_a_video(route, "a task")
        given = payload.get("status", "queued")  # a create answers with the id alone
        status = _STATUS.get(given) if isinstance(given, str) else None
        if status is None:
            raise unknown_status(route, given)
        content = payload.get("content") if isinstance(payload.get("content"), dict) else {}
        assert isinstance(content, dict)
        url = content.get("video_url")
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        completed_at = int_or_none(payload.get("updated_at")) if status == "completed" else None
        error = None
        if given == "expired":
            error = error_object(
                {
                    "code": "video_expired",
                    "message": "The upstream let the task expire before it finished.",
                }
            )
        elif status == "failed":
            error = error_object(payload.get("error"))
        duration = int_or_none(payload.get("duration"))
        return UpstreamVideo(
            id=payload["id"],
            status=status,
            progress=100 if status == "completed" else 0,
            error=error,
            completed_at=completed_at,
            expires_at=link_expiry(route, completed_at, now) if status == "completed" else None,
            seconds=duration if duration is not None and duration > 0 else None,
            result_url=url if isinstance(url, str) and url else None,
            output_tokens=int_or_none(usage.get("completion_tokens")),
        )


DIALECT = ArkDialect()

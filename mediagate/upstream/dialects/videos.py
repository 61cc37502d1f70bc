"""The video dialects' shared shapes: what every upstream video contract is translated from and
into, and the interface each contract's module implements.

mediagate serves one API (OpenAI's Videos API) over several upstream job contracts: Muse's
Sora-shaped `/v1/videos` (`muse`), Volcengine Ark tasks for Seedance (`ark`) and DashScope tasks
for Wan (`dashscope`). A route names its contract in the catalog (`dialect:`); the service asks
`mediagate.upstream.dialects.video_dialect(route.dialect)` to build each upstream call and to
read each answer into one neutral `UpstreamVideo`, and holds no per-family logic of its own.
Pure: no I/O, no storage records.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from mediagate.catalog import Route
from mediagate.errors import UpstreamError
from mediagate.upstream.dialects import UpstreamRequest

# The statuses a client sees (OpenAI's VideoStatus); each dialect maps its upstream's onto them.
STATUSES = frozenset({"queued", "in_progress", "completed", "failed"})
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class VideoSpec:
    """A create request after the route's policy: every field explicit.

    `size` and `seconds` are what the client is shown (OpenAI's fields; `seconds` an integer, a
    contract that wants text renders it); `ratio` and `resolution` are the size in the route's
    own terms (None where the contract does not use them). `options` are the route-specific
    fields the catalog lets through, validated.
    `source_url`: the clip a remix continues or edits (the source job's result link)."""

    prompt: str
    size: str
    seconds: int
    ratio: str | None = None
    resolution: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    source_url: str | None = None


@dataclass(frozen=True)
class Reference:
    """An input_reference image, already fitted where the route needs exact pixels."""

    data: bytes
    content_type: str  # image/png, image/jpeg or image/webp, from the bytes
    width: int
    height: int

    @property
    def filename(self) -> str:
        return f"input_reference.{_EXTENSIONS[self.content_type]}"

    @property
    def data_url(self) -> str:
        """The image inline, for contracts that take images as URLs in JSON."""
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True)
class UpstreamVideo:
    """One upstream answer about a job, in neutral terms."""

    id: str
    status: str  # one of STATUSES
    progress: int
    error: dict[str, Any] | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    size: str | None = None
    seconds: int | None = None
    # Where the finished video can be fetched without the upstream key (a signed link), if said.
    result_url: str | None = None
    # What the job is billed on, where the contract reports it.
    output_tokens: int | None = None  # Ark: usage.completion_tokens
    actual_seconds: float | None = None  # DashScope: the seconds actually made


class VideoDialect(Protocol):
    """One upstream video contract, both ways. A builder that answers None means the contract
    has no such call (the service then answers from its record, or says it cannot)."""

    def build_create(
        self, route: Route, spec: VideoSpec, reference: Reference | None
    ) -> UpstreamRequest: ...

    def build_remix(
        self, route: Route, upstream_id: str, spec: VideoSpec
    ) -> UpstreamRequest | None: ...

    def build_status(self, route: Route, upstream_id: str) -> UpstreamRequest: ...

    def build_delete(self, route: Route, upstream_id: str) -> UpstreamRequest | None: ...

    def build_content(
        self, route: Route, upstream_id: str, variant: str, headers: dict[str, str]
    ) -> UpstreamRequest | None: ...

    def parse(self, payload: Any, route: Route, now: float) -> UpstreamVideo: ...


# --- Helpers the contracts share ----------------------------------------------------------


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # A float past what an int can hold or not a number (inf, nan) is no count.
    return int(value) if math.isfinite(value) else None


def error_object(value: Any, default_code: str = "video_generation_failed") -> dict[str, Any]:
    """The upstream's error in OpenAI's shape: code and message always strings."""
    given = value if isinstance(value, dict) else {}
    error = {
        "code": str(given.get("code") or default_code),
        "message": str(given.get("message") or "The upstream failed to make the video."),
    }
    for optional in ("param", "type"):
        if isinstance(given.get(optional), str):
            error[optional] = given[optional]
    return error


def not_a_video(route: Route, what: str = "a video object") -> UpstreamError:
    return UpstreamError(
        f"The upstream route {route.id} answered without {what}.", code="bad_upstream_response"
    )


def unknown_status(route: Route, status: Any) -> UpstreamError:
    return UpstreamError(
        f"The upstream route {route.id} reported an unknown video status {status!r}.",
        code="bad_upstream_response",
    )


def link_expiry(route: Route, completed_at: int | None, now: float) -> int | None:
    """When a finished job's result link stops working: the route's link lifetime after it
    finished (catalog data; None where the catalog does not say)."""
    ttl = route.video.link_ttl_s if route.video is not None else None
    if ttl is None:
        return None
    return int(completed_at if completed_at is not None else now) + int(ttl)


def options_for(route: Route, spec: VideoSpec, names: dict[str, str]) -> dict[str, Any]:
    """The spec's route options under the contract's field names (`names`: ours -> theirs)."""
    return {names.get(name, name): value for name, value in spec.options.items()}

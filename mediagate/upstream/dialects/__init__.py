"""Upstream dialects: pure translations between the OpenAI shape and each upstream's shape.

A dialect builds the upstream request for one call of an `ImageSpec` (or a `VideoSpec`) and
reads the upstream's answer back into `UpstreamImage`s. No I/O happens here: sending, timing
and retrying live in `mediagate.upstream.sender`, downloading in `mediagate.upstream.fetcher`,
so each dialect is testable without a network.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mediagate.catalog import Route
from mediagate.imagedata import InputImage, LiftedB64

if TYPE_CHECKING:
    from mediagate.upstream.dialects.videos import VideoDialect


@dataclass
class ImageSpec:
    """What an image dialect needs to build a route's calls: the route's own request, policy
    applied (the image service's `ImagePlan` holds it, with how many calls make `n` and what
    was dropped or mapped on the way)."""

    route: Route
    prompt: str
    params: dict[str, Any]  # upstream fields besides model, prompt and n
    response_format: str  # what the client wants back: "b64_json" or "url"
    ratio: str | None = None  # chat dialect: the ratio marker to append, e.g. "2:3"
    edit: bool = False  # /images/edits rather than /images/generations
    stream: bool = False  # the client wants server-sent events


@dataclass(frozen=True)
class EditImages:
    """An edit's input images. `data_urls` is filled by the caller only for dialects that take
    images inline (`Dialect.inline_images`), so the translation itself reads no files."""

    files: list[InputImage]
    mask: InputImage | None = None
    data_urls: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpstreamRequest:
    """One upstream call, fully described, with no key: the sender adds the key, the timeouts
    and the retries."""

    path: str  # relative to the upstream base URL, e.g. "/images/generations"
    json: dict[str, Any] | None = None
    # multipart instead of JSON: text fields, and (field name, upload) pairs opened at send time
    form: dict[str, str] | None = None
    files: list[tuple[str, InputImage]] = field(default_factory=list)
    method: str = "POST"
    # multipart parts given whole, as httpx2 takes them: (name, (filename or None, bytes, type))
    parts: list[tuple[str, Any]] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    # `path` is relative to the upstream host rather than its API base URL (the base URL without
    # its trailing /v1): contracts mounted beside the OpenAI API, e.g. /seedance/api/v3/...
    root: bool = False


@dataclass(frozen=True)
class UpstreamImage:
    # The base64 as the answer gave it, or lifted out of its bytes already checked (LiftedB64).
    b64: str | LiftedB64 | None = None
    url: str | None = None
    revised_prompt: str | None = None


@dataclass
class UpstreamResult:
    images: list[UpstreamImage]
    usage: dict[str, Any] | None = None
    # Official response keys worth passing on (size, quality, output_format, background).
    extra: dict[str, Any] = field(default_factory=dict)


class Dialect(Protocol):
    inline_images: bool

    def build(self, spec: ImageSpec, n: int, edit: EditImages | None = None) -> UpstreamRequest: ...

    def parse(self, payload: Any) -> UpstreamResult: ...


@functools.cache
def _image_dialects() -> dict[str, Dialect]:
    from mediagate.upstream.dialects import chat, images

    return {"images": images.DIALECT, "chat": chat.DIALECT}


@functools.cache
def _video_dialects() -> dict[str, VideoDialect]:
    from mediagate.upstream.dialects import ark, dashscope, muse

    return {"muse": muse.DIALECT, "ark": ark.DIALECT, "dashscope": dashscope.DIALECT}


def get_dialect(name: str) -> Dialect:
    """The image contract a catalog route names (`dialect:` images or chat)."""
    return _image_dialects()[name]


def video_dialect(name: str) -> VideoDialect:
    """The video contract a catalog route names (`dialect:` muse, ark or dashscope)."""
    return _video_dialects()[name]


def registered() -> tuple[frozenset[str], frozenset[str]]:
    """The names of the image dialects and of the video dialects there are (what the catalog's
    `DIALECTS` and `VIDEO_DIALECTS` must agree with)."""
    return frozenset(_image_dialects()), frozenset(_video_dialects())

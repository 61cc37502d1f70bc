"""Upstream dialects: pure translations between the OpenAI shape and each upstream's shape.

A dialect builds the upstream request for one call of a `Plan` and reads the upstream's answer
back into `UpstreamImage`s. No I/O happens here: sending, timing and retrying live in
`app.upstream`, downloading in `app.fetch`, so each dialect is testable without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..normalize import Plan
from ..uploads import InputImage


@dataclass(frozen=True)
class EditImages:
    """An edit's input images. `data_urls` is filled by the caller only for dialects that take
    images inline (`Dialect.inline_images`), so the translation itself reads no files."""

    files: list[InputImage]
    mask: InputImage | None = None
    data_urls: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpstreamRequest:
    path: str  # relative to the upstream base URL, e.g. "/images/generations"
    json: dict[str, Any] | None = None
    # multipart instead of JSON: text fields, and (field name, upload) pairs opened at send time
    form: dict[str, str] | None = None
    files: list[tuple[str, InputImage]] = field(default_factory=list)


@dataclass(frozen=True)
class UpstreamImage:
    b64: str | None = None
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

    def build(self, plan: Plan, n: int, edit: EditImages | None = None) -> UpstreamRequest: ...

    def parse(self, payload: Any) -> UpstreamResult: ...


def get_dialect(name: str) -> Dialect:
    from . import chat, images

    dialects: dict[str, Dialect] = {"images": images.DIALECT, "chat": chat.DIALECT}
    return dialects[name]

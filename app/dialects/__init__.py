"""Upstream dialects: pure translations between the OpenAI shape and each upstream's shape.

A dialect builds the upstream request for one call of a `Plan` and reads the upstream's answer
back into `UpstreamImage`s. No I/O happens here: sending, timing and retrying live in
`app.upstream`, downloading in `app.fetch`, so each dialect is testable without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..normalize import Plan


@dataclass(frozen=True)
class UpstreamRequest:
    path: str  # relative to the upstream base URL, e.g. "/images/generations"
    json: dict[str, Any]


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
    def build(self, plan: Plan, n: int) -> UpstreamRequest: ...

    def parse(self, payload: Any) -> UpstreamResult: ...


def get_dialect(name: str) -> Dialect:
    from . import chat, images

    dialects: dict[str, Dialect] = {"images": images.DIALECT, "chat": chat.DIALECT}
    return dialects[name]

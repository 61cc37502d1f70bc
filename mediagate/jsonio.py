"""JSON for the large bodies the gateway handles: an image answer is megabytes of base64.

orjson rather than the standard library, for two reasons measured on a 1.4 MB image answer:
Starlette's `JSONResponse` (`json.dumps(ensure_ascii=False)`, then `.encode()`) takes about
3 ms to render it, orjson about 0.05 ms, to the very same bytes; and orjson parses straight
from the bytes read, without first decoding them into a second, same-sized `str`, so a large
answer is held in memory fewer times. Small bodies keep the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send


def loads(data: bytes) -> Any:
    """Parse JSON from bytes (UTF-8, as JSON on the wire is)."""
    return orjson.loads(data)


def _token(value: Any) -> bytes | None:
    """An object's ready JSON (`json_token`, bytes): mediagate.imagedata.LiftedB64, a base64
    image spliced into an answer as the bytes it came as, never a `str`."""
    token = getattr(value, "json_token", None)
    return token if isinstance(token, bytes) else None


def _fragment(value: Any) -> orjson.Fragment:
    token = _token(value)
    if token is None:
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
    return orjson.Fragment(token)


def _text(value: Any) -> str:
    """What the standard library renders for an object with a `json_token` (a JSON string)."""
    token = _token(value)
    if token is None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    text: str = json.loads(token)
    return text


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as httpx2's `json=` sends it and Starlette's JSONResponse renders it.
    An object with a `fragment` (orjson.Fragment) is rendered as that JSON, as is."""
    try:
        return orjson.dumps(value, default=_fragment)
    except orjson.JSONEncodeError:
        # What orjson refuses (integers beyond 64 bits, non-string keys) goes the standard
        # library's way, both callers' own, which also raises for what neither can encode.
        encoded = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_text
        )
        return encoded.encode()


class FastJSONResponse(JSONResponse):
    """`JSONResponse` rendered by orjson: the same compact UTF-8 bytes, much sooner."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


_MARK = b"\x00"  # never in orjson's output: it escapes control characters in strings


def spliced(value: Any) -> list[bytes | memoryview]:
    """`dumps(value)` as pieces: the text around each ready token (an object's `json_piece`: a
    base64 image), and the tokens themselves, uncopied (a view of the upstream's answer; ASGI
    servers write any bytes-like body). Joined, exactly `dumps(value)`."""
    tokens: list[bytes | memoryview] = []

    def mark(item: Any) -> orjson.Fragment:
        piece = getattr(item, "json_piece", None)
        if not isinstance(piece, (bytes, memoryview)):
            raise TypeError(f"Type is not JSON serializable: {type(item).__name__}")
        tokens.append(piece)
        return orjson.Fragment(_MARK)

    try:
        text = orjson.dumps(value, default=mark)
    except orjson.JSONEncodeError:
        return [dumps(value)]
    if not tokens:
        return [text]
    parts = text.split(_MARK)
    pieces: list[bytes | memoryview] = [parts[0]]
    for token, part in zip(tokens, parts[1:], strict=True):
        pieces += [token, part]
    return [piece for piece in pieces if piece]


class SplicedJSONResponse(Response):
    """`FastJSONResponse` for an answer that holds megabytes of ready JSON (base64 images): the
    text around them rendered, and everything sent as pieces, so the images' bytes go to the
    socket as they came from the upstream, never copied into one body. `body` joins them, only
    when asked (an Idempotency-Key keeps the answer)."""

    media_type = "application/json"

    def __init__(
        self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        self._pieces: list[bytes | memoryview] = []  # empty while Starlette sets up: body b""
        pieces = spliced(content)
        sized = {**(headers or {}), "content-length": str(sum(map(len, pieces)))}
        super().__init__(None, status_code, sized)
        self._pieces = pieces

    @property
    def body(self) -> bytes:
        return b"".join(self._pieces)

    @body.setter
    def body(self, value: bytes) -> None:
        """Starlette's render of no content: the pieces are the body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        last = len(self._pieces) - 1
        for index, piece in enumerate(self._pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": index < last})
        if not self._pieces:
            await send({"type": "http.response.body", "body": b""})
        if self.background is not None:
            await self.background()

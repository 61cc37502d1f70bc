"""A simulated video's files: the mp4, its thumbnail and its spritesheet, with Range support.

The mp4 is generated on the fly, chunk by chunk, from the job's id, so any size costs no memory
and tests can recompute the exact bytes they should receive.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
from collections.abc import AsyncIterator, Iterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from PIL import Image

_CHUNK = 64 * 1024
_BLOCK = 64 * 1024  # the repeating body pattern
_FTYP = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_STILLS = {"thumbnail": ("WEBP", "image/webp"), "spritesheet": ("JPEG", "image/jpeg")}


def content_chunks(
    seed: str, total: int, start: int = 0, stop: int | None = None
) -> Iterator[bytes]:
    """Bytes [start, stop) of a deterministic mp4-like file of `total` bytes: an ftyp box, an
    mdat header, then a pattern derived from seed. Made chunk by chunk, never held whole."""
    stop = total if stop is None else min(stop, total)
    mdat = struct.pack(">I", min(max(total - len(_FTYP), 0), 2**32 - 1)) + b"mdat"
    head = (_FTYP + mdat)[:total]
    block = _pattern(seed)
    position = start
    while position < stop:
        want = min(_CHUNK, stop - position)
        if position < len(head):
            piece = head[position : min(len(head), position + want)]
        else:
            offset = position % _BLOCK
            piece = block[offset : offset + want]
        yield piece
        position += len(piece)


@functools.lru_cache(maxsize=64)
def _pattern(seed: str) -> bytes:
    digest = hashlib.sha256(seed.encode()).digest()
    return b"".join(hashlib.sha256(digest + i.to_bytes(4, "big")).digest() for i in range(2048))


@functools.lru_cache(maxsize=16)
def still(size: str, kind: str) -> bytes:
    """A small thumbnail (webp) or a 3x3 spritesheet (jpeg) for a video of this size."""
    width, _, height = size.partition("x")
    frame = (max(1, int(width) // 20), max(1, int(height) // 20))
    image = Image.new("RGB", frame if kind == "WEBP" else (frame[0] * 3, frame[1] * 3), "teal")
    out = io.BytesIO()
    image.save(out, format=kind)
    return out.getvalue()


def _byte_range(header: str | None, total: int) -> tuple[int, int] | str | None:
    """[start, stop) for a single-range Range header; None to serve it all; "unsatisfiable"."""
    match = _RANGE_RE.match(header.strip()) if header else None
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # absent, several ranges or malformed: RFC 9110 allows ignoring it
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = int(last)
        return (max(0, total - suffix), total) if suffix else "unsatisfiable"
    start = int(first)
    stop = min(total, int(last) + 1) if last else total
    if start >= total or stop <= start:
        return "unsatisfiable"
    return start, stop


def file_response(
    request: Request, video_id: str, size: str, content_bytes: int, variant: str
) -> Response:
    """One of a completed video's files, whole or the single range the client asked for."""
    image = b""
    if variant == "video":
        total, media = content_bytes, "video/mp4"
    else:
        kind, media = _STILLS[variant]
        image = still(size, kind)
        total = len(image)
    headers = {"accept-ranges": "bytes", "etag": f'"{video_id}-{variant}"'}
    span = _byte_range(request.headers.get("range"), total)
    if span == "unsatisfiable":
        headers["content-range"] = f"bytes */{total}"
        return Response(status_code=416, headers=headers)
    start, stop = span if isinstance(span, tuple) else (0, total)
    status = 206 if isinstance(span, tuple) else 200
    if status == 206:
        headers["content-range"] = f"bytes {start}-{stop - 1}/{total}"
    headers["content-length"] = str(stop - start)
    if variant != "video":
        return Response(image[start:stop], status_code=status, headers=headers, media_type=media)

    async def body() -> AsyncIterator[bytes]:
        for piece in content_chunks(video_id, total, start, stop):
            yield piece

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=media)

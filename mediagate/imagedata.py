"""Image bytes and base64 as the upstream routes hand them over, made uniform; and the image
files a client uploads, read without copies.

Starlette spools each upload to a temporary file. That file is the only copy: every upstream
call reads it through a reader of its own (`os.pread`, so concurrent calls for n > 1 do not
fight over one file position), and nothing is read into memory unless a dialect needs the bytes
inline (chat completions takes images as data URLs).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from starlette.datastructures import UploadFile

from mediagate.errors import RateLimited, UpstreamError

T = TypeVar("T")

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def repair_b64(value: str) -> str:
    """Standard padded base64 from what some routes return: a `data:` prefix, missing padding,
    or line breaks."""
    value = _DATA_URL.sub("", value.strip(), count=1)
    # Line breaks show at the start or the end; looked for there only, by regex (a generator
    # over the characters cost more than the rest of the repair).
    if _WHITESPACE.search(value, 0, 200) or _WHITESPACE.search(value, max(0, len(value) - 200)):
        value = _WHITESPACE.sub("", value)
    return value + "=" * (-len(value) % 4)


class InvalidImageData(ValueError):
    """Base64 that is not standard base64, or not of an image in a known format."""


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64_HEAD = 64  # characters decoded to sniff the format: 48 bytes, past every magic number
_SVG_HEAD = 1024  # characters decoded to find an SVG's root element: 768 bytes


def checked_b64(value: str) -> tuple[str, str]:
    """`value` repaired (repair_b64) and checked to be standard base64 of an image in a known
    format, without decoding it all: the alphabet and padding of the whole string at C speed
    (bytes.translate deletes the alphabet: anything left is not base64; about 1 ms a MB), its
    head decoded strictly and sniffed. (base64, content type); InvalidImageData otherwise."""
    value = repair_b64(value)
    if not value.isascii():
        raise InvalidImageData("not base64: a character outside ASCII")
    raw = value.encode("ascii")
    if raw.translate(None, _B64_ALPHABET):
        raise InvalidImageData("not base64: a character outside its alphabet")
    padding = raw.find(b"=")
    if (padding != -1 and raw[padding:] not in (b"=", b"==")) or len(raw) % 4:
        raise InvalidImageData("not base64: padding inside the data")
    try:
        head = binascii.a2b_base64(raw[:_B64_HEAD], strict_mode=True)
    except binascii.Error:
        raise InvalidImageData("not base64") from None
    kind = sniff_image_type(head)
    if kind is None and len(raw) > _B64_HEAD:
        # An SVG's `<svg` may come after an XML declaration, a comment or a doctype.
        try:
            kind = sniff_output_type(binascii.a2b_base64(raw[:_SVG_HEAD], strict_mode=True))
        except binascii.Error:
            raise InvalidImageData("not base64") from None
    if kind is None:
        raise InvalidImageData("not an image in a known format")
    return value, kind


def invalid_image(reason: Exception) -> UpstreamError:
    """The error for an upstream image that is not one (the caller marks a paid call's)."""
    return UpstreamError(
        f"The upstream returned an image that is not valid base64 of a PNG, JPEG, WebP, GIF or SVG "
        f"({reason}).",
        code="bad_upstream_response",
    )


# An SVG document's start: an optional BOM, XML declaration, comments and doctype, then <svg.
_SVG_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!DOCTYPE[^>]*>\s*)?<svg[\s>]",
    re.DOTALL,
)
_SVG_SIDE = re.compile(rb"""\s(width|height)\s*=\s*["']\s*([0-9]{1,5})(?:px)?\s*["']""")


def sniff_output_type(data: bytes) -> str | None:
    """`sniff_image_type`, or SVG: what a generated image may be. Never used for what a client
    uploads (an SVG may carry script), only for what a route made."""
    kind = sniff_image_type(data)
    if kind is None and _SVG_START.match(data[:768]):
        return "image/svg+xml"
    return kind


def image_size(head: bytes) -> str | None:
    """An image's WxH from its first bytes: a PNG's IHDR, a GIF's logical screen, an SVG's
    width and height attributes (in its first 768 bytes); None for other formats."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    elif _SVG_START.match(head[:768]):
        root = head[: head.find(b">", head.find(b"<svg")) + 1]
        sides = {name: int(value) for name, value in _SVG_SIDE.findall(root)}
        width, height = sides.get(b"width", 0), sides.get(b"height", 0)
    else:
        return None
    return f"{width}x{height}" if width > 0 and height > 0 else None


def sniff_image_type(data: bytes) -> str | None:
    """The content type from the bytes themselves, never from a name or a header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


class _PositionalReader(io.RawIOBase):
    """A read-only view of a file descriptor with its own position."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, min(len(buffer), max(0, self._size - self._pos)), self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


@dataclass
class InputImage:
    field: str  # "image" or "mask"
    content_type: str  # from the bytes, never from the name
    size: int
    upload: UploadFile

    @property
    def filename(self) -> str:
        return f"{self.field}.{_EXTENSIONS[self.content_type]}"

    def open(self) -> BinaryIO:
        """A fresh reader over the upload (one per upstream request)."""
        # fileno() moves a small in-memory upload to its temporary file, so every reader
        # sees the same single copy.
        reader = _PositionalReader(self.upload.file.fileno(), self.size)
        return io.BufferedReader(reader, buffer_size=256 * 1024)

    def data_url(self) -> str:
        with self.open() as reader:
            encoded = base64.b64encode(reader.read()).decode("ascii")
        return f"data:{self.content_type};base64,{encoded}"


class ImageWork:
    """A small pool of its own for CPU- and memory-heavy image work (decoding and fitting a
    video reference, encoding an edit's images as data URLs), never the event loop's default
    executor, which the SQLite stores and file I/O use: a burst of large images cannot starve
    other tenants' requests. At most `workers` run at once and `queue` more wait; past that a
    request gets a 429 at once (retry shortly) rather than a growing backlog."""

    def __init__(self, workers: int, queue: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mediagate-image")
        self._limit = workers + queue
        self._admitted = 0

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._admitted >= self._limit:
            raise RateLimited(
                "The gateway is busy processing other images; try again in a moment.",
                code="image_work_busy",
                headers={"retry-after": "1"},
            )
        self._admitted += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, functools.partial(work, *args, **kwargs))
        finally:
            self._admitted -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

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
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import orjson
import pybase64
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
        head = binascii.a2b_base64(raw[:_SVG_HEAD], strict_mode=True)
    except binascii.Error:
        raise InvalidImageData("not base64") from None
    # An SVG's `<svg` may come after an XML declaration, a comment or a doctype (and one of
    # _B64_HEAD characters or fewer is no image).
    kind = sniff_image_type(head) or (sniff_output_type(head) if len(raw) > _B64_HEAD else None)
    if kind is None:
        raise InvalidImageData("not an image in a known format")
    return value, kind


# --- Base64 images as bytes -----------------------------------------------------------------
#
# An image answer is megabytes of base64 in a JSON string. Parsed as usual, that string becomes
# a Python `str` (a copy, at orjson's ~2.5 ms a MB), is checked through another copy, and is
# encoded again into the gateway's answer. `loads_lifting` parses the answer with its
# `b64_json` strings lifted out as bytes instead: each is found in the raw answer (a
# memchr-speed search), checked where it lies (decoded by pybase64, SIMD, strictly: the
# alphabet, the padding and the image's head sniffed, the same checks as `checked_b64`), and
# kept where it lies, its quotes included, as a `LiftedB64` (a view, not a copy): JSON ready to
# go into the gateway's own answer (mediagate.jsonio: sent as a piece of its own, or spliced
# as an `orjson.Fragment`) or relay as is. The rest of the answer is parsed by orjson from a
# copy in which each lifted string is a placeholder. A string that fails a check is not
# lifted: it is parsed as a `str` and meets the usual checks (and repairs) downstream, so what
# passes, what is repaired and what is refused is exactly what it was before.

_B64_KEY = b'"b64_json"'
_LIFT_MIN = 64  # characters: the least that holds a sniffable head
_DECODE_CHUNK = 1 << 20  # characters decoded at a time when checking (a multiple of 4)
_SPACE = frozenset(b" \t\r\n")
# Stands for a lifted string in the copy that is parsed; unguessable, so an upstream cannot
# make a string of its own pass for one.
_MARK = f"mediagate-lifted-b64-{secrets.token_hex(12)}-"


class LiftedB64:
    """A checked base64 image out of an upstream answer's bytes: its JSON string token (quotes
    included, pure base64 alphabet: nothing to escape) as a view of the answer's own bytes (no
    copy; the answer is held while the image is), the content type its bytes start with, and
    its first decoded bytes. Rendered into JSON as is (`jsonio`, via `json_piece`)."""

    __slots__ = ("head", "kind", "quoted")

    def __init__(self, quoted: memoryview, kind: str, head: bytes) -> None:
        self.quoted = quoted
        self.kind = kind
        self.head = head

    def __len__(self) -> int:
        return len(self.quoted) - 2  # base64 characters

    def __repr__(self) -> str:
        return f"LiftedB64({self.kind}, {len(self)} characters)"

    @property
    def json_piece(self) -> memoryview:
        """The JSON string as it came, uncopied: a piece of an answer sent in pieces."""
        return self.quoted

    @property
    def json_token(self) -> bytes:
        """The JSON string as it came, as bytes (a copy): spliced into a rendered answer."""
        return bytes(self.quoted)

    def encoded(self) -> memoryview:
        """The base64 characters, without a copy."""
        return self.quoted[1:-1]

    def decode(self) -> bytes:
        """The image's bytes (already checked: this cannot fail)."""
        return pybase64.b64decode(self.encoded(), validate=True)


# An image's content type -> its `output_format` in OpenAI's answer.
FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
}


def checked_image(b64: str | LiftedB64) -> str | LiftedB64:
    """An upstream's base64 image as it is relayed: checked (`checked_b64`; a lifted one was
    checked where it lay). InvalidImageData otherwise."""
    return b64 if isinstance(b64, LiftedB64) else checked_b64(b64)[0]


def image_bytes(b64: str | LiftedB64) -> bytes:
    """An upstream's base64 image decoded, checked. A ValueError (InvalidImageData) otherwise."""
    if isinstance(b64, LiftedB64):
        return b64.decode()  # checked when lifted: SIMD, no str on the way
    return base64.b64decode(checked_b64(b64)[0], validate=True)


def image_head(b64: str | LiftedB64) -> bytes:
    """The first bytes of a checked base64 image: enough for its format and size."""
    if isinstance(b64, LiftedB64):
        return b64.head
    return base64.b64decode(b64[:1024])


def lift_b64(encoded: bytes | memoryview) -> tuple[str, bytes] | None:
    """(content type, first decoded bytes) if `encoded` is standard padded base64 of an image in
    a known format (the checks of `checked_b64`, without its repairs); None otherwise. The whole
    is decoded strictly, a chunk at a time (SIMD: ~0.07 ms a MB, no large allocation)."""
    view = memoryview(encoded)
    size = len(view)
    if size == 0 or size % 4:
        return None
    head = b""
    try:
        for start in range(0, size, _DECODE_CHUNK):
            # Padding is only valid at the very end: a chunk that is not the last and ends in
            # it is refused by the next chunk's decoding or here.
            chunk = pybase64.b64decode(view[start : start + _DECODE_CHUNK], validate=True)
            if not head:
                head = chunk[:768]
            elif view[start - 1] == 0x3D:  # "=" before more data
                return None
    except (binascii.Error, ValueError):
        return None
    kind = sniff_output_type(head)
    return None if kind is None else (kind, head)


# The most an answer may hold besides its lifted images, whatever their size, for the lifting
# to be worth its copy of the rest (see loads_lifting).
_REST_KEPT = 64 * 1024


def loads_lifting(raw: bytes) -> Any:
    """The JSON answer `raw` parsed, its large valid `b64_json` images as `LiftedB64` (see the
    note above); every other value as `orjson.loads` gives it. Raises ValueError for what is
    not JSON, as orjson does."""
    at = raw.find(_B64_KEY)
    if at == -1:
        return orjson.loads(raw)
    pieces: list[bytes] = []
    lifted: list[LiftedB64] = []
    pos = 0
    size = len(raw)
    while at != -1:
        pos = _lifted_at(raw, at, size, pieces, lifted, pos)  # past what it lifted, if any
        at = raw.find(_B64_KEY, max(at + 1, pos))
    if not lifted:
        return orjson.loads(raw)
    images = sum(len(image.quoted) for image in lifted)
    if size - images > max(images, _REST_KEPT):
        # Mostly other bytes (whitespace, text): lifting would copy them (the placeholder
        # copy below) beside the answer, twice the bytes the room for upstream answers counted,
        # to save little: parsed the usual way.
        return orjson.loads(raw)
    pieces.append(raw[pos:])
    payload = orjson.loads(b"".join(pieces))
    if not _restore(payload, lifted):
        return orjson.loads(raw)  # a placeholder where none was put: parsed the usual way
    return payload


def _lifted_at(
    raw: bytes, at: int, size: int, pieces: list[bytes], lifted: list[LiftedB64], pos: int
) -> int:
    """The `"b64_json"` at `at`, if it is an object's key (after `{` or `,`) whose value is a
    large string that checks out as an image: that string lifted (the text before it and its
    placeholder added to `pieces`), and where the text after it starts. `pos` otherwise."""
    i = at - 1
    while i >= 0 and raw[i] in _SPACE:
        i -= 1
    # An unescaped quote right after `{` or `,` cannot be inside a string: a key starts here.
    if i < 0 or raw[i] not in b"{,":
        return pos
    j = at + len(_B64_KEY)
    while j < size and raw[j] in _SPACE:
        j += 1
    if j >= size or raw[j] != 0x3A:  # ":"
        return pos
    j += 1
    while j < size and raw[j] in _SPACE:
        j += 1
    if j >= size or raw[j] != 0x22:  # '"': a string value
        return pos
    start = j + 1
    end = raw.find(b'"', start)
    if end == -1 or end - start < _LIFT_MIN:
        return pos
    # Pure base64 (checked by decoding) has no backslash: `end` is the string's own end.
    found = lift_b64(memoryview(raw)[start:end])
    if found is None:
        return pos
    kind, head = found
    pieces.append(raw[pos:start])
    pieces.append(f"{_MARK}{len(lifted)}".encode())
    lifted.append(LiftedB64(memoryview(raw)[start - 1 : end + 1], kind, head))
    return end


def _restore(payload: Any, lifted: list[LiftedB64]) -> bool:
    """Each placeholder in `payload` replaced by its `LiftedB64`, in place: True if each was
    found once, under a `b64_json` key, and no other string looks like one."""
    found = 0
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str):
                    if item.startswith(_MARK):
                        index = item[len(_MARK) :]
                        if key != "b64_json" or not index.isdigit() or int(index) >= len(lifted):
                            return False
                        value[key] = lifted[int(index)]
                        found += 1
                elif isinstance(item, (dict, list)):
                    stack.append(item)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    if item.startswith(_MARK):
                        return False
                elif isinstance(item, (dict, list)):
                    stack.append(item)
    return found == len(lifted)


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


# A JPEG's start-of-frame markers (SOF0-SOF15 but DHT C4, JPG C8 and DAC CC): a frame header
# with the image's height and width. Markers that stand alone, without a length.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_ALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def _jpeg_sides(head: bytes) -> tuple[int, int] | None:
    """A JPEG's width and height from its frame header, walking the marker segments before it
    within `head` (an EXIF or ICC segment may push it past: then None). Never past `head`."""
    i, size = 2, len(head)
    while i + 4 <= size:
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill bytes before a marker
            i += 1
            continue
        if marker in _JPEG_ALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # the end, or the scan's data: no frame header before it
            return None
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if i + 9 > size:
                return None
            height = int.from_bytes(head[i + 5 : i + 7], "big")
            return int.from_bytes(head[i + 7 : i + 9], "big"), height
        i += 2 + length
    return None


def _webp_sides(head: bytes) -> tuple[int, int] | None:
    """A WebP's width and height from its first chunk: VP8X's canvas, VP8L's bitstream header
    or VP8's key frame header (the first 30 bytes)."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        return width, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


def image_size(head: bytes) -> str | None:
    """An image's WxH from its first bytes: a PNG's IHDR, a GIF's logical screen, a JPEG's
    frame header, a WebP's first chunk, an SVG's width and height attributes (in its first 768
    bytes); None for other formats or one whose sides are not in `head`. What a plain answer
    says as its `size` where the upstream did not (ImageService._described) and a streamed
    answer's completed events say too (images/streaming.py)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    elif head.startswith(b"\xff\xd8\xff") or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        found = _jpeg_sides(head) if head[0] == 0xFF else _webp_sides(head)
        if found is None:
            return None
        width, height = found
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

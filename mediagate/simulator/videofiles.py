"""A simulated video's files: the mp4, its thumbnail and its spritesheet, with Range support.

By default the mp4 is a real clip a browser plays: H.264 (yuv420p) in MP4 with its `moov` box
before `mdat` (what `+faststart` does, so a player starts before the end arrives), as long as
the job's seconds, showing a bar that sweeps across a pattern and the model, size and length.
The pattern is one of a few variants chosen by the job's id, so clips are cached and a test
suite encodes each variant once. Stills are frames of the same clip, drawn, not decoded.

A job that asks for an exact size instead (`[sim:bytes=N]`, or `SimConfig.video_bytes`) gets
N bytes generated chunk by chunk from its id (an ftyp box, an mdat header, then a pattern): any
size costs no memory and tests can recompute the exact bytes they should receive.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import math
import os
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from PIL import Image

from mediagate.simulator.png import card

_CHUNK = 64 * 1024
_BLOCK = 64 * 1024  # the repeating body pattern
_FTYP = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_STILLS = {"thumbnail": ("WEBP", "image/webp"), "spritesheet": ("JPEG", "image/jpeg")}

# The clips: a few looks, at a frame rate that shows motion; encoded no larger than 720p's
# pixels (a 1080p or 4K job gets a clip of its aspect, scaled down: encoding 4K costs seconds a
# clip) and no longer than a minute.
FPS = 12
VARIANTS = 6
_MAX_PIXELS = 1280 * 720
_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Clip:
    """What a completed job's video shows: its look, size, length and the model it names."""

    variant: int
    size: str  # "WxH" as the job asked
    seconds: float
    model: str

    @classmethod
    def of(cls, video_id: str, size: str, seconds: float | str, model: str) -> Clip:
        digest = hashlib.sha256(video_id.encode()).digest()
        return cls(digest[0] % VARIANTS, size, float(seconds), model)

    @property
    def pixels(self) -> tuple[int, int]:
        """The encoded width and height: the job's, or scaled down to fit the pixel budget;
        even, as 4:2:0 chroma needs."""
        width, height = (int(side) for side in self.size.split("x"))
        scale = min(1.0, math.sqrt(_MAX_PIXELS / (width * height)))
        return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)

    @property
    def frames(self) -> int:
        return max(1, round(min(self.seconds, _MAX_SECONDS) * FPS))


# One encode at a time: a player's first few range requests arrive together and would each
# encode the same clip; behind the lock, all but the first find it in the cache.
_ENCODING = threading.Lock()


def mp4(clip: Clip) -> bytes:
    """The clip as an H.264 MP4 (cached: a job's player asks for many ranges of it)."""
    with _ENCODING:
        return _encode(clip)


@functools.lru_cache(maxsize=16)
def _encode(clip: Clip) -> bytes:
    import av  # here: PyAV takes ~0.2 s to import, which only a clip's first encode pays

    width, height = clip.pixels
    background = _planes(_background(clip))
    # The mp4 muxer's +faststart rewrites the file to move moov first, which needs a file.
    handle, path = tempfile.mkstemp(prefix="mediagate-sim-", suffix=".mp4")
    os.close(handle)
    try:
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # Measured on a 12 s 720x1280 clip: veryfast at this quality makes 20-40 KB for
            # ~1 s of CPU (a 4 s 720p clip: ~0.3 s); superfast and ultrafast cost about as
            # much here and make two or three times the bytes. x264's default keyframe interval
            # (250 frames) makes one keyframe per clip under 20 s, most of a clip's bytes. One
            # thread: the machine is shared.
            stream.options = {"preset": "veryfast", "crf": "32"}
            stream.thread_count = 1
            # Said in the stream (H.264's VUI), so players convert back to the same RGB:
            # BT.601 matrix (the one _planes converts with), limited (TV) range.
            context = stream.codec_context
            context.colorspace, context.color_range = _BT601, _TV_RANGE
            context.color_primaries, context.color_trc = _BT601, _BT601
            for index in range(clip.frames):
                frame = av.VideoFrame(width, height, "yuv420p")
                shapes = [(box, _ycbcr(rgb)) for box, rgb in _moving(clip, index)]
                for number, (plane, data) in enumerate(zip(frame.planes, background, strict=True)):
                    pixels = bytearray(data)
                    for box, colour in shapes:
                        _fill(pixels, plane.line_size, box, colour[number], 2 if number else 1)
                    plane.update(bytes(pixels))
                frame.pts = index
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.unlink(path)


def frame_image(clip: Clip, index: int) -> Image.Image:
    """Frame `index` of the clip (from the end if negative) as an RGB image: what its stills
    show."""
    image = _background(clip).copy()
    for (left, top, right, bottom), rgb in _moving(clip, index % clip.frames):
        image.paste(rgb, (left, top, right, bottom))
    return image


Box = tuple[int, int, int, int]  # left, top, right, bottom; even, for 4:2:0 chroma
RGB = tuple[int, int, int]


@functools.lru_cache(maxsize=8)
def _background(clip: Clip) -> Image.Image:
    """What stays: the variant's pattern, a panel naming the model, size and length, and the
    dark track the progress moves along."""
    width, height = clip.pixels
    seconds = f"{clip.seconds:g} s"
    footer = " · ".join(part for part in (clip.model, clip.size, seconds) if part)
    image = card(width, height, f"clip variant {clip.variant}", "Simulated video", footer)
    image.paste((24, 24, 24), _track(clip))
    return image


def _track(clip: Clip) -> Box:
    width, height = clip.pixels
    side = min(width, height)
    margin, thickness = _even(side / 24), max(2, _even(side / 16))
    return margin, height - margin - thickness, width - margin, height - margin


def _moving(clip: Clip, index: int) -> list[tuple[Box, RGB]]:
    """What moves in frame `index`: the track fills left to right over the clip, a block (the
    variant's colour) at its head. Small and along one edge, so frames cost little to encode."""
    left, top, right, bottom = _track(clip)
    block = max(2, _even((right - left) / 16))
    head = left + _even((right - left - block) * index / max(1, clip.frames - 1))
    digest = hashlib.sha256(f"block {clip.variant}".encode()).digest()
    colour = (digest[0] | 0x80, digest[1] | 0x40, digest[2] >> 1)
    filled = ((left, top, head, bottom), (200, 200, 200)) if head > left else None
    return [*([filled] if filled else []), ((head, top, head + block, bottom), colour)]


def _even(value: float) -> int:
    return int(value) // 2 * 2


# FFmpeg's enum values: AVCOL_SPC/PRI/TRC_SMPTE170M (BT.601 525), AVCOL_RANGE_MPEG.
_BT601 = 6
_TV_RANGE = 1


def _luma(value: int) -> int:
    """Full-range (Pillow's JPEG YCbCr) luma to the limited range H.264 players expect."""
    return 16 + (value * 219 + 127) // 255


def _chroma(value: int) -> int:
    return 128 + ((value - 128) * 224 + (127 if value >= 128 else -127)) // 255


@functools.lru_cache(maxsize=32)
def _ycbcr(rgb: RGB) -> RGB:
    y, cb, cr = Image.new("RGB", (1, 1), rgb).convert("YCbCr").getpixel((0, 0))  # type: ignore[misc]
    return _luma(y), _chroma(cb), _chroma(cr)


def _planes(image: Image.Image) -> tuple[bytes, bytes, bytes]:
    """An RGB image as 4:2:0 planes laid out like a yuv420p frame's (rows padded to its line
    size)."""
    import av

    width, height = image.size
    luma, blue, red = image.convert("YCbCr").split()
    luma, blue, red = luma.point(_luma), blue.point(_chroma), red.point(_chroma)
    probe = av.VideoFrame(width, height, "yuv420p")
    planes = []
    for plane, band in zip(probe.planes, (luma, blue.reduce(2), red.reduce(2)), strict=True):
        data, pad = band.tobytes(), plane.line_size - band.width
        if pad:
            rows = (data[row : row + band.width] for row in range(0, len(data), band.width))
            data = (b"\x00" * pad).join(rows) + b"\x00" * pad
        planes.append(data)
    return planes[0], planes[1], planes[2]


def _fill(pixels: bytearray, line_size: int, box: Box, value: int, step: int) -> None:
    """Fill a box (in full-size pixels) of a plane subsampled by step with one value."""
    left, top, right, bottom = (edge // step for edge in box)
    run = bytes((value,)) * (right - left)
    for row in range(top, bottom):
        pixels[row * line_size + left : row * line_size + right] = run


def png_frame(clip: Clip, index: int) -> bytes:
    """Frame `index` of the clip as a PNG of the job's own size (Seedance's last frame)."""
    width, height = (int(side) for side in clip.size.split("x"))
    image = frame_image(clip, index)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return out.getvalue()


@functools.lru_cache(maxsize=16)
def still(clip: Clip, kind: str) -> bytes:
    """The clip's thumbnail (a WebP of its middle frame, a quarter of its size) or its
    spritesheet (a JPEG of 3x3 frames spread over it, each a tenth of its size)."""
    width, height = clip.pixels
    out = io.BytesIO()
    if kind == "WEBP":
        thumb = (max(1, width // 4), max(1, height // 4))
        frame_image(clip, clip.frames // 2).resize(thumb, Image.Resampling.BILINEAR).save(out, kind)
        return out.getvalue()
    tile = (max(1, width // 10), max(1, height // 10))
    sheet = Image.new("RGB", (tile[0] * 3, tile[1] * 3))
    for n in range(9):
        index = (clip.frames - 1) * n // 8
        image = frame_image(clip, index).resize(tile, Image.Resampling.BILINEAR)
        sheet.paste(image, (tile[0] * (n % 3), tile[1] * (n // 3)))
    sheet.save(out, kind)
    return out.getvalue()


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


async def file_response(
    request: Request,
    video_id: str,
    clip: Clip,
    content_bytes: int | None,
    variant: str,
) -> Response:
    """One of a completed video's files, whole or the single range the client asked for: the
    clip's mp4 (or, when the job asked for an exact size, that many generated bytes) or a
    still."""
    data = b""
    if variant == "video":
        media = "video/mp4"
        if content_bytes is None:
            # Off the loop: a new clip takes a fraction of a second to encode.
            data = await asyncio.to_thread(mp4, clip)
        total = len(data) if content_bytes is None else content_bytes
    else:
        kind, media = _STILLS[variant]
        data = await asyncio.to_thread(still, clip, kind)
        total = len(data)
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
    if variant != "video" or content_bytes is None:
        return Response(data[start:stop], status_code=status, headers=headers, media_type=media)

    async def body() -> AsyncIterator[bytes]:
        for piece in content_chunks(video_id, total, start, stop):
            yield piece

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=media)

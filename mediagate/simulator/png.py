"""Real, decodable PNGs built with zlib and struct only, so the gateway needs no Pillow; and
the animated GIFs and SVGs GPT Image 2.6 makes, as small as a real decoder still reads."""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from typing import Literal

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Width and height are 4-byte fields, but PNG caps them at 2**31 - 1.
_MAX_SIDE = 2**31 - 1


def make_png(width: int, height: int, seed: str) -> bytes:
    """Return an 8-bit RGB PNG of exactly width x height, coloured by a hash of seed.

    The colour comes from the seed so two prompts give two different images, which lets
    tests tell apart images that a buggy gateway might have swapped or reused.
    """
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise ValueError(f"PNG size must be positive, got {width}x{height}")
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return _solid_png(width, height, digest[0], digest[1], digest[2])


# A 4K image is ~25 MB of raw scanlines; the cache keeps repeated prompts (retries, n > 1
# with the same seed, the gateway's test suite) from compressing it again. The bound keeps
# memory small, since each entry is only the compressed bytes (a few KB to a few tens of KB).
@functools.lru_cache(maxsize=32)
def _solid_png(width: int, height: int, red: int, green: int, blue: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    # Filter byte 0 (None) then the pixels; every row is identical, so build it once.
    row = b"\x00" + bytes((red, green, blue)) * width
    # Level 1 is plenty: the data is one repeated row and the fast level keeps 4K under ~0.1 s.
    pixels = zlib.compress(row * height, 1)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def make_gif(width: int, height: int, seed: str, frames: int) -> bytes:
    """An animated GIF89a of width x height with `frames` frames, looping, coloured by the seed.

    The canvas (the logical screen) has the full size and the seed's colour as background;
    each frame paints one pixel of its own colour, so the file stays a few hundred bytes at 4K
    while any decoder reads its size and counts its frames.
    """
    if not (0 < width < 2**16 and 0 < height < 2**16 and frames > 0):
        raise ValueError(f"GIF size and frames must be positive, got {width}x{height}x{frames}")
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    # 0x91: a global colour table of 4 entries (2 ** (1 + 1)), colour resolution 2 bits.
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x91, 0, 0) + digest[:12]
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    parts = [screen, loop]
    for frame in range(frames):
        # Graphic control: keep the frame, 20 centiseconds (OpenAI's 200 ms default).
        parts.append(b"\x21\xf9\x04\x04" + struct.pack("<H", 20) + b"\x00\x00")
        parts.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0))
        # LZW, minimum code size 2, 3-bit codes: clear (4), the pixel's colour, end (5).
        codes = 4 | (frame % 4) << 3 | 5 << 6
        parts.append(b"\x02\x02" + codes.to_bytes(2, "little") + b"\x00")
    return b"".join(parts) + b"\x3b"


def make_svg(width: int, height: int, seed: str) -> bytes:
    """An SVG document of width x height filled with the seed's colour."""
    red, green, blue = hashlib.sha256(seed.encode("utf-8")).digest()[:3]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><rect width="{width}" height="{height}" '
        f'fill="#{red:02x}{green:02x}{blue:02x}"/></svg>\n'
    ).encode()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


ImageFormat = Literal["png", "jpeg", "webp"]


def sniff_image_format(data: bytes) -> ImageFormat | None:
    """The format the bytes really are, from their magic numbers (names and labels lie)."""
    if data.startswith(_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def png_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, or None when it has no well-formed one.

    PNG requires IHDR to be the first chunk, so nothing past the first 33 bytes is read.
    """
    if not data.startswith(_SIGNATURE) or len(data) < 33:
        return None
    length, kind = struct.unpack(">I4s", data[8:16])
    if length != 13 or kind != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        return None
    return width, height

"""The simulator's pictures: PNGs that show their request (the prompt's words, the model, the
size) on a pattern drawn from a hash of the seed, so a gallery of them is recognisable and two
prompts give two different images; and the animated GIFs and SVGs GPT Image 2.6 makes, as
small as a real decoder still reads. Also the format and size sniffing the edit routes use."""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import textwrap
import zlib
from typing import Literal
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFont

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Width and height are 4-byte fields, but PNG caps them at 2**31 - 1.
_MAX_SIDE = 2**31 - 1
# The picture is drawn at most this big on its long side, then scaled up (nearest neighbour,
# so flat areas stay flat and compress): text at a sensible scale and a 4K image drawn in ms.
_CANVAS = 1024
# Below this (on the short side of the canvas) there is no room for words: pattern only.
_MIN_TEXT_SIDE = 48


def make_png(width: int, height: int, seed: str, model: str = "") -> bytes:
    """Return an 8-bit RGB PNG of exactly width x height that shows its request.

    The seed is the prompt, maybe followed by NUL-separated marks (`edit`, the image's index;
    see ImageJob.seed): its words are drawn wrapped, with the model (when given), the size and
    the marks, on a background and pattern chosen by a hash of the seed. Two seeds give two
    different images, which lets tests tell apart images a buggy gateway swapped or reused.
    """
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise ValueError(f"PNG size must be positive, got {width}x{height}")
    return _png(width, height, seed, model)


# Each entry is only the compressed bytes (tens to a few hundred KB); the cache keeps repeated
# prompts (retries, partial images of a stream, the gateway's test suite) from drawing and
# compressing a 4K image again.
@functools.lru_cache(maxsize=32)
def _png(width: int, height: int, seed: str, model: str) -> bytes:
    image = picture(width, height, seed, model)
    out = io.BytesIO()
    # A 4K picture is ~25 MB of scanlines, mostly flat colour and rows repeated (PNG's filters
    # make those zeros): zlib's fast level with run-length matching saves a 1024² picture in
    # ~13 ms (~21 ms without) and a 4K one in ~0.1 s at ~50 KB (~130 KB without).
    image.save(out, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return out.getvalue()


def picture(width: int, height: int, seed: str, model: str = "") -> Image.Image:
    """The RGB image make_png encodes."""
    prompt, _, marks = seed.partition("\x00")
    footer = " · ".join(p for p in (model, f"{width}x{height}", *marks.split("\x00")) if p)
    return card(width, height, seed, prompt, footer)


def card(width: int, height: int, pattern: str, headline: str, footer: str) -> Image.Image:
    """An RGB image of width x height: a pattern and colours chosen by a hash of `pattern`,
    and a light panel in the middle with `headline` wrapped and `footer` under it in small
    letters (no panel where the image is too small for words)."""
    scale = min(1.0, _CANVAS / max(width, height))
    canvas = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = _draw(canvas, pattern, headline, footer)
    if canvas != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    return image


def _palette(seed: str) -> tuple[int, tuple[int, int, int], tuple[int, int, int], bytes]:
    """The pattern's kind, its background and foreground colours, and the rest of the hash."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    back = (digest[0], digest[1], digest[2])
    # The foreground: the background's complement, pulled to mid-grey so it is never garish.
    fore = tuple((255 - c + 128) // 2 for c in back)
    return digest[3] % 4, back, (fore[0], fore[1], fore[2]), digest[4:]


def _draw(size: tuple[int, int], pattern: str, headline: str, footer: str) -> Image.Image:
    kind, back, fore, rest = _palette(pattern)
    width, height = size
    image = Image.new("RGB", size, back)
    draw = ImageDraw.Draw(image)
    step = max(4, max(width, height) // (6 + rest[0] % 6))
    if kind == 0:  # diagonal stripes
        for x in range(-height, width + height, 2 * step):
            draw.polygon(
                [(x, 0), (x + step, 0), (x + step - height, height), (x - height, height)], fore
            )
    elif kind == 1:  # circles on a grid
        for y in range(step // 2, height + step, step):
            for x in range(step // 2, width + step, step):
                r = step * (2 + (x * 7 + y * 3 + rest[1]) % 3) // 10
                draw.ellipse((x - r, y - r, x + r, y + r), fore)
    elif kind == 2:  # concentric rings from a corner picked by the hash
        cx, cy = (0 if rest[1] & 1 else width), (0 if rest[1] & 2 else height)
        for r in range(2 * max(width, height) // step * step, 0, -step):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fore if (r // step) % 2 else back)
    else:  # checkerboard
        for y in range(0, height, step):
            for x in range(0, width, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fore)
    if min(width, height) >= _MIN_TEXT_SIDE:
        _caption(draw, size, headline, footer)
    return image


_INK = (17, 17, 17)
_PAPER = (250, 250, 247)
_SMALLEST_FONT = 9


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled DejaVu Sans at `size` pixels (no font files needed, works offline)."""
    return ImageFont.load_default(size=size)


def _caption(draw: ImageDraw.ImageDraw, size: tuple[int, int], prompt: str, footer: str) -> None:
    """The prompt wrapped on a light panel, and the footer (model, size, marks) under it."""
    width, height = size
    margin = max(3, min(width, height) // 16)
    inner = width - 4 * margin
    small = max(_SMALLEST_FONT, min(width, height) // 28)
    room = height - 5 * margin - small * 2  # the panel's room for the prompt's lines
    text = " ".join(prompt.split()) or "(no prompt)"
    if len(text) > 600:  # a panel shows a few hundred characters at most anyway
        text = text[:600] + " …"
    points = max(_SMALLEST_FONT, min(width, height) // 14)
    while True:  # the largest font (down to the smallest) whose lines fit the panel
        face, line_height = font(points), points * 6 // 5
        fits = max(1, room // line_height)
        lines = _wrap(text, face, inner)
        if len(lines) <= fits or points == _SMALLEST_FONT:
            break
        points = max(_SMALLEST_FONT, points * 5 // 6)
    if len(lines) > fits:
        lines = [*lines[: fits - 1], lines[fits - 1] + " …"]
    panel_height = len(lines) * line_height + 2 * margin + small * 2
    top = max(margin, (height - panel_height) // 2)
    draw.rectangle((margin, top, width - margin, top + panel_height), _PAPER)
    y = top + margin
    for line in lines:
        draw.text((2 * margin, y), line, _INK, face)
        y += line_height
    draw.text((2 * margin, y + small // 2), footer, (70, 70, 70), font(small))


def _wrap(text: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """The text's words in lines no wider than `width` pixels (a word longer than a line is
    cut where it must be)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if face.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while face.getlength(word) > width and len(word) > 1:
            cut = max(1, len(word) * width // max(1, int(face.getlength(word))))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return [*lines, line] if line else lines


def make_gif(width: int, height: int, seed: str, frames: int, model: str = "") -> bytes:
    """An animated GIF89a of width x height with `frames` frames, looping: the first is the
    picture make_png draws (in at most 64 colours); each later one repaints a single pixel, so
    the file stays tens of KB at 4K while any decoder reads its size and counts its frames."""
    if not (0 < width < 2**16 and 0 < height < 2**16 and frames > 0):
        raise ValueError(f"GIF size and frames must be positive, got {width}x{height}x{frames}")
    return _gif(width, height, seed, frames, model)


@functools.lru_cache(maxsize=8)
def _gif(width: int, height: int, seed: str, frames: int, model: str) -> bytes:
    prompt, _, marks = seed.partition("\x00")
    footer = " · ".join(p for p in (model, f"{width}x{height}", *marks.split("\x00")) if p)
    scale = min(1.0, _CANVAS / max(width, height))
    canvas = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Quantised small, then scaled: the palette is found on the canvas, not on 4K pixels.
    small = _draw(canvas, seed, prompt, footer)
    indexed = small.quantize(64, Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    indexed.resize((width, height), Image.Resampling.NEAREST).save(out, "GIF")
    data = out.getvalue()
    packed = data[10]
    table = 3 << ((packed & 7) + 1) if packed & 0x80 else 0
    screen, picture = data[6 : 13 + table], _first_image(data, 13 + table)
    colours = table // 3 or 2
    # Graphic control: keep the frame, 20 centiseconds (OpenAI's 200 ms default).
    control = b"\x21\xf9\x04\x04" + struct.pack("<H", 20) + b"\x00\x00"
    parts = [b"GIF89a", screen, b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"]
    parts += [control, picture]
    for frame in range(1, frames):
        parts.append(control + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0))
        # LZW, minimum code size 2, 3-bit codes: clear (4), a colour of the table, end (5).
        codes = 4 | (frame % min(4, colours)) << 3 | 5 << 6
        parts.append(b"\x02\x02" + codes.to_bytes(2, "little") + b"\x00")
    return b"".join(parts) + b"\x3b"


def _first_image(data: bytes, position: int) -> bytes:
    """The bytes of a GIF's first image (descriptor, local table, LZW data), from `position`
    (just past the global colour table), skipping any extension before it."""
    while data[position] == 0x21:  # an extension: label, then sub-blocks to a 0
        position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    if data[position] != 0x2C:
        raise ValueError("no image in the GIF Pillow wrote")
    start, packed = position, data[position + 9]
    position += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0) + 1  # + LZW code size
    while data[position]:
        position += data[position] + 1
    return data[start : position + 1]


def make_svg(width: int, height: int, seed: str, model: str = "") -> bytes:
    """An SVG document of width x height in the seed's colour, saying its prompt, model and
    size (as text elements: a browser wraps nothing, so the prompt is cut to a line)."""
    _, (red, green, blue), _, _ = _palette(seed)
    prompt, _, marks = seed.partition("\x00")
    footer = " · ".join(p for p in (model, f"{width}x{height}", *marks.split("\x00")) if p)
    side = min(width, height)
    big, small = max(1, side // 14), max(1, side // 28)
    words = escape(textwrap.shorten(" ".join(prompt.split()), 60, placeholder=" …"))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><rect width="{width}" height="{height}" '
        f'fill="#{red:02x}{green:02x}{blue:02x}"/>'
        f'<g font-family="DejaVu Sans, sans-serif" fill="#111">'
        f'<rect x="{side // 16}" y="{height // 2 - 2 * big}" width="{width - side // 8}" '
        f'height="{4 * big}" fill="#fafaf7"/>'
        f'<text x="{side // 8}" y="{height // 2}" font-size="{big}">{words}</text>'
        f'<text x="{side // 8}" y="{height // 2 + big + small // 2}" font-size="{small}" '
        f'fill="#464646">{escape(footer)}</text></g></svg>\n'
    ).encode()


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

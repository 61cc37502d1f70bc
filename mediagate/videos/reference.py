"""input_reference: the image a video starts from, checked and fitted to the video's size.

The upstream refuses a reference whose pixels differ from `size`. Rather than pass that refusal
on, the gateway fits the image: scale to cover, centre-crop to exactly `size`, same format.
CPU-bound; callers run it in the gateway's image pool (`mediagate.imagedata.ImageWork`).

Decoding is what costs memory (a 5 KB PNG may declare 6300x6300: 160 MB of pixels), so what is
decoded is capped by what the route can use: `OVERSAMPLE` times the pixels of its largest size
(`decode_cap`). A JPEG is decoded at a reduced scale (Pillow's draft mode: 1/2, 1/4 or 1/8, as
small as still covers the target), so a larger JPEG is fine; any other image whose full size
passes the cap is a 400 `image_too_large` before a pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings

from mediagate.errors import InvalidRequest
from mediagate.imagedata import sniff_image_type
from mediagate.sizes import Size
from mediagate.upstream.dialects.videos import Reference

_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_SAVE_OPTIONS: dict[str, dict[str, int]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
# A reference may have this many times the pixels of the largest size its route makes (room for
# a 4K still, 8.3 MP, on a route whose largest video is 1792x1024, 1.8 MP).
OVERSAMPLE = 5


def decode_cap(sizes: list[str], max_pixels: int) -> int:
    """The most pixels the gateway decodes for a route making `sizes` (WxH)."""
    largest = max(Size.parse(size).area for size in sizes)
    return min(max_pixels, OVERSAMPLE * largest)


def _invalid(message: str, code: str = "invalid_image") -> InvalidRequest:
    return InvalidRequest(message, param="input_reference", code=code)


def too_large(max_bytes: int) -> InvalidRequest:
    return _invalid(
        f"input_reference is larger than the {max_bytes // (1024 * 1024)} MiB the gateway accepts.",
        "file_too_large",
    )


def decode_data_url(url: str, max_bytes: int) -> bytes | None:
    """The bytes of a base64 `data:image/...` URL, or None when url is not one."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    encoded = url[match.end() :]
    if len(encoded) * 3 // 4 > max_bytes:
        raise too_large(max_bytes)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("input_reference.image_url is not valid base64 data.") from None


def inspect(data: bytes, max_pixels: int) -> Reference:
    """The reference's format (from its bytes) and pixel size, or a 400 saying what is wrong."""
    content_type = sniff_image_type(data)
    if content_type not in _PIL_FORMATS:
        raise _invalid(
            "input_reference must be a JPEG, PNG or WebP image"
            + (f", not {content_type}." if content_type else "."),
            "invalid_image_format",
        )
    from PIL import Image  # Pillow is loaded by the first reference, not at start

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ):
        raise _invalid("input_reference is not a readable image.") from None
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    return Reference(data, content_type, width, height)


def _too_many_pixels(width: int, height: int, cap: int) -> InvalidRequest:
    return _invalid(
        f"input_reference is {width}x{height}, more than the {cap} pixels the gateway accepts "
        "for this model.",
        "image_too_large",
    )


def fit(reference: Reference, width: int, height: int, cap: int | None = None) -> Reference:
    """The image scaled to cover width x height and centre-cropped to it, in its own format;
    at most `cap` pixels are decoded (a JPEG is decoded reduced, as small as still covers)."""
    from PIL import Image, ImageOps  # Pillow is loaded by the first reference, not at start

    pil_format = _PIL_FORMATS[reference.content_type]
    try:
        with Image.open(io.BytesIO(reference.data)) as opened:
            if pil_format == "JPEG":
                # Decoded at 1/2, 1/4 or 1/8 scale when that still covers the target.
                scale = max(width / opened.width, height / opened.height)
                cover = (math.ceil(opened.width * scale), math.ceil(opened.height * scale))
                opened.draft(opened.mode, cover)
            if cap is not None and opened.width * opened.height > cap:
                raise _too_many_pixels(reference.width, reference.height, cap)
            opened.seek(0)  # an animated image starts the video with its first frame
            image = ImageOps.exif_transpose(opened)  # as people see it, not as it is stored
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            if image.mode not in ("RGB", "RGBA", "L"):
                image = image.convert("RGBA" if alpha else "RGB")
            fitted = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    except (OSError, SyntaxError, ValueError):
        raise _invalid("input_reference is not a readable image.") from None
    if pil_format == "JPEG" and fitted.mode != "RGB" and fitted.mode != "L":
        fitted = fitted.convert("RGB")  # JPEG has no alpha
    out = io.BytesIO()
    fitted.save(out, format=pil_format, **_SAVE_OPTIONS.get(pil_format, {}))
    return Reference(out.getvalue(), reference.content_type, width, height)


def prepare(
    data: bytes, size: str, *, fitting: bool, max_pixels: int, cap: int | None = None
) -> tuple[Reference, str | None]:
    """The reference to send for a video of `size`, and a note when it was fitted. At most
    `max_pixels` are accepted, and at most `cap` (see `decode_cap`) decoded to fit it."""
    reference = inspect(data, max_pixels)
    target = Size.parse(size)
    if (reference.width, reference.height) == (target.width, target.height):
        return reference, None
    have = f"{reference.width}x{reference.height}"
    if not fitting:
        raise _invalid(
            f"input_reference is {have} but the video's size is {size}; the upstream needs "
            "them equal. Send an image of exactly that size, or allow the gateway to fit it.",
            "invalid_image_size",
        )
    return fit(reference, target.width, target.height, cap=cap), f"input_reference={have}>{size}"

"""Image bytes and base64 as the upstream routes hand them over, made uniform."""

from __future__ import annotations

import re

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

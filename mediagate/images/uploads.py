"""Image files uploaded for edits: parsed from multipart, checked, and forwarded without copies.

Starlette spools each upload to a temporary file. That file is the only copy: every upstream
call reads it through a reader of its own (`os.pread`, so concurrent calls for n > 1 do not
fight over one file position), and nothing is read into memory unless a dialect needs the bytes
inline (chat completions takes images as data URLs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile

from mediagate.errors import InvalidRequest, missing_parameter
from mediagate.imagedata import InputImage, sniff_image_type

MAX_IMAGES = 16
_EDIT_TYPES = ("image/png", "image/jpeg", "image/webp")


@dataclass
class EditInputs:
    images: list[InputImage]
    mask: InputImage | None


def _checked(upload: UploadFile, field: str, max_bytes: int) -> InputImage:
    size = upload.size if upload.size is not None else 0
    if size == 0:
        raise InvalidRequest(f"The uploaded '{field}' file is empty.", param=field)
    if size > max_bytes:
        raise InvalidRequest(
            f"The uploaded '{field}' file is {size} bytes; the limit is {max_bytes} bytes.",
            param=field,
            code="file_too_large",
        )
    upload.file.seek(0)
    kind = sniff_image_type(upload.file.read(16))
    upload.file.seek(0)
    if kind not in _EDIT_TYPES:
        raise InvalidRequest(
            f"The uploaded '{field}' file is not a PNG, JPEG or WebP image.",
            param=field,
            code="invalid_image_format",
        )
    return InputImage(field, kind, size, upload)


def split_form(
    form: FormData, max_file_bytes: int, max_total_bytes: int
) -> tuple[dict[str, Any], EditInputs]:
    """Text fields and checked files from an edits form, as both official SDKs send it:
    `image`, `image[]` or repeated `image` parts, and `mask`."""
    fields: dict[str, Any] = {}
    images: list[InputImage] = []
    mask: InputImage | None = None
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key in fields:
                raise InvalidRequest(f"The field '{key}' was sent more than once.", param=key)
            fields[key] = value
        elif key in ("image", "image[]"):
            images.append(_checked(value, "image", max_file_bytes))
        elif key == "mask" and mask is None:
            mask = _checked(value, "mask", max_file_bytes)
        else:
            raise InvalidRequest(f"Unexpected file field '{key}'.", param=key)
    if not images:
        raise missing_parameter("image", "send one or more image files")
    if len(images) > MAX_IMAGES:
        raise InvalidRequest(f"At most {MAX_IMAGES} images can be edited at once.", param="image")
    total = sum(i.size for i in images) + (mask.size if mask else 0)
    if total > max_total_bytes:
        raise InvalidRequest(
            f"The uploaded files add up to {total} bytes; the limit is {max_total_bytes} bytes.",
            param="image",
            code="file_too_large",
        )
    return fields, EditInputs(images, mask)

"""Image files uploaded for edits: parsed from multipart, checked, and forwarded without copies.

Starlette spools each upload to a temporary file. That file is the only copy: every upstream
call reads it through a reader of its own (`os.pread`, so concurrent calls for n > 1 do not
fight over one file position), and nothing is read into memory unless a dialect needs the bytes
inline (chat completions takes images as data URLs).
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

from starlette.datastructures import FormData, UploadFile

from .errors import InvalidRequest
from .imagedata import sniff_image_type

MAX_IMAGES = 16
_EDIT_TYPES = ("image/png", "image/jpeg", "image/webp")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


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
        raise InvalidRequest(
            "Missing required parameter: 'image' (send one or more image files).",
            param="image",
            code="missing_required_parameter",
        )
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

"""POST /v1/images/edits: the multipart body, its files and its string-typed fields.

Both official SDKs always send this endpoint multipart/form-data, with every text field as a
string ("2", "true"). The rules here are the generation rules plus what only multipart has:
file parts checked by their bytes, and strings that must be exactly what an SDK would send.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from mediagate.simulator.png import png_dimensions, sniff_image_format
from mediagate.simulator.rules import Route, SimError, invalid

MAX_IMAGES = 16
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024

_IMAGE_FIELDS = ("image", "image[]")
_FILE_FIELDS = (*_IMAGE_FIELDS, "mask")
# The official forward takes a mask; the per-call routes take reference images only.
_MASK_ROUTES: tuple[Route, ...] = ("official", "official-2.5", "official-2.6")
_INTEGER_FIELDS = frozenset({"n", "output_compression", "partial_images", "frame_count"})
_BOOLEAN_FIELDS = frozenset({"stream"})
# What str(int) gives: no sign, spaces, leading zeros, decimal point or exponent.
_DECIMAL_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FORMAT_NAMES = "PNG, JPEG or WebP"


@dataclass(frozen=True)
class Upload:
    """One file part, as received."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes

    def record(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }


@dataclass(frozen=True)
class EditForm:
    """The parts of a multipart body in arrival order: text fields, then file parts."""

    texts: list[tuple[str, str]]
    uploads: list[Upload]

    def record(self) -> dict[str, Any]:
        """What Call.body holds: the text fields (a list when one repeats) plus `files`."""
        recorded: dict[str, Any] = {}
        for name, value in self.texts:
            if name not in recorded:
                recorded[name] = value
            elif isinstance(recorded[name], list):
                recorded[name].append(value)
            else:
                recorded[name] = [recorded[name], value]
        recorded["files"] = [upload.record() for upload in self.uploads]
        return recorded

    def text(self, name: str) -> str | None:
        values = [value for key, value in self.texts if key == name]
        return values[0] if len(values) == 1 else None


def is_multipart(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "multipart/form-data"


async def read_edit_form(request: Request) -> EditForm | SimError:
    """Parse the body (already read by the caller), or say why it is not an edit request.

    Returns the error rather than raising it so the caller can still record the call and
    check the token first, in the same order as every other endpoint.
    """
    if not is_multipart(request):
        return invalid("Content-Type must be multipart/form-data.", None, "invalid_content_type")
    try:
        form = await request.form()
    except HTTPException as error:  # Starlette's answer to a malformed multipart body
        return invalid(f"Invalid multipart body: {error.detail}", None, "invalid_multipart")
    try:
        texts: list[tuple[str, str]] = []
        uploads: list[Upload] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                uploads.append(Upload(name, value.filename, value.content_type, data))
            else:
                texts.append((name, value))
    finally:
        await form.close()
    return EditForm(texts, uploads)


def check_form_shape(form: EditForm) -> None:
    """Structural checks that come before routing, like a JSON body that is not an object."""
    for upload in form.uploads:
        if upload.field not in _FILE_FIELDS:
            raise invalid(
                f"Unexpected file part '{upload.field}'; only image, image[] and mask are files.",
                upload.field,
                "unexpected_file",
            )
    for name, _ in form.texts:
        if name in _FILE_FIELDS:
            # A part without a filename arrives as text: the gateway lost the file framing.
            raise invalid(
                f"Invalid type for '{name}': expected a file upload, but got a text field.",
                _param(name),
                "invalid_type",
            )
    seen: set[str] = set()
    for name, _ in form.texts:
        if name in seen:
            raise invalid(f"Invalid '{name}': sent more than once.", name, "duplicate_parameter")
        seen.add(name)


def coerce_fields(form: EditForm) -> dict[str, Any]:
    """The text fields as the JSON values generations would carry, or a 400 for a bad one."""
    body: dict[str, Any] = {}
    for name, value in form.texts:
        if name in _INTEGER_FIELDS:
            if _DECIMAL_RE.fullmatch(value) is None:
                raise _string_type_error(name, "an integer", value)
            body[name] = int(value)
        elif name in _BOOLEAN_FIELDS:
            if value not in ("true", "false"):
                raise _string_type_error(name, "a boolean ('true' or 'false')", value)
            body[name] = value == "true"
        else:
            body[name] = value
    return body


def check_files(route: Route, form: EditForm) -> int:
    """Validate the image and mask parts for this route; returns how many images there are."""
    images = [upload for upload in form.uploads if upload.field in _IMAGE_FIELDS]
    masks = [upload for upload in form.uploads if upload.field == "mask"]
    if not images:
        raise invalid("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len({upload.field for upload in images}) > 1:
        raise invalid(
            "Invalid 'image': send the images either as 'image' parts or as 'image[]' parts, "
            "not both.",
            "image",
        )
    if len(images) > MAX_IMAGES:
        raise invalid(f"Invalid 'image': at most {MAX_IMAGES} images, got {len(images)}.", "image")
    for index, upload in enumerate(images):
        label = f"image[{index}]" if len(images) > 1 else "image"
        _check_image(upload, label, "image", MAX_IMAGE_BYTES)

    if not masks:
        return len(images)
    if route not in _MASK_ROUTES:
        raise invalid(
            "This route does not support 'mask'; use the OpenAI Official group for masked edits.",
            "mask",
            "unsupported_parameter",
        )
    if len(masks) > 1:
        raise invalid("Invalid 'mask': only one mask is allowed.", "mask")
    mask = masks[0]
    mask_format = _check_image(mask, "mask", "mask", MAX_MASK_BYTES)
    if mask_format != "png":
        raise invalid(
            f"Invalid 'mask': must be a PNG, got {mask_format.upper()}.",
            "mask",
            "invalid_image_format",
        )
    first = png_dimensions(images[0].data)
    mask_size = png_dimensions(mask.data)
    if first is not None and mask_size != first:
        raise invalid(
            f"Invalid 'mask': its size {_wxh(mask_size)} must match the first image's "
            f"{_wxh(first)}.",
            "mask",
        )
    return len(images)


def _check_image(upload: Upload, label: str, param: str, max_bytes: int) -> str:
    kind = sniff_image_format(upload.data)
    # By content only: a text file named cat.png labelled image/png is still a text file.
    if kind is None or (kind == "png" and png_dimensions(upload.data) is None):
        raise invalid(
            f"Invalid '{label}' ({upload.filename!r}): not a valid image; "
            f"expected {_FORMAT_NAMES}.",
            param,
            "invalid_image_format",
        )
    if len(upload.data) > max_bytes:
        raise invalid(
            f"Invalid '{label}': {len(upload.data)} bytes is over the "
            f"{max_bytes // (1024 * 1024)} MB limit.",
            param,
            "file_too_large",
        )
    return kind


def _wxh(size: tuple[int, int] | None) -> str:
    return "unknown" if size is None else f"{size[0]}x{size[1]}"


def _param(field: str) -> str:
    return "image" if field in _IMAGE_FIELDS else field


def _string_type_error(name: str, expected: str, value: str) -> SimError:
    return invalid(
        f"Invalid type for '{name}': expected {expected}, but got the string {value!r}.",
        name,
        "invalid_type",
    )

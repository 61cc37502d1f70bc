"""The OpenAI request shapes the gateway accepts, validated before anything goes upstream.

Field names and value sets follow the official SDK (`openai.resources.images`), so whatever the
SDK can send is understood; anything else is a 400 naming the field, never FastAPI's 422.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from mediagate.errors import InvalidRequest


class _ImageRequest(BaseModel):
    # extra="forbid" turns an unknown field into a clear 400, as the OpenAI API does.
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
    quality: Literal["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"] | None = (
        None
    )
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "webp", "jpeg", "gif", "svg"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    frame_count: int | None = Field(default=None, ge=1)
    frame_duration_ms: int | None = Field(default=None, ge=1)
    partial_images: int | None = Field(default=None, ge=0, le=3)
    user: str | None = None
    safety_identifier: str | None = None

    def fields(self) -> dict[str, Any]:
        """The fields the client set, with JSON null treated as absent (the SDK sends null for
        every argument passed as None)."""
        return self.model_dump(exclude_none=True)


class ImageGenerationRequest(_ImageRequest):
    style: Literal["vivid", "natural"] | None = None
    svg: dict[str, Any] | None = None
    stream: StrictBool | None = None


class ImageEditRequest(_ImageRequest):
    """An edit's text fields. They arrive as multipart strings ("2", "true"), which pydantic's
    lax mode turns into numbers and booleans."""

    input_fidelity: Literal["high", "low"] | None = None
    stream: bool | None = None


def _message(err: dict[str, Any], field: str) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"Unknown parameter: '{field}'."
    if kind == "missing":
        return f"Missing required parameter: '{field}'."
    if field == "size" and kind == "string_pattern_mismatch":
        return "Invalid value for 'size': expected 'auto' or WIDTHxHEIGHT, for example 1024x1024."
    detail = str(err.get("msg", "invalid value"))
    return f"Invalid value for '{field}': {detail}."


R = TypeVar("R", bound=_ImageRequest)


def parse_generation(body: Any) -> ImageGenerationRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return _validate(ImageGenerationRequest, body)


def parse_edit(fields: dict[str, Any]) -> ImageEditRequest:
    return _validate(ImageEditRequest, fields)


def _validate(kind: type[R], body: dict[str, Any]) -> R:
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        err = dict(first)
        field = ".".join(str(p) for p in first["loc"]) or None
        code = "unknown_parameter" if err.get("type") == "extra_forbidden" else "invalid_value"
        if err.get("type") == "missing":
            code = "missing_required_parameter"
        raise InvalidRequest(_message(err, field or "body"), param=field, code=code) from None

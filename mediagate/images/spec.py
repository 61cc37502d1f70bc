"""The OpenAI request shapes the gateway accepts, validated before anything goes upstream.

Field names and value sets follow the official SDK (`openai.resources.images`), so whatever the
SDK can send is understood; anything else is a 400 naming the field, never FastAPI's 422.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from mediagate.errors import InvalidRequest

# Every `quality` of the OpenAI Images API (the SDK's ImageGenerateParams).
QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto", "standard", "hd")


class _ImageRequest(BaseModel):
    # extra="forbid" turns an unknown field into a clear 400, as the OpenAI API does.
    model_config = ConfigDict(extra="forbid")
    # Integers are strict (the OpenAI schema says integer): true, "2", 2.0 and non-ASCII
    # digits are a 400, never a number. An edit's multipart text is read as ASCII digits first.

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
    # Checked against the route's own values when planned (mediagate.images.plan), so that an
    # error lists what the route takes, not every quality of the API.
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "webp", "jpeg", "gif", "svg"] | None = None
    output_compression: StrictInt | None = Field(default=None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    frame_count: StrictInt | None = Field(default=None, ge=1)
    frame_duration_ms: StrictInt | None = Field(default=None, ge=1)
    partial_images: StrictInt | None = Field(default=None, ge=0, le=3)
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
    """An edit's text fields. They arrive as multipart strings ("2", "true"): plain ASCII
    digits become integers (`parse_edit`), pydantic's lax mode turns "true" into a boolean."""

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


_INTEGERS = frozenset(
    name
    for name, field in _ImageRequest.model_fields.items()
    if field.annotation == (StrictInt | None)
)


def parse_edit(fields: dict[str, Any]) -> ImageEditRequest:
    # Only ASCII digits are a number: "2", not a full-width or Arabic-Indic 2, "2.0" or "+2"
    # (int() would take them all).
    typed = {
        name: int(value)
        if name in _INTEGERS and isinstance(value, str) and value.isascii() and value.isdigit()
        else value
        for name, value in fields.items()
    }
    return _validate(ImageEditRequest, typed)


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

"""What a client asks of the Videos API, and that request checked against its route's policy
before anything is metered or goes upstream. Pure.

`VideoRequest` is a create as the HTTP layer hands it over (the fields, and input_reference as
uploaded bytes or a link); `plan_video` is its one validation, giving the `VideoSpec` the
upstream is sent. Sizes, durations and prompt lengths are catalog data (`video:` in
catalog.yaml), so a new video model with its own sizes is a YAML change; this module only
applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediagate.catalog import Route, VideoPolicy
from mediagate.errors import InvalidRequest
from mediagate.upstream.dialects.videos import VideoSpec

# What POST /v1/videos takes (input_reference is read separately, it is a file or a link).
CREATE_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})


@dataclass(frozen=True)
class ReferenceInput:
    """What the client gave as input_reference: uploaded bytes or a link (http(s) or data:)."""

    data: bytes | None = None
    image_url: str | None = None


@dataclass(frozen=True)
class VideoRequest:
    """A create as the client sent it: its fields (JSON values or multipart strings, absent
    when null, the model among them), its input_reference if any, and whether the gateway may
    fit a reference of another size to the video's."""

    fields: dict[str, Any] = field(default_factory=dict)
    reference: ReferenceInput | None = None
    fit_reference: bool = True


def _policy(route: Route) -> VideoPolicy:
    assert route.video is not None, "the catalog gives every video route a policy"
    return route.video


def check_prompt(value: Any, route: Route) -> str:
    if value is None:
        raise InvalidRequest(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("Invalid 'prompt': expected a non-empty string.", param="prompt")
    if len(value) > route.max_prompt_chars:
        raise InvalidRequest(
            f"Invalid 'prompt': {len(value)} characters is longer than the "
            f"{route.max_prompt_chars} that model takes.",
            param="prompt",
            code="string_above_max_length",
        )
    return value


def _listing(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def plan_video(
    fields: dict[str, Any], route: Route, model: str, *, reference: bool = False
) -> VideoSpec:
    """The create's fields (JSON values or multipart strings; null means absent; the model
    already resolved) as the route will take them, defaults filled in from the catalog.
    `reference`: the request has an input_reference, which the route must take."""
    unknown = sorted(set(fields) - CREATE_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter"
        )
    policy = _policy(route)
    prompt = check_prompt(fields.get("prompt"), route)

    seconds_value = fields.get("seconds")
    allowed_seconds = [str(s) for s in policy.seconds]
    if seconds_value is None:
        seconds = str(policy.default_seconds)
    elif isinstance(seconds_value, int) and not isinstance(seconds_value, bool):
        seconds = str(seconds_value)
    elif isinstance(seconds_value, str):
        seconds = seconds_value.strip()
    else:
        raise InvalidRequest("Invalid 'seconds': expected a string such as '4'.", param="seconds")
    if seconds not in allowed_seconds:
        raise InvalidRequest(
            f"Invalid value for 'seconds': '{seconds}'. {model} makes "
            f"{_listing(allowed_seconds)} seconds.",
            param="seconds",
            code="invalid_value",
        )

    size = fields.get("size")
    if size is None:
        size = policy.default_size
    if not isinstance(size, str) or size not in policy.sizes:
        shown = size if isinstance(size, str) else type(size).__name__
        raise InvalidRequest(
            f"Invalid value for 'size': '{shown}'. Supported sizes for {model} are "
            f"{_listing(policy.sizes)}.",
            param="size",
            code="invalid_size",
        )
    if reference and not policy.reference:
        raise InvalidRequest(f"{model} does not take an input_reference.", param="input_reference")
    return VideoSpec(prompt=prompt, size=size, seconds=seconds)


def check_remix(body: Any, route: Route) -> str:
    """The prompt of a remix request."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - {"prompt"})
    if unknown:
        raise InvalidRequest(
            f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter"
        )
    return check_prompt(body.get("prompt"), route)

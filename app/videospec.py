"""A video request checked against its route's policy before anything goes upstream. Pure.

Sizes, durations and prompt lengths are catalog data (`video:` in catalog.yaml), so a new video
model with its own sizes is a YAML change; this module only applies them.
"""

from __future__ import annotations

from typing import Any

from .catalog import Route, VideoPolicy
from .dialects.videos import VideoSpec
from .errors import InvalidRequest

# What POST /v1/videos takes (input_reference is read separately, it is a file or a link).
CREATE_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})


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


def plan_video(fields: dict[str, Any], route: Route, model: str) -> VideoSpec:
    """The create's fields (JSON values or multipart strings; null means absent) as the route
    will take them, defaults filled in from the catalog."""
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


def video_cost(route: Route, size: str, seconds: str) -> float | None:
    """USD for a completed video, or None when the catalog has no price for its size."""
    price = _policy(route).price_per_second.get(size)
    if price is None or not seconds.isdigit():
        return None
    return round(price * int(seconds), 6)

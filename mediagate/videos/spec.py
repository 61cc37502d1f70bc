"""What a client asks of the Videos API, and that request checked and mapped onto its route's
policy before anything is metered or goes upstream. Pure.

`VideoRequest` is a create as the HTTP layer hands it over (the fields, and input_reference as
uploaded bytes or a link); `plan_video` is its one validation, giving the `VideoPlan`: the
`VideoSpec` the upstream is sent, and what was mapped or dropped on the way (reported in
x-mediagate-mapped / x-mediagate-dropped). Sizes, durations, options and prompt lengths are
catalog data (`video:` in catalog.yaml), so a new video model is a YAML change; this module only
applies them:

- `size` WxH: a size of the route's table passes; another maps to the nearest ratio, then the
  nearest resolution tier (or the tier the `resolution` option names).
- `seconds`: one the route makes passes; another inside the route's accepted range maps to the
  nearest it makes; outside it is a 400.
- extra body fields: the route's `options`, validated; an option of another video route of the
  catalog is dropped and reported; any other name is a 400 `unknown_parameter`, as on the image
  endpoints and at OpenAI (so x-mediagate-dropped only ever names parameters the catalog knows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mediagate.catalog import Route, VideoOption, VideoPolicy
from mediagate.errors import InvalidRequest, missing_parameter
from mediagate.sizes import NotASize, Size
from mediagate.upstream.dialects.videos import VideoSpec

# The OpenAI fields of POST /v1/videos (input_reference is read separately, it is a file or a
# link). Anything else is a route option or dropped.
CREATE_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})
# The sizes OpenAI's Video object may carry (VideoSize); a video of another size is shown as
# the nearest of these (its real size is in x-mediagate-mapped at create).
OPENAI_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
_OPENAI_SIZES = tuple(Size.parse(size) for size in OPENAI_SIZES)


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


def reference_from_json(value: Any) -> ReferenceInput | None:
    """A JSON create's input_reference (`{"image_url": ...}`), or None."""
    if value is None:
        return None
    url = value.get("image_url") if isinstance(value, dict) else None
    if isinstance(url, str) and url and set(value) == {"image_url"}:
        return ReferenceInput(image_url=url)
    if isinstance(value, dict) and "file_id" in value:
        raise InvalidRequest(
            "input_reference.file_id is not supported here: upload the image as a file, or "
            "give input_reference.image_url.",
            param="input_reference",
            code="unsupported_parameter",
        )
    raise InvalidRequest(
        "Invalid 'input_reference': expected a file, or an object with an image_url.",
        param="input_reference",
    )


@dataclass(frozen=True)
class VideoPlan:
    spec: VideoSpec
    mapped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def video_policy(route: Route) -> VideoPolicy:
    """A video route's policy (catalog data)."""
    assert route.video is not None, "the catalog gives every video route a policy"
    return route.video


def check_prompt(value: Any, route: Route) -> str:
    if value is None:
        raise missing_parameter("prompt")
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


# How much of an unknown parameter's name a message shows.
_SHOWN_NAME_CHARS = 64


def _shown(text: str) -> str:
    """Client text as a message shows it: escaped (no control or non-ASCII character
    survives) and truncated."""
    shown = text[:_SHOWN_NAME_CHARS].encode("ascii", "backslashreplace").decode("ascii")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    if len(text) > _SHOWN_NAME_CHARS:
        shown += "..."
    return shown


def unknown_parameter(name: str, what: str = "parameter") -> InvalidRequest:
    """The 400 for a parameter nobody takes. The name is the client's: shown escaped and
    truncated, in the message and as `param`."""
    shown = _shown(name)
    return InvalidRequest(f"Unknown {what}: '{shown}'.", param=shown, code="unknown_parameter")


def _listing(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def openai_size(size: str) -> str:
    """The size a Video object shows: the video's own if OpenAI's schema has it, else the
    nearest there (`Size.nearest`: ratio first, then area)."""
    if size in OPENAI_SIZES:
        return size
    return str(Size.parse(size).nearest(_OPENAI_SIZES))


def _seconds(value: Any, policy: VideoPolicy, model: str) -> tuple[int, str | None]:
    """The seconds the route makes for the asked value (OpenAI's string, or an integer), and a
    mapping note if it changed."""
    if value is None:
        return policy.default_seconds, None
    if isinstance(value, int) and not isinstance(value, bool):
        asked = value
    elif isinstance(value, str) and value.strip().isdigit():
        asked = int(value.strip())
    else:
        raise InvalidRequest("Invalid 'seconds': expected a string such as '8'.", param="seconds")
    least, most = policy.accept_seconds or (min(policy.seconds), max(policy.seconds))
    if not least <= asked <= most:
        if least == most:  # a fixed-length model (muse-video-20s): nothing maps
            made = f"exactly {least} seconds"
        else:
            made = f"{_listing([str(s) for s in policy.seconds])} seconds (asked values from "
            made += f"{least} to {most} map to the nearest)"
        raise InvalidRequest(
            f"Invalid value for 'seconds': '{asked}'. {model} makes {made}.",
            param="seconds",
            code="invalid_value",
        )
    # The nearest it makes; a tie goes to the longer clip (the client asked for at least that).
    made_seconds = min(policy.seconds, key=lambda s: (abs(s - asked), -s))
    note = None if made_seconds == asked else f"seconds={asked}>{made_seconds}"
    return made_seconds, note


def _size(value: Any, policy: VideoPolicy, model: str, tier: str | None) -> tuple[str, str | None]:
    if value is None:
        size = policy.default_size
        if tier is None or policy.sizes[size].resolution == tier:
            return size, None
        value = size
    try:
        asked = Size.parse(value) if isinstance(value, str) else None
    except NotASize:
        asked = None
    except ValueError:  # WxH with a side of 0
        raise InvalidRequest(f"Invalid value for 'size': '{value}'.", param="size") from None
    if asked is None:
        shown = value if isinstance(value, str) else type(value).__name__
        raise InvalidRequest(
            f"Invalid value for 'size': '{shown}'. Give WxH, e.g. '1280x720'; {model} makes "
            f"{_listing(list(policy.sizes))}.",
            param="size",
            code="invalid_size",
        )
    choices = [s for s, info in policy.sizes.items() if tier is None or info.resolution == tier]
    if str(asked) in choices:
        return str(asked), None
    if not choices:
        raise InvalidRequest(
            f"Invalid value for 'resolution': '{tier}'. {model} makes no video at that tier.",
            param="resolution",
        )
    # Nearest ratio first, then the tier with the nearest area (the asked tier, if one was).
    size = str(asked.nearest([Size.parse(choice) for choice in choices]))
    return size, f"size={asked}>{size}"


def _ids(name: str, value: Any, rule: VideoOption, model: str) -> list[str]:
    """An ids option: a list of ids, or one string of them separated by commas; each one of
    the option's values, one of `alone` only by itself."""
    if isinstance(value, str):
        given = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(part, str) for part in value):
        given = [part.strip() for part in value]
    else:
        given = []
    if not given or not all(given):
        raise InvalidRequest(
            f"Invalid value for '{name}': expected an id, a list of ids, or ids separated by "
            "commas.",
            param=name,
            code="invalid_value",
        )
    allowed = rule.values or []
    unknown = [part for part in given if part not in allowed]
    if unknown:
        raise InvalidRequest(
            f"Invalid value for '{name}': '{_shown(unknown[0])}' is not an id {model} takes. "
            f"It takes {_listing(allowed)}.",
            param=name,
            code="invalid_value",
        )
    lonely = [part for part in given if part in rule.alone]
    if lonely and len(given) > 1:
        raise InvalidRequest(
            f"Invalid value for '{name}': '{lonely[0]}' stands alone; it cannot be combined "
            "with other ids.",
            param=name,
            code="invalid_value",
        )
    return given


def _option(name: str, value: Any, rule: VideoOption, model: str) -> Any:
    def bad(expected: str) -> InvalidRequest:
        return InvalidRequest(
            f"Invalid value for '{name}': expected {expected}.", param=name, code="invalid_value"
        )

    if rule.type == "ids":
        return _ids(name, value, rule, model)

    if rule.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise bad("true or false")
    if rule.type == "int":
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        if (rule.min is not None and value < rule.min) or (
            rule.max is not None and value > rule.max
        ):
            raise bad(f"an integer from {rule.min} to {rule.max}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise bad("a non-empty string")
    if rule.type == "url" and not value.startswith(("http://", "https://", "data:image/")):
        raise bad("an http(s) URL or a data:image/...;base64 URL")
    if rule.values is not None and value not in rule.values:
        raise InvalidRequest(
            f"Invalid value for '{name}': '{_shown(value)}' is not one {model} takes. It takes "
            f"{_listing(rule.values)}.",
            param=name,
            code="invalid_value",
        )
    if rule.max_chars is not None and len(value) > rule.max_chars:
        raise InvalidRequest(
            f"Invalid '{name}': {len(value)} characters is longer than the {rule.max_chars} "
            f"{model} takes.",
            param=name,
            code="string_above_max_length",
        )
    return value


def plan_video(
    fields: dict[str, Any],
    route: Route,
    model: str,
    *,
    known: frozenset[str],
    reference: bool = False,
    defaults: dict[str, Any] | None = None,
) -> VideoPlan:
    """The create's fields (JSON values or multipart strings; null means absent; the model
    already resolved) as the route will take them. `known`: every option of the catalog's video
    routes (`Catalog.video_options`); a field outside them and the OpenAI fields is a 400.
    `reference`: the request has an input_reference, which the route must take. `defaults`:
    fields an alias sets unless the client sent them."""
    policy = video_policy(route)
    # Unknown names first: nothing about a request naming a field nobody takes is looked at.
    unknown = sorted(set(fields) - CREATE_FIELDS - known)
    if unknown:
        raise unknown_parameter(unknown[0])
    given = {**(defaults or {}), **fields}
    prompt = check_prompt(given.get("prompt"), route)
    if reference and not policy.reference:
        raise InvalidRequest(
            f"{model} does not take an input_reference (it makes video from text only).",
            param="input_reference",
        )
    options: dict[str, Any] = {}
    dropped: list[str] = []
    for name in sorted(set(given) - CREATE_FIELDS):
        rule = policy.options.get(name)
        if rule is None:
            if name in fields:  # an alias's default for another successor is not reported
                dropped.append(name)
            continue
        options[name] = _option(name, given[name], rule, model)
    tier = options.pop("resolution", None)
    mapped: list[str] = []
    seconds, note = _seconds(given.get("seconds"), policy, model)
    if note:
        mapped.append(note)
    size, note = _size(given.get("size"), policy, model, tier)
    if note:
        mapped.append(note)
    info = policy.sizes[size]
    spec = VideoSpec(
        prompt=prompt,
        size=size,
        seconds=seconds,
        ratio=info.ratio,
        resolution=info.resolution,
        options=options,
    )
    return VideoPlan(spec, mapped, dropped)


def check_remix(body: Any, route: Route, model: str) -> str:
    """The prompt of a remix request, for a route that can continue or edit a clip."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if video_policy(route).remix == "none":
        raise InvalidRequest(
            f"{model} cannot remix a video: its upstream neither continues nor edits clips. "
            "Create a new video instead.",
            code="remix_unsupported",
        )
    unknown = sorted(set(body) - {"prompt"})
    if unknown:
        raise unknown_parameter(unknown[0])
    return check_prompt(body.get("prompt"), route)

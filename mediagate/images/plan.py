"""Route policy: turn a validated OpenAI request into what one route will accept.

Pure functions, no I/O. An `ImagePlan` is the policy's outcome: the `ImageSpec` the route's
dialect builds its calls from (mediagate.upstream.dialects), how many upstream calls make the
`n` images, the size the images are planned at (what the estimate prices), and what was
dropped or mapped on the way (facts on the request's record, which the headers tell). An
`ImageJob` is one client request planned for its first route, with the routes it may fall
back to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mediagate.catalog import Alias, Catalog, ParamRule, Route, SizeRule
from mediagate.errors import InvalidRequest
from mediagate.images.spec import QUALITIES, ImageEditRequest, ImageGenerationRequest
from mediagate.sizes import Size
from mediagate.upstream.dialects import Dialect, EditImages, ImageSpec

# Fields the gateway itself consumes rather than forwarding as-is.
_HANDLED = frozenset({"model", "prompt", "n", "response_format", "stream", "partial_images"})

# A ratio marker the user already wrote at the end of the prompt, e.g. "…【2:3】".
MARKER_AT_END = re.compile(r"【\s*\d+\s*:\s*\d+\s*】\s*$")


@dataclass
class ImagePlan:
    """A validated request planned for one route (the video side's `VideoPlan`)."""

    spec: ImageSpec  # what the route's dialect builds each call from
    calls: list[int]  # images per upstream call; len(calls) calls run concurrently
    # The size the images are planned at, sent or not (the chat dialect sends only its ratio):
    # what the estimate prices. None: the upstream's choice (auto, absent or dropped).
    size: Size | None = None
    dropped: list[str] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)

    @property
    def route(self) -> Route:
        return self.spec.route


def gif_frames(plan: ImagePlan) -> int:
    """The frames a planned request's images may have: 1, or for an animated GIF its
    `frame_count`, else the most its route's `frame_count` rule allows (the upstream picks
    the count then; the catalog's bound, so the estimate stays an upper bound)."""
    params = plan.spec.params
    if params.get("output_format") != "gif":
        return 1
    asked = params.get("frame_count")
    if isinstance(asked, int) and asked > 0:
        return asked
    bounds = [r.max for r in plan.route.rules if r.field == "frame_count" and r.max is not None]
    return max(bounds, default=1)


@dataclass
class ImageJob:
    """One client request, validated and planned for its route; nothing sent yet."""

    model: str  # the public model name (an alias's successor, when asked by a retired name)
    plan: ImagePlan
    # The catalog the job was planned on: its routes' group multipliers are billed with the
    # routes' prices, whatever a reload puts in force before the job is answered.
    catalog: Catalog
    dialect: Dialect
    request: ImageGenerationRequest | ImageEditRequest  # to plan again for a fallback route
    base_url: str  # where the gateway's own image links point
    edit: EditImages | None = None
    fallbacks: list[Route] = field(default_factory=list)  # the model's routes left, in order
    may_drop: bool = True  # whether a fallback route may drop what the client sent
    first_dropped: frozenset[str] = frozenset()
    alias: Alias | None = None  # the retired name asked for, when its successor serves

    @property
    def route(self) -> Route:
        return self.plan.route


@dataclass
class ImagesResult:
    body: dict[str, Any]  # the OpenAI ImagesResponse
    count: int


def _size_error(size: str, route: Route, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for 'size': '{size}' {why} (route {route.id}).",
        param="size",
        code="invalid_size",
    )


def _check_flexible(size: str, rule: SizeRule, route: Route) -> Size | None:
    """The size, if it is one the rule allows (None for auto)."""
    if size == "auto":
        return None
    planned = Size.parse(size)
    width, height = planned.width, planned.height
    if width % rule.multiple or height % rule.multiple:
        raise _size_error(size, route, f"must have both sides divisible by {rule.multiple}")
    if max(width, height) > rule.max_edge:
        raise _size_error(size, route, f"must have no side longer than {rule.max_edge}")
    if max(width, height) / min(width, height) > rule.max_ratio:
        raise _size_error(size, route, f"must be no more elongated than {rule.max_ratio:g}:1")
    if not rule.min_pixels <= planned.area <= rule.max_pixels:
        raise _size_error(
            size, route, f"must have between {rule.min_pixels} and {rule.max_pixels} pixels"
        )
    return planned


def map_to_table(size: str | None, rule: SizeRule) -> str:
    """An exact table size, or the table size of the nearest ratio with the nearest area."""
    assert rule.default is not None
    if size is None or size == "auto":
        return rule.default
    if any(size in sizes for sizes in rule.table.values()):
        return size
    asked = Size.parse(size)
    tiers = rule.table[asked.nearest_ratio(list(rule.table))]
    return str(asked.nearest([Size.parse(tier) for tier in tiers]))


def _planned(size: str | None) -> Size | None:
    """A request's size (already checked against the request schema: WxH or auto) as a Size;
    None for auto or none."""
    return None if size is None or size == "auto" else Size.parse(size)


def _apply_size(plan: ImagePlan, size: str | None, rule: SizeRule | None) -> None:
    """The size sent (`plan.spec.params`, or the ratio marker of the chat dialect) and the size the
    images are planned at (`plan.size`, what pricing estimates)."""
    route = plan.route
    if rule is None or "size" not in route.accepts:
        if size is not None:
            plan.dropped.append("size")
        return
    if rule.rule == "enum":
        if size is not None and size not in rule.values:
            raise _size_error(size, route, f"is not supported; use one of {', '.join(rule.values)}")
        if size is not None:
            plan.spec.params["size"] = size
            plan.size = _planned(size)
    elif rule.rule == "flexible":
        if size is not None:
            plan.size = _check_flexible(size, rule, route)
            plan.spec.params["size"] = size
    elif rule.rule == "table":
        mapped = map_to_table(size, rule)
        if mapped != size:
            plan.mapped.append(f"size={size or 'default'}>{mapped}")
        plan.spec.params["size"] = mapped
        plan.size = Size.parse(mapped)
    elif rule.rule == "marker":
        if MARKER_AT_END.search(plan.spec.prompt):
            # The user chose a ratio in the prompt already: keep theirs, do not add a second.
            if size is not None:
                plan.dropped.append("size")
        else:
            asked = _planned(size)
            if asked is not None:
                # No size goes upstream, only its ratio: the images are planned at the size
                # asked, which the marker stands for.
                plan.spec.ratio = asked.nearest_ratio(rule.markers)
                plan.size = asked
                plan.mapped.append(f"size={size}>ratio {plan.spec.ratio}")


def _check_combinations(params: dict[str, Any]) -> None:
    fmt = params.get("output_format", "png")
    if "output_compression" in params and fmt not in ("jpeg", "webp"):
        raise InvalidRequest(
            "output_compression is only supported with output_format 'jpeg' or 'webp'.",
            param="output_compression",
        )
    if params.get("background") == "transparent" and fmt not in ("png", "webp"):
        raise InvalidRequest(
            "background 'transparent' needs output_format 'png' or 'webp'.", param="background"
        )


def split_n(n: int, max_n: int) -> list[int]:
    full, rest = divmod(n, max_n)
    return [max_n] * full + ([rest] if rest else [])


def _plan_stream(plan: ImagePlan, fields: dict[str, Any]) -> None:
    if not fields.get("stream"):
        return
    plan.spec.stream = True
    if plan.spec.response_format != "b64_json":
        plan.dropped.append("response_format")  # streamed images are always base64
        plan.spec.response_format = "b64_json"
    if plan.route.stream == "passthrough":
        plan.spec.params["stream"] = True
        if "partial_images" in fields:
            plan.spec.params["partial_images"] = fields["partial_images"]
    elif "partial_images" in fields:
        plan.dropped.append("partial_images")  # only the final image can be sent


def plan_images(
    request: ImageGenerationRequest | ImageEditRequest, route: Route, *, mask: bool = False
) -> ImagePlan:
    """What to send to `route` for a generation, or for an edit (`ImageEditRequest`)."""
    fields = request.fields()
    if len(request.prompt) > route.max_prompt_chars:
        raise InvalidRequest(
            f"prompt is longer than {route.max_prompt_chars} characters.", param="prompt"
        )
    if mask and "mask" not in route.accepts:
        raise InvalidRequest(
            f"The model '{request.model}' (route {route.id}) does not support a mask.",
            param="mask",
            code="unsupported_parameter",
        )
    spec = ImageSpec(
        route=route,
        prompt=request.prompt,
        params={},
        response_format=fields.get("response_format", "b64_json"),
        edit=isinstance(request, ImageEditRequest),
    )
    plan = ImagePlan(spec, calls=split_n(request.n or 1, route.max_n))
    size = fields.pop("size", None)
    for name, value in fields.items():
        if name in _HANDLED:
            continue
        if name not in route.accepts:
            _refused(route, name, value)
            plan.dropped.append(name)
            continue
        allowed = route.values.get(name)
        if allowed is not None and value not in allowed:
            raise InvalidRequest(
                f"Invalid value for '{name}': '{value}' is not supported by route {route.id}; "
                f"use one of {', '.join(allowed)}.",
                param=name,
            )
        plan.spec.params[name] = value
    for rule in route.rules:
        _check_rule(rule, route, fields, n=request.n or 1, edit=spec.edit, mask=mask)
    _apply_size(plan, size, route.size)
    _check_combinations(plan.spec.params)
    _plan_stream(plan, fields)
    return plan


def _refused(route: Route, name: str, value: Any) -> None:
    """A 400 for a field the route does not take and refuses rather than drops (its
    `refuses`), or a `quality` that is no quality at all."""
    refused = route.refuses.get(name)
    if refused == "any" or (refused is not None and value in refused):
        shown = f"'{name}'" if refused == "any" else f"'{name}' {value}"
        raise InvalidRequest(
            f"{shown} is not supported by route {route.id}.",
            param=name,
            code="unsupported_parameter",
        )
    if name == "quality" and value not in QUALITIES:
        raise InvalidRequest(
            f"Invalid value for 'quality': '{value}'; route {route.id} takes no quality.",
            param="quality",
        )


def _check_rule(
    rule: ParamRule, route: Route, fields: dict[str, Any], *, n: int, edit: bool, mask: bool
) -> None:
    """A 400 where the request breaks one of the route's rules (catalog `rules`)."""
    value = fields.get(rule.field)
    if value is None or (rule.value is not None and value != rule.value):
        return
    what = f"'{rule.field}' {value}" if rule.value is not None else f"'{rule.field}'"
    where = f"(route {route.id})"

    def refuse(why: str) -> InvalidRequest:
        return InvalidRequest(f"{what} {why} {where}.", param=rule.field)

    low = rule.min if rule.min is not None else value
    high = rule.max if rule.max is not None else value
    if isinstance(value, int) and not low <= value <= high:
        raise refuse(f"must be between {rule.min} and {rule.max}")
    for other, allowed in rule.only_with.items():
        if fields.get(other) not in allowed:
            raise refuse(f"is only supported with {other} {' or '.join(allowed)}")
    if edit and not rule.edits:
        raise refuse("is not supported on edits, only on generations")
    if fields.get("stream") and not rule.stream:
        raise refuse("cannot be streamed")
    if mask and not rule.mask:
        raise refuse("cannot be used with a mask")
    if rule.max_n is not None and n > rule.max_n:
        raise InvalidRequest(
            f"{what} makes at most {rule.max_n} image{'' if rule.max_n == 1 else 's'} a "
            f"request {where}; n is {n}.",
            param="n",
        )

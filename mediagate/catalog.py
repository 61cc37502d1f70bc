"""The model catalog: public model names, the upstream routes behind them and their policies and
prices, the token groups (former names, price multiplier), and the aliases of retired names.

The catalog is data (`catalog.yaml`, optionally merged with the operator's `MEDIAGATE_CONFIG`);
this module only validates it and answers "which route serves this model".
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import logging
import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mediagate.errors import ModelNotFound

log = logging.getLogger("mediagate")

# The resilience policies a route carries (applied by mediagate.upstream.retry and .breaker).


class Timeouts(BaseModel):
    """Seconds. `connect` and `total` default to MEDIAGATE_UPSTREAM_CONNECT_TIMEOUT_S and
    MEDIAGATE_UPSTREAM_TIMEOUT_S; `status` bounds a free call (until its headers, for a
    download)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: float | None = Field(default=None, gt=0)
    total: float | None = Field(default=None, gt=0)
    status: float = Field(default=10.0, gt=0)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=10)  # paid calls, the first one included
    status_max_attempts: int = Field(default=4, ge=1, le=10)  # free calls
    # Statuses besides 429 and 503 after which this route's upstream is known to have done no
    # work, so even a paid call may be retried.
    on_status: frozenset[int] = frozenset()
    # The first backoff's upper bound, doubled on each retry up to max_backoff_s.
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    # A longer Retry-After is not waited out: the client gets the 429 and its Retry-After.
    max_retry_after_s: float = Field(default=30.0, ge=0)

    @field_validator("on_status")
    @classmethod
    def _error_statuses(cls, value: frozenset[int]) -> frozenset[int]:
        bad = sorted(s for s in value if not 400 <= s <= 599)
        if bad:
            raise ValueError(f"on_status takes HTTP error statuses (400-599), got {bad}")
        return value


class BreakerPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(default=5, ge=1)  # consecutive failed calls that open the breaker
    cooldown_s: float = Field(default=30.0, gt=0)


class SizeRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Literal["enum", "flexible", "table", "marker"]
    values: list[str] = Field(default_factory=list)
    multiple: int = 16
    max_edge: int = 3840
    max_ratio: float = 3.0
    min_pixels: int = 0
    max_pixels: int = 3840 * 2160
    default: str | None = None
    table: dict[str, list[str]] = Field(default_factory=dict)
    markers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> SizeRule:
        if self.rule == "enum" and not self.values:
            raise ValueError("an enum size rule needs values")
        if self.rule == "table" and (not self.table or not self.default):
            raise ValueError("a table size rule needs table and default")
        if self.rule == "marker" and not self.markers:
            raise ValueError("a marker size rule needs markers")
        return self


_WXH = re.compile(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")


class VideoSize(BaseModel):
    """One size a video route makes: its aspect ratio and resolution tier in the upstream's
    terms (None where the contract takes the size itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: str | None = None
    resolution: str | None = None


class VideoOption(BaseModel):
    """A route-specific request field a client may send as an extra body field.

    `ids` is a list of the `values` (the ids the route takes), given as a list or as one
    comma-separated string; a value of `alone` may only be given by itself (Muse's `none`).
    `max_chars` bounds a `string`. `source` and `as_of` say where the values were published:
    an operator adds an id the upstream takes but its pages do not show by overriding
    `values` (MEDIAGATE_CONFIG)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["bool", "int", "string", "url", "ids"]
    values: list[str] | None = None  # allowed values (string and ids options)
    min: int | None = None  # int options
    max: int | None = None
    max_chars: int | None = Field(default=None, ge=1)  # string options
    alone: list[str] = Field(default_factory=list)  # ids that must stand alone
    source: str | None = None
    as_of: date | None = None

    @model_validator(mode="after")
    def _consistent(self) -> VideoOption:
        if self.type == "ids" and not self.values:
            raise ValueError("an ids option needs its values")
        if self.values is not None and self.type not in ("string", "ids"):
            raise ValueError(f"values apply to string and ids options, not {self.type}")
        stray = sorted(set(self.alone) - set(self.values or ()))
        if stray:
            raise ValueError(f"alone names ids that are not values: {stray}")
        if self.max_chars is not None and self.type != "string":
            raise ValueError(f"max_chars applies to string options, not {self.type}")
        return self


Basis = Literal["given", "derived", "bound"]
_RATES = ("without_video", "with_video")


class VideoTokenRate(BaseModel):
    """USD per million output tokens at one resolution, with and without an input video, and
    where each rate comes from: `basis` given (the upstream's page states it), derived (worked
    out from a stated relation, e.g. another route's rate x 0.89) or bound (neither: a rate
    known not to be below the upstream's, e.g. the without-video rate standing for the
    with-video one), as one value for both rates or by rate; `source` says which page or which
    derivation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    without_video: float = Field(ge=0)
    with_video: float = Field(ge=0)
    basis: Basis | dict[str, Basis] | None = None
    source: str | None = None

    @field_validator("basis")
    @classmethod
    def _by_rate(cls, value: Basis | dict[str, Basis] | None) -> Basis | dict[str, Basis] | None:
        if isinstance(value, dict) and set(value) != set(_RATES):
            raise ValueError(f"basis by rate names both {list(_RATES)}, got {sorted(value)}")
        return value

    def basis_of(self, rate: str) -> str | None:
        """given, derived or bound, for `without_video` or `with_video` (None: not said)."""
        return self.basis.get(rate) if isinstance(self.basis, dict) else self.basis


class VideoPrice(BaseModel):
    """How a video route bills, one of: `per_video` (flat, charged at create, refunded on
    failure), `per_second` by resolution tier (settled on the seconds actually made),
    `per_million_output_tokens` by resolution tier (settled from the upstream's usage), with
    `tokens_per_second` by tier: the estimate a budget reserves before the upstream reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_video: float | None = Field(default=None, ge=0)
    per_second: dict[str, float] | None = None
    per_million_output_tokens: dict[str, VideoTokenRate] | None = None
    tokens_per_second: dict[str, int] | None = None
    # Tiers the route makes that have no rate yet (nothing published, nothing derivable): a
    # request for one is refused (400 resolution_not_priced) until the operator gives the tier
    # a rate in a catalog override; a tier with a rate is priced whatever this says.
    not_priced: list[str] = Field(default_factory=list)
    as_of: date | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _one_model(self) -> VideoPrice:
        given = [
            name
            for name in ("per_video", "per_second", "per_million_output_tokens")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(f"a video price needs exactly one price model, got {given}")
        if self.per_million_output_tokens is not None:
            missing = set(self.per_million_output_tokens) - set(self.tokens_per_second or {})
            if missing:
                raise ValueError(f"tokens_per_second lacks the tiers {sorted(missing)}")
        return self


class VideoPolicy(BaseModel):
    """What a video route makes and takes: its sizes (each with the ratio and resolution it
    means upstream) and durations, the defaults the gateway sends explicitly (so cost never
    depends on an upstream default), the extra fields it takes, and how it polls and bills."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sizes: dict[str, VideoSize] = Field(min_length=1)
    seconds: list[int] = Field(min_length=1)
    # The requested durations that map to the nearest of `seconds` (default: from the least to
    # the most of them); outside it is a 400.
    accept_seconds: tuple[int, int] | None = None
    default_size: str
    default_seconds: int
    reference: bool = True  # takes an input_reference image
    # How the reference is sent where the contract distinguishes: the first frame, or a
    # reference image (Wan r2v).
    reference_role: Literal["first_frame", "reference_image"] = "first_frame"
    options: dict[str, VideoOption] = Field(default_factory=dict)
    # The ratio sent instead of the size's when the request carries a first frame or a source
    # video (Seedance 2.5 refuses any other than `adaptive` then: the output follows the input).
    frame_ratio: str | None = None
    # What a remix is on this route: `continue` (a longer clip from the source, which the
    # route's longest duration must exceed), `edit` (a new clip of the source's length from
    # it), or `none` (a 400).
    remix: Literal["none", "continue", "edit"] = "none"
    variants: list[str] = Field(default_factory=lambda: ["video"])  # content variants
    poll_interval_s: float | None = Field(default=None, ge=0)  # None: MEDIAGATE_VIDEO_POLL_AFTER_MS
    link_ttl_s: int | None = Field(default=None, ge=0)  # how long a finished result link lasts
    price: VideoPrice | None = None

    @field_validator("sizes", mode="before")
    @classmethod
    def _size_list(cls, value: Any) -> Any:
        """A plain list of WxH sizes: sizes with no ratio or tier of their own."""
        if isinstance(value, list):
            return {str(size): {} for size in value}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> VideoPolicy:
        bad = [size for size in self.sizes if not _WXH.match(size)]
        if bad:
            raise ValueError(f"video sizes must look like 1280x720, got {bad}")
        if self.default_size not in self.sizes:
            raise ValueError(f"default_size {self.default_size} is not one of the sizes")
        if self.default_seconds not in self.seconds:
            raise ValueError(f"default_seconds {self.default_seconds} is not one of the seconds")
        if self.price is not None:
            tiers = {self.tier(size) for size in self.sizes} - set(self.price.not_priced)
            for name in ("per_second", "per_million_output_tokens"):
                rates = getattr(self.price, name)
                if rates is not None and not tiers <= set(rates):
                    raise ValueError(f"price {name} lacks the tiers {sorted(tiers - set(rates))}")
        return self

    def priced(self, tier: str) -> bool:
        """Whether a video at this price tier has a price: what is not priced is not made
        (never a free, unbudgeted video)."""
        price = self.price
        if price is None:
            return False
        if price.per_video is not None:
            return True
        rates = price.per_second or price.per_million_output_tokens or {}
        return tier in rates

    def tier(self, size: str) -> str:
        """The price tier of a size: its resolution, else (a size the route does not list, or
        one without a resolution) the size itself."""
        info = self.sizes.get(size)
        return (info.resolution if info is not None else None) or size


class TokenPrices(BaseModel):
    """USD per million tokens, by the token classes of the upstream's `usage`
    (`input_tokens_details`, its cached tokens, `output_tokens_details`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_input: float = Field(ge=0)
    cached_text_input: float = Field(ge=0)
    image_input: float = Field(ge=0)
    cached_image_input: float = Field(ge=0)
    image_output: float = Field(ge=0)
    # Where a model reports text output tokens; without a price they bill as image output.
    text_output: float | None = Field(default=None, ge=0)

    @cached_property
    def rates(self) -> dict[str, Decimal]:
        """Per token class, as exact decimals (text output billed as image output unless
        priced); computed once, read by every bill."""
        rates = self.model_dump()
        if rates["text_output"] is None:
            rates["text_output"] = rates["image_output"]
        return {kind: Decimal(str(rate)) for kind, rate in rates.items()}


class TokenEstimate(BaseModel):
    """What bounds a token-priced request's cost before it is sent (the budget reservation, see
    mediagate/accounting/pricing.py); billed only for an answer that reports no usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Output tokens of one image of one megapixel (1024x1024), by quality; other sizes scale
    # with their pixels. A quality not listed (or `auto`, or none) counts as the largest.
    output_tokens_per_mp: dict[str, int] = Field(min_length=1)
    input_tokens_per_image: int = Field(default=6000, ge=0)  # an edit's input image


_LEGACY_TOKEN_FIELDS = ("per_million_input_tokens", "per_million_output_tokens")


class Price(BaseModel):
    """USD prices of an image route; mediagate/accounting/pricing.py applies them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_image: float | None = Field(default=None, ge=0)
    per_call: float | None = Field(default=None, ge=0)
    tokens: TokenPrices | None = None  # per million tokens, by token class
    estimate: TokenEstimate | None = None  # required with `tokens`
    as_of: date | None = None  # the date the source gave the price
    source: str | None = None  # where the price was published

    @model_validator(mode="before")
    @classmethod
    def _legacy_token_fields(cls, data: Any) -> Any:
        """The earlier form, one rate for all input and one for all output tokens
        (`per_million_input_tokens`, `per_million_output_tokens`), as operators' overrides may
        still give it: it replaces the token classes."""
        if not isinstance(data, dict) or not any(k in data for k in _LEGACY_TOKEN_FIELDS):
            return data
        data = dict(data)
        rate_in = data.pop("per_million_input_tokens", None) or 0
        rate_out = data.pop("per_million_output_tokens", None) or 0
        data["tokens"] = {
            "text_input": rate_in,
            "cached_text_input": rate_in,
            "image_input": rate_in,
            "cached_image_input": rate_in,
            "image_output": rate_out,
            "text_output": rate_out,
        }
        return data

    @model_validator(mode="after")
    def _estimable(self) -> Price:
        if self.tokens is not None and self.estimate is None:
            raise ValueError("a token price needs an `estimate` (output_tokens_per_mp)")
        return self


class ParamRule(BaseModel):
    """A condition on one request field of an image route, checked before anything goes
    upstream (a violation is a 400): it applies when the client sends `field` (with the value
    `value`, when given). `min`/`max` bound an integer; `only_with` names the values other
    fields must have alongside it; `edits`, `stream` and `mask` false refuse it on an edit, a
    streamed request, a request with a mask; `max_n` caps the images asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    value: str | None = None
    min: int | None = None
    max: int | None = None
    only_with: dict[str, list[str]] = Field(default_factory=dict)
    edits: bool = True
    stream: bool = True
    mask: bool = True
    max_n: int | None = Field(default=None, ge=1)


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: Literal["image", "video"] = "image"
    upstream_model: str
    group: str
    dialect: str
    accepts: frozenset[str] = frozenset()
    values: dict[str, list[str]] = Field(default_factory=dict)
    # Fields the route does not take that are refused (a 400) instead of dropped, because the
    # client would get something else than it asked for (a PNG for a GIF): field -> the values
    # refused, or `any`. Only fields outside `accepts`.
    refuses: dict[str, list[str] | Literal["any"]] = Field(default_factory=dict)
    rules: list[ParamRule] = Field(default_factory=list)  # conditions on the fields it takes
    size: SizeRule | None = None
    max_n: int = Field(default=1, ge=1, le=10)
    max_prompt_chars: int = 32000
    upstream_response_format: Literal["url", "b64_json"] = "b64_json"
    video: VideoPolicy | None = None  # required for kind video, and only there
    # passthrough: the upstream streams server-sent events and they are relayed as they come;
    # emulate: the gateway sends keep-alives while the route works, then one completed event.
    stream: Literal["passthrough", "emulate"] = "emulate"
    price: Price | None = None  # image routes; video routes price per second in `video`
    # Resilience (upstream/retry.py, upstream/breaker.py): per-call timeouts, when a failed call is
    # tried again, and when the route is skipped for a while.
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    # The most calls the route's upstream takes at once, where its docs state one (None: no
    # bound of its own); past it a call waits in a visible queue (upstream/lanes.py).
    max_concurrent: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _refuses_what_it_does_not_take(self) -> Route:
        both = sorted(set(self.refuses) & self.accepts)
        if both:
            raise ValueError(f"refuses names fields the route accepts: {both}")
        untaken = sorted({rule.field for rule in self.rules} - self.accepts)
        if untaken:
            raise ValueError(f"rules name fields the route does not accept: {untaken}")
        return self


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    routes: list[str] = Field(min_length=1)  # in order: later ones are fallbacks
    # Whether a fallback route may drop parameters the client sent (None: the operator's
    # MEDIAGATE_FALLBACK_MAY_DROP).
    fallback_may_drop: bool | None = None
    owned_by: str = "mediagate"
    created: int = 1_735_689_600  # 2025-01-01; the OpenAI shape requires a timestamp
    # Kept for existing integrations only: the upstream calls the route legacy, and new work
    # should use another model. Shown in /v1/models.
    legacy: bool = False


class Group(BaseModel):
    """An upstream token group, as far as it is more than a name on routes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Earlier names of the group: their key variables (MEDIAGATE_KEY_<OLD NAME>) still work,
    # with a warning at start naming the new one.
    formerly: list[str] = Field(default_factory=list)
    # What the group bills over its routes' prices (the enterprise group: the official price
    # x 1.2). Applies to every route of the group.
    multiplier: float = Field(default=1.0, gt=0)
    source: str | None = None


class Alias(BaseModel):
    """A retired public model name that its successor serves: the request is answered by
    `to` (with its routes and fallbacks) and says so in x-mediagate-alias and in a Deprecation
    header (RFC 9745) dated `retired_on`. With `retired` set, the name is a 404 instead, whose
    message names the successor. Image and video models alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    to: str  # the successor: a model of the catalog
    retired_on: date  # the upstream's retirement date, sent as Deprecation: @<unix seconds>
    link: str | None = None  # where the retirement is documented: Link rel="deprecation"
    retired: str | None = None  # the operator's message: the name is no longer served
    # Successors tried after `to` when this deployment does not offer it (no key for its group).
    fallbacks: list[str] = Field(default_factory=list)
    # Request fields the alias sets for a successor unless the client sent them, by successor
    # (e.g. sora-2-pro asks Seedance for 1080p).
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str | None = None

    def not_served(self, reason: str | None = None) -> ModelNotFound:
        """The 404 of a name that is no longer served, naming the successor."""
        message = reason or self.retired or ""
        if self.to not in message:
            message = f"{message} Use '{self.to}' instead.".strip()
        return ModelNotFound(
            f"The model '{self.name}' was retired on {self.retired_on.isoformat()}: {message}",
            param="model",
        )


DIALECTS = frozenset({"images", "chat", "muse", "ark", "dashscope"})
VIDEO_DIALECTS = frozenset({"muse", "ark", "dashscope"})


class CatalogError(ValueError):
    pass


class Catalog:
    """Models, routes, token groups and aliases, limited to the routes whose group has a key."""

    def __init__(
        self,
        routes: dict[str, Route],
        models: dict[str, Model],
        default_image_model: str,
        default_video_model: str = "muse-video",
        groups: dict[str, Group] | None = None,
        aliases: dict[str, Alias] | None = None,
        video_options: frozenset[str] | None = None,
    ) -> None:
        self.routes = routes
        self.models = models
        self.default_image_model = default_image_model
        self.default_video_model = default_video_model
        self.group_info = groups or {}
        self.aliases = aliases or {}
        # Every option any video route of the whole catalog takes (before a deployment drops
        # the routes it has no key for): a create naming one its route does not take has it
        # dropped and reported; a name outside this set is a 400 unknown_parameter.
        self.video_options = (
            video_options
            if video_options is not None
            else frozenset(
                name
                for route in routes.values()
                if route.video is not None
                for name in route.video.options
            )
        )

    def offered(self, has_key: Callable[[str], bool]) -> Catalog:
        """The catalog as this deployment can serve it: routes whose group has no key are gone,
        and so are video routes with no price (never a free, unbudgeted video), and models
        left with no route. An alias stays: a request for it whose successor is gone is a 404
        naming the successor."""
        routes = {
            rid: r
            for rid, r in self.routes.items()
            if has_key(r.group) and (r.video is None or r.video.price is not None)
        }
        models: dict[str, Model] = {}
        for mid, model in self.models.items():
            usable = [rid for rid in model.routes if rid in routes]
            if usable:
                models[mid] = model.model_copy(update={"routes": usable})
        return Catalog(
            routes,
            models,
            self.default_image_model,
            self.default_video_model,
            self.group_info,
            self.aliases,
            self.video_options,
        )

    def model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
            )
        return model

    def resolve(self, name: str) -> tuple[str, Alias | None]:
        """The model that serves `name`: itself, or an alias's successor (with the alias). A
        retired alias, or one whose successor this deployment does not offer, is a 404 naming
        the successor."""
        alias = self.aliases.get(name)
        if alias is None:
            return name, None
        if alias.retired is not None:
            raise alias.not_served()
        for successor in (alias.to, *alias.fallbacks):
            if successor in self.models:
                return successor, alias
        raise alias.not_served(f"its successor '{alias.to}' is not offered by this deployment.")

    def lookup(self, name: str, kind: str) -> tuple[Model, Route, Alias | None]:
        """The model that serves `name` (after any alias), its first route, and the alias."""
        target, alias = self.resolve(name)
        model = self.model(target)
        route = self.routes[model.routes[0]]
        if route.kind != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise ModelNotFound(
                f"The model '{name}' is not {article} {kind} model.", param="model", status=400
            )
        return model, route, alias

    def route_for(self, name: str, kind: str) -> tuple[Model, Route]:
        model, route, _ = self.lookup(name, kind)
        return model, route

    def groups(self) -> set[str]:
        return {r.group for r in self.routes.values()}

    def multiplier(self, route: Route) -> float:
        """What the route's token group bills over the route's prices."""
        group = self.group_info.get(route.group)
        return group.multiplier if group is not None else 1.0

    def upstream_keys(
        self, keys_of: Callable[[str], list[str]]
    ) -> tuple[dict[str, list[str]], list[tuple[str, str, bool]]]:
        """Every group's upstream keys, from `keys_of(group)`, else from an earlier name of the
        group; and each earlier name whose keys were found, as (old, new, used): used when
        they serve, not when the new name has keys of its own."""
        keys: dict[str, list[str]] = {}
        renamed: list[tuple[str, str, bool]] = []
        for group in sorted(self.groups()):
            found = keys_of(group)
            info = self.group_info.get(group)
            for old in info.formerly if info is not None else []:
                old_keys = keys_of(old)
                if old_keys:
                    renamed.append((old, group, not found))
                    found = found or old_keys
            keys[group] = found
        return keys, renamed


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    # A copy of the parse: whoever reads the data may change it, the cached one must not.
    return copy.deepcopy(_parse_yaml(text, origin))


# libyaml's parser with PyYAML's safe constructor (the same data as yaml.safe_load), when PyYAML
# was built with it: the pure-Python parser took ~90 ms of every cold start on the bundled
# catalog, libyaml's a tenth of that.
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Every gateway start loads the catalog (twice: checking the configuration, then opening the
# gateway), as do `mediagate` commands and the tests, many times a process. The same text
# parses to the same data, so it is parsed once.
@functools.lru_cache(maxsize=8)
def _parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=SAFE_LOADER) or {}  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{origin}: the catalog must be a mapping")
    return data


_SECTIONS = {
    "routes",
    "models",
    "groups",
    "aliases",
    "default_image_model",
    "default_video_model",
}


def _build(data: dict[str, Any]) -> Catalog:
    unknown = set(data) - _SECTIONS
    if unknown:
        raise CatalogError(f"unknown catalog sections: {sorted(unknown)}")
    routes: dict[str, Route] = {}
    models: dict[str, Model] = {}
    groups: dict[str, Group] = {}
    aliases: dict[str, Alias] = {}
    try:
        for rid, spec in (data.get("routes") or {}).items():
            routes[rid] = Route(id=rid, **spec)
        for mid, spec in (data.get("models") or {}).items():
            models[mid] = Model(id=mid, **spec)
        for name, spec in (data.get("groups") or {}).items():
            groups[name] = Group(**spec)
        for name, spec in (data.get("aliases") or {}).items():
            aliases[name] = Alias(name=name, **spec)
    except (ValidationError, TypeError) as exc:
        raise CatalogError(f"invalid catalog: {exc}") from exc
    for route in routes.values():
        if route.dialect not in DIALECTS:
            raise CatalogError(f"route {route.id}: unknown dialect {route.dialect!r}")
        # A video route is a video dialect with a video policy; nothing else has either.
        video = route.kind == "video"
        if video != (route.dialect in VIDEO_DIALECTS) or video != (route.video is not None):
            raise CatalogError(
                f"route {route.id}: a video route needs a video dialect "
                f"({', '.join(sorted(VIDEO_DIALECTS))}) and a video policy, and only a video "
                "route may have them"
            )
    for model in models.values():
        missing = [rid for rid in model.routes if rid not in routes]
        if missing:
            raise CatalogError(f"model {model.id}: unknown routes {missing}")
    for alias in aliases.values():
        if alias.name in models:
            raise CatalogError(f"alias {alias.name}: a model has that name too")
        for successor in (alias.to, *alias.fallbacks):
            if successor not in models:
                raise CatalogError(
                    f"alias {alias.name}: its successor {successor!r} is not a model"
                )
    default = str(data.get("default_image_model") or "")
    if default and default not in models:
        raise CatalogError(f"default_image_model {default!r} is not a model")
    default_video = str(data.get("default_video_model") or "muse-video")
    if default_video not in models and default_video not in aliases:
        raise CatalogError(f"default_video_model {default_video!r} is not a model")
    return Catalog(routes, models, default, default_video, groups, aliases)


def load_catalog(override: Path | None = None) -> Catalog:
    """The bundled catalog, merged with the operator's YAML file when one is given."""
    text = importlib.resources.files("mediagate").joinpath("catalog.yaml").read_text("utf-8")
    data = _read_yaml(text, "catalog.yaml")
    if override is not None:
        try:
            override_text = override.read_text("utf-8")
        except OSError as exc:
            raise CatalogError(f"cannot read MEDIAGATE_CONFIG {override}: {exc}") from exc
        data = _merge(data, _read_yaml(override_text, str(override)))
    return _build(data)


class CatalogHolder:
    """The one place the gateway keeps its catalog: every use case reads `current` per request,
    so a reload (SIGHUP, `reload`) swaps it for new requests at once and no service keeps a
    stale copy. Work already started keeps what it started with: a request holds its `Route`
    objects to its end, a video job its route's snapshot (`route_snapshot`)."""

    def __init__(self, catalog: Catalog) -> None:
        self.current = catalog

    def swap(self, catalog: Catalog) -> Catalog:
        """Put `catalog` in force for new requests; the one it replaces."""
        old, self.current = self.current, catalog
        return old


def route_snapshot(route: Route, multiplier: float) -> str:
    """A route as a job started on it, with its group's multiplier: kept on the job's record so
    that polling, content and the bill use the route and price the job started with, whatever
    the catalog says later (a reload, another replica's catalog, a restart)."""
    return json.dumps(
        {"route": route.model_dump(mode="json"), "multiplier": multiplier},
        separators=(",", ":"),
        sort_keys=True,
    )


@functools.lru_cache(maxsize=256)
def from_snapshot(snapshot: str) -> tuple[Route, float] | None:
    """The route and multiplier of `route_snapshot`'s text (the same text, parsed once; None,
    logged once, for one this version cannot read: a field it needs was not written).

    Read leniently: a snapshot written by another version (a field added to `Route` by a newer
    replica in a rolling deploy, or one removed since) keeps what this version knows, so a
    running job is still polled and billed on the route and price it started with."""
    try:
        data = json.loads(snapshot)
        return Route.model_validate(_known(Route, data["route"])), float(data["multiplier"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(
            "video route snapshot unreadable: its job goes by the catalog's route",
            extra={"fields": {"error": str(exc)[:200]}},
        )
        return None


def _known(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` (and the models of its fields, where a field is one
    model or an optional one) does not have."""
    if not isinstance(data, dict):
        return data
    known: dict[str, Any] = {}
    for name, value in data.items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        kinds = [field.annotation]
        if get_origin(field.annotation) in (Union, UnionType):  # an optional model
            kinds = list(get_args(field.annotation))
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        known[name] = _known(nested[0], value) if nested else value
    return known

"""The model catalog: public model names, the upstream routes behind them, and their policies.

The catalog is data (`catalog.yaml`, optionally merged with the operator's `MEDIAGATE_CONFIG`);
this module only validates it and answers "which route serves this model".
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mediagate.errors import ModelNotFound

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


class VideoPolicy(BaseModel):
    """What a video route makes: its sizes and durations, the defaults the gateway sends
    explicitly (so cost never depends on an upstream default), and the price per second."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sizes: list[str] = Field(min_length=1)
    seconds: list[int] = Field(min_length=1)
    default_size: str
    default_seconds: int
    reference: bool = True  # takes an input_reference image
    # USD per second of video, by size; issue 5's billing reads it. A size without a price is
    # recorded with an unknown cost.
    price_per_second: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> VideoPolicy:
        bad = [size for size in self.sizes if not _WXH.match(size)]
        if bad:
            raise ValueError(f"video sizes must look like 1280x720, got {bad}")
        if self.default_size not in self.sizes:
            raise ValueError(f"default_size {self.default_size} is not one of the sizes")
        if self.default_seconds not in self.seconds:
            raise ValueError(f"default_seconds {self.default_seconds} is not one of the seconds")
        unknown = set(self.price_per_second) - set(self.sizes)
        if unknown:
            raise ValueError(f"price_per_second names sizes the route lacks: {sorted(unknown)}")
        return self


class Price(BaseModel):
    """USD prices of an image route; see app/pricing.py for how they are applied."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_image: float | None = Field(default=None, ge=0)
    per_call: float | None = Field(default=None, ge=0)
    per_million_input_tokens: float | None = Field(default=None, ge=0)
    per_million_output_tokens: float | None = Field(default=None, ge=0)


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: Literal["image", "video"] = "image"
    upstream_model: str
    group: str
    dialect: str
    accepts: frozenset[str] = frozenset()
    values: dict[str, list[str]] = Field(default_factory=dict)
    size: SizeRule | None = None
    max_n: int = Field(default=1, ge=1, le=10)
    max_prompt_chars: int = 32000
    upstream_response_format: Literal["url", "b64_json"] = "b64_json"
    video: VideoPolicy | None = None  # required for kind video, and only there
    # passthrough: the upstream streams server-sent events and they are relayed as they come;
    # emulate: the gateway sends keep-alives while the route works, then one completed event.
    stream: Literal["passthrough", "emulate"] = "emulate"
    price: Price | None = None  # image routes; video routes price per second in `video`
    # Resilience (app/retry.py, app/breaker.py): per-call timeouts, when a failed call is
    # tried again, and when the route is skipped for a while.
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    routes: list[str] = Field(min_length=1)  # in order: later ones are fallbacks
    # Whether a fallback route may drop parameters the client sent (None: the operator's
    # MEDIAGATE_FALLBACK_MAY_DROP).
    fallback_may_drop: bool | None = None
    owned_by: str = "mediagate"
    created: int = 1_735_689_600  # 2025-01-01; the OpenAI shape requires a timestamp


DIALECTS = frozenset({"images", "chat", "videos"})


class CatalogError(ValueError):
    pass


class Catalog:
    """Models and routes, limited to the routes whose token group has a key."""

    def __init__(
        self,
        routes: dict[str, Route],
        models: dict[str, Model],
        default_image_model: str,
        default_video_model: str = "sora-2",
    ) -> None:
        self.routes = routes
        self.models = models
        self.default_image_model = default_image_model
        self.default_video_model = default_video_model

    def offered(self, has_key: Callable[[str], bool]) -> Catalog:
        """The catalog as this deployment can serve it: routes whose group has no key are gone,
        and so are models left with no route."""
        routes = {rid: r for rid, r in self.routes.items() if has_key(r.group)}
        models: dict[str, Model] = {}
        for mid, model in self.models.items():
            usable = [rid for rid in model.routes if rid in routes]
            if usable:
                models[mid] = model.model_copy(update={"routes": usable})
        return Catalog(routes, models, self.default_image_model, self.default_video_model)

    def model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
            )
        return model

    def route_for(self, name: str, kind: str) -> tuple[Model, Route]:
        model = self.model(name)
        route = self.routes[model.routes[0]]
        if route.kind != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise ModelNotFound(
                f"The model '{name}' is not {article} {kind} model.", param="model", status=400
            )
        return model, route

    def groups(self) -> set[str]:
        return {r.group for r in self.routes.values()}


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
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{origin}: the catalog must be a mapping")
    return data


def _build(data: dict[str, Any]) -> Catalog:
    unknown = set(data) - {"routes", "models", "default_image_model", "default_video_model"}
    if unknown:
        raise CatalogError(f"unknown catalog sections: {sorted(unknown)}")
    routes: dict[str, Route] = {}
    models: dict[str, Model] = {}
    try:
        for rid, spec in (data.get("routes") or {}).items():
            routes[rid] = Route(id=rid, **spec)
        for mid, spec in (data.get("models") or {}).items():
            models[mid] = Model(id=mid, **spec)
    except (ValidationError, TypeError) as exc:
        raise CatalogError(f"invalid catalog: {exc}") from exc
    for route in routes.values():
        if route.dialect not in DIALECTS:
            raise CatalogError(f"route {route.id}: unknown dialect {route.dialect!r}")
        # A video route is the videos dialect with a video policy; nothing else has either.
        video = route.kind == "video"
        if video != (route.dialect == "videos") or video != (route.video is not None):
            raise CatalogError(
                f"route {route.id}: a video route needs dialect 'videos' and a video policy, "
                "and only a video route may have them"
            )
    for model in models.values():
        missing = [rid for rid in model.routes if rid not in routes]
        if missing:
            raise CatalogError(f"model {model.id}: unknown routes {missing}")
    default = str(data.get("default_image_model") or "")
    default_video = str(data.get("default_video_model") or "sora-2")
    return Catalog(routes, models, default, default_video)


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

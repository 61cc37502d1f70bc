"""The catalog against what the upstream sells now: `GET /v1/models` once per token group.

The reseller runs a new-api relay, whose `/v1/models` lists the models of the calling token's
group (`{"object": "list", "data": [{"id", "object": "model", "owned_by", ...}]}`, with
`supported_endpoint_types` in new-api's own shape). `check` asks it once per group that has a
key, through the one sender (a free call on any key of the group), and `compare` reads the
answers against the catalog:

- a route whose upstream model its group no longer lists is *retired* (the gauge
  `mediagate_catalog_route_listed{route}` 0, a warning when it disappears, exit 1 for
  `mediagate catalog check`);
- an image or video model a group lists that no route of that group uses is *new* (said, not
  an error). Chat models (hundreds upstream) are not news: a model is an image or video one by
  its `supported_endpoint_types` (`image-generation`, `openai-video`), else, where the list
  does not say, by sharing its family (its id before the first digit) with an image or video
  route of the catalog;
- if every group got the same list, the answers do not look per-group (a relay that lists all
  its models whatever the token): that is said, and each route is compared against the whole
  list.

`CatalogWatch` runs the check at start and every MEDIAGATE_CATALOG_CHECK_INTERVAL_S in the
gateway, on the catalog in force (a reload asks for a check at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mediagate.catalog import Catalog, Route
from mediagate.errors import GatewayError, UpstreamError
from mediagate.observability.metrics import Metrics
from mediagate.upstream.dialects import UpstreamRequest
from mediagate.upstream.sender import Upstream

log = logging.getLogger("mediagate")

# The route label of the listing calls in the upstream metrics and traces.
LISTING_ROUTE = "catalog-check"
# new-api's endpoint types of the models that make images and videos.
MEDIA_ENDPOINT_TYPES = frozenset({"image-generation", "openai-video"})
_FAMILY = re.compile(r"^(.*?)[-_.]*\d")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,127}")


def listing_route(group: str) -> Route:
    """What the sender needs to list a group's models: its key pool (the group), a free call's
    retries and timeouts. Not a catalog route: nothing is generated on it."""
    return Route(id=LISTING_ROUTE, upstream_model="", group=group, dialect="images")


@dataclass(frozen=True)
class Listed:
    """One model of a group's list: its id and what it says it serves (empty: not said)."""

    id: str
    endpoint_types: frozenset[str] = frozenset()


def parse_listing(payload: Any) -> dict[str, Listed]:
    """A `/v1/models` answer's models by id; an answer of another shape is an UpstreamError."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise UpstreamError(
            "The upstream's model list is not {'data': [...]}.", code="bad_upstream_listing"
        )
    models: dict[str, Listed] = {}
    for item in data:
        model_id = item.get("id") if isinstance(item, dict) else None
        # Upstream text that reaches a log line and the operator's terminal: only what looks
        # like a model id (bounded, no spaces, no URL), anything else is not a model to report.
        if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id) or "://" in model_id:
            continue
        types = item.get("supported_endpoint_types")
        kinds = frozenset(t for t in types if isinstance(t, str)) if isinstance(types, list) else ()
        models[model_id] = Listed(model_id, frozenset(kinds))
    return models


async def list_group(upstream: Upstream, group: str) -> dict[str, Listed]:
    """The models the upstream lists for one token group (any key of the group)."""
    request = UpstreamRequest("/models", method="GET")
    answer = await upstream.send(listing_route(group), request, paid=False, parse=True)
    return parse_listing(answer.payload)


@dataclass
class Drift:
    """What one check found."""

    listed: dict[str, bool] = field(default_factory=dict)  # route id -> listed (groups asked)
    retired: list[Route] = field(default_factory=list)  # routes their group no longer lists
    new: list[tuple[str, str, str]] = field(default_factory=list)  # (group, model, kind)
    failed: dict[str, str] = field(default_factory=dict)  # group -> why it could not be listed
    per_group: bool = True  # False: every group got the same list
    groups: list[str] = field(default_factory=list)  # the groups listed


def _family(model_id: str) -> str:
    found = _FAMILY.match(model_id)
    return (found.group(1) if found else model_id).lower()


def _kind(model: Listed, families: Mapping[str, str]) -> str | None:
    """ "image", "video", or None (a chat model, or one whose kind cannot be told)."""
    if "openai-video" in model.endpoint_types:
        return "video"
    if "image-generation" in model.endpoint_types:
        return "image"
    if model.endpoint_types:
        return None  # it says what it serves: not images or videos
    return families.get(_family(model.id))


def compare(
    catalog: Catalog, listings: dict[str, dict[str, Listed]], failed: dict[str, str]
) -> Drift:
    """The catalog's routes against the lists of the groups in `listings` (groups in `failed`
    could not be listed: their routes are neither listed nor retired)."""
    drift = Drift(failed=dict(failed), groups=sorted(listings))
    sets = [frozenset(models) for models in listings.values()]
    drift.per_group = len(sets) < 2 or len(set(sets)) > 1
    whole: dict[str, Listed] = {}
    for models in listings.values():
        whole.update(models)
    for route in sorted(catalog.routes.values(), key=lambda r: r.id):
        if route.group not in listings:
            continue
        models = listings[route.group] if drift.per_group else whole
        drift.listed[route.id] = route.upstream_model in models
        if not drift.listed[route.id]:
            drift.retired.append(route)
    families = {
        _family(route.upstream_model): route.kind
        for route in catalog.routes.values()
        if route.dialect != "chat"
    }
    known = {(route.group, route.upstream_model) for route in catalog.routes.values()}
    if drift.per_group:
        scopes: Iterable[tuple[str, dict[str, Listed]]] = listings.items()
    else:
        # One list for all: news is a model no route of any group uses.
        known = {("*", model) for _, model in known}
        scopes = [("*", whole)]
    for group, models in sorted(scopes):
        for model in sorted(models.values(), key=lambda m: m.id):
            kind = _kind(model, families)
            if kind is not None and (group, model.id) not in known:
                drift.new.append((group, model.id, kind))
    return drift


async def check(upstream: Upstream, catalog: Catalog) -> Drift:
    """Every group of `catalog` that has a key, listed once (concurrently), and compared."""
    groups = sorted(g for g in catalog.groups() if upstream.keys.has(g))
    answers = await asyncio.gather(
        *(list_group(upstream, group) for group in groups), return_exceptions=True
    )
    listings: dict[str, dict[str, Listed]] = {}
    failed: dict[str, str] = {}
    for group, answer in zip(groups, answers, strict=True):
        if isinstance(answer, GatewayError):
            failed[group] = answer.message
        elif isinstance(answer, BaseException):
            raise answer
        else:
            listings[group] = answer
    return compare(catalog, listings, failed)


def report(drift: Drift) -> list[str]:
    """The check's findings as lines for an operator."""
    lines: list[str] = []
    for group, why in sorted(drift.failed.items()):
        lines.append(f"could not list group {group!r}: {why}")
    if not drift.per_group:
        lines.append(
            f"the upstream answered every group ({', '.join(drift.groups)}) the same list: its "
            "answers do not look per-group; each route compared against the whole list"
        )
    for route in drift.retired:
        lines.append(
            f"RETIRED {route.id}: group {route.group!r} no longer lists {route.upstream_model!r}"
        )
    for group, model, kind in drift.new:
        where = "the upstream" if group == "*" else f"group {group!r}"
        lines.append(f"new {kind} model {model!r} in {where}: no route of the catalog uses it")
    listed = sum(drift.listed.values())
    lines.append(
        f"{listed} of {len(drift.listed)} routes listed, {len(drift.retired)} retired, "
        f"{len(drift.new)} new image or video models, {len(drift.failed)} groups not listed"
    )
    return lines


class CatalogWatch:
    """The gateway's periodic check: `mediagate_catalog_route_listed{route}` set from each
    check, a warning per route that disappeared (once, when it does), on the catalog in force
    (`catalog()`, read at each check)."""

    def __init__(
        self,
        upstream: Upstream,
        catalog: Callable[[], Catalog],
        metrics: Metrics,
        interval_s: float,
        first_after_s: float = 0.0,
    ) -> None:
        self._upstream = upstream
        # The first check waits this long after start: a round of upstream calls and the
        # parsing of their lists stay off the path to the gateway's first answers.
        self.first_after_s = first_after_s
        self._catalog = catalog
        self._metrics = metrics
        self.interval_s = interval_s
        self._listed: dict[str, bool] = {}
        self._wake = asyncio.Event()

    async def check(self) -> Drift:
        catalog = self._catalog()
        drift = await check(self._upstream, catalog)
        gauge = self._metrics.catalog_route_listed
        for group in drift.groups:
            self._metrics.catalog_checks.labels(group, "ok").inc()
        for group, why in drift.failed.items():
            self._metrics.catalog_checks.labels(group, "failed").inc()
            log.warning(
                "catalog check: could not list the group's models",
                extra={"fields": {"group": group, "reason": why}},
            )
        if not drift.per_group and drift.groups:
            log.warning(
                "catalog check: the upstream answered every group the same model list; "
                "routes compared against the whole list",
                extra={"fields": {"groups": drift.groups}},
            )
        for route_id in set(self._listed) - set(catalog.routes):
            # A route the catalog no longer has (a reload dropped it): no series of its own.
            del self._listed[route_id]
            gauge.remove(route_id)
        for route_id, listed in drift.listed.items():
            gauge.labels(route_id).set(1 if listed else 0)
            if not listed and self._listed.get(route_id) is not False:
                route = catalog.routes[route_id]
                log.warning(
                    "catalog route no longer listed upstream",
                    extra={
                        "fields": {
                            "route": route_id,
                            "group": route.group,
                            "upstream_model": route.upstream_model,
                        }
                    },
                )
            self._listed[route_id] = listed
        for group, model, kind in drift.new:
            log.info(
                "upstream lists a model the catalog does not know",
                extra={"fields": {"group": group, "model": model, "kind": kind}},
            )
        return drift

    def listed(self) -> dict[str, bool]:
        """Each route's answer at the last check (listed upstream or not); a route missing
        from it is unknown (not checked yet, or its group could not be listed)."""
        return dict(self._listed)

    def trigger(self) -> None:
        """Check now rather than at the end of the interval (after a reload)."""
        self._wake.set()

    async def run_forever(self) -> None:
        if self.first_after_s > 0:
            with contextlib.suppress(TimeoutError):  # a reload's trigger checks at once
                await asyncio.wait_for(self._wake.wait(), self.first_after_s)
            self._wake.clear()
        while True:
            try:
                await self.check()
            except Exception as exc:  # a failed check must not stop the next one
                log.warning("catalog check failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

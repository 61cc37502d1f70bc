"""The admin API's reads (`/admin/v1`): usage from the rollups, the request log, video jobs,
streamed exports, the catalog and the routes' health, and the API's own OpenAPI document.

Every route takes `caller: Caller`: admin and viewer keys read everything; a client key (a
member) is narrowed by `caller.scope()` to its team's records (or its own key's) on every
route, by adding its scope to the query's conditions. A member naming another team in a filter
gets an empty list, another team's request id or job a 404, as if it did not exist.

Filters have the same names wherever they apply (`start`, `end`, `key`, `team`, `model`,
`route`, `status`, `error_code`, `request_id`, `job_id`, `upstream_task_id`, `batch_id`) and
are checked before any query: a bad value is a 400 naming it. `start`/`end` are ISO 8601 in
UTC (a date is its midnight; an offset is converted), start inclusive, end exclusive. Lists
answer `{"object": "list", "data", "has_more", "next_cursor"}`: `next_cursor`, passed back as
`after`, is opaque (the last row's sort key, base64). Money is USD (`cost_usd`, micro-USD / 1e6).
"""

from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import io
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime
from importlib import resources
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from mediagate import jsonio
from mediagate.errors import InvalidRequest, NotFound
from mediagate.gateway import Gateway
from mediagate.http.admin import PREFIX, Caller, Page
from mediagate.http.deps import gateway
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes
from mediagate.stores.sql.reports import (
    DIMENSIONS,
    JOB_COLUMNS,
    REQUEST_COLUMNS,
    REQUEST_JSON_COLUMNS,
    USAGE_SUMS,
    JobFilter,
    Reports,
    RequestFilter,
    Scope,
    UsageQuery,
)
from mediagate.upstream.breaker import CLOSED, HALF_OPEN, OPEN

# Each route's query parameters, by the route's id, with the route itself: held, so its id is
# not reused by another route (an app made after this one's was freed) while the entry stands.
_known: dict[int, tuple[object, frozenset[str]]] = {}


def _query_names(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_parameters(request: Request) -> None:
    """A query parameter the route does not take is a 400 naming it: a misspelt filter
    (`?teem=x`) would otherwise be ignored, and the answer look filtered."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _known.get(id(route))
    if known is None or known[0] is not route:
        known = _known[id(route)] = (route, frozenset(_query_names(dependant)))
    names = known[1]
    for name in request.query_params:
        if name not in names:
            shown = name[:64]
            raise InvalidRequest(
                f"Unknown parameter '{shown}': this endpoint takes "
                f"{', '.join(sorted(names)) or 'no parameters'}.",
                param=shown,
                code="unknown_parameter",
            )


reads = Routes(prefix=PREFIX, dependencies=[Depends(known_parameters)])

MAX_LIMIT = 1000
EXPORT_CHUNK = 1000
MAX_USAGE_LIMIT = 10000
HEALTH_WINDOW_S = 3600.0
OPENAPI_DOCUMENT = "admin_openapi.json"
_BREAKER = {CLOSED: "closed", HALF_OPEN: "half-open", OPEN: "open"}
_STATUS = re.compile(r"^([1-5])(xx|\d\d)$")
_MAX_VALUE = 256  # the longest filter value taken


# --- models (what the OpenAPI document describes) ---------------------------------------------


class RequestRecord(BaseModel):
    """One row of the request log."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    at: float
    key: str
    team: str
    principal: str | None = None
    endpoint: str
    method: str
    model: str | None = None
    alias: str | None = None
    route: str | None = None
    routes_tried: Any = None
    token_group: str | None = None
    mapped: Any = None
    dropped: Any = None
    tier: str | None = None
    quality: str | None = None
    n: int | None = None
    seconds: int | None = None
    status: int
    error_code: str | None = None
    latency_ms: float | None = None
    upstream_ms: float | None = None
    cost_usd: float
    cost_state: str
    images: int
    video_seconds: int
    job_id: str | None = None
    upstream_task_id: str | None = None
    batch_id: str | None = None
    custom_id: str | None = None
    replayed: bool
    trace_id: str | None = None
    client_request_id: str | None = None


class RequestDetail(RequestRecord):
    object: Literal["admin.request"] = "admin.request"
    prompt: str | None = None


class RequestList(Page[RequestRecord]):
    """A page of the request log."""


class Job(BaseModel):
    """A video job's record."""

    model_config = ConfigDict(extra="forbid")

    id: str
    upstream_id: str
    owner: str
    model: str
    route: str
    group: str
    key_fp: str
    prompt: str
    size: str
    seconds: int
    status: str
    created_at: float
    updated_at: float
    progress: int
    completed_at: float | None = None
    expires_at: float | None = None
    error: Any = None
    cost_usd: float | None = None
    remixed_from: str | None = None
    reference: str | None = None
    deleted_at: float | None = None
    result_url: str | None = None
    asked: str | None = None


class JobDetail(Job):
    object: Literal["admin.job"] = "admin.job"
    route_snapshot: Any = None
    history: list[RequestRecord]  # its rows in the request log, oldest first


class JobList(Page[Job]):
    """A page of video jobs."""


class UsageRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str  # YYYY-MM-DD or YYYY-MM-DDTHH (UTC)
    start: str  # the bucket's first instant, ISO 8601
    key: str | None = None  # the dimensions asked in group_by
    team: str | None = None
    model: str | None = None
    route: str | None = None
    requests: int
    errors: int
    reads: int
    images: int
    video_seconds: int
    cost_usd: float


class UsageTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: int
    errors: int
    reads: int
    images: int
    video_seconds: int
    cost_usd: float


class BudgetStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit_usd: float
    spent_usd: float
    remaining_usd: float
    exceeded: bool


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: BudgetStatus | None
    month: BudgetStatus | None


class UsageList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"] = "list"
    granularity: Literal["hour", "day"]
    group_by: list[str]
    start: str
    end: str
    data: list[UsageRow]
    has_more: bool
    next_cursor: str | None
    # Where grouped by key or team: each one's budgets today and this month (UTC), spent from
    # the day rollups; None where no budget is set.
    budgets: dict[str, dict[str, Budgets]]
    # The sums over every page (on the first page only: null on the pages after it).
    totals: UsageTotals | None


class CatalogModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    routes: list[str]
    owned_by: str
    legacy: bool


class CatalogRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    group: str
    upstream_model: str
    dialect: str
    models: list[str]
    price: dict[str, Any] | None
    price_as_of: str | None
    price_source: str | None
    group_multiplier: float
    listed: bool | None  # whether the upstream's model list has it (None: not known)


class CatalogView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["admin.catalog"] = "admin.catalog"
    models: list[CatalogModel]
    routes: list[CatalogRoute]
    listing_checked: bool  # whether the gateway checks the upstream's lists


class RouteHealthView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str
    requests: int
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    rate_limited: int  # 429 answers
    breaker: str | None  # closed, half-open, open (None: a route the catalog no longer has)


class HealthList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"] = "list"
    since: float
    data: list[RouteHealthView]
    has_more: bool = False
    next_cursor: str | None = None


# --- filters ----------------------------------------------------------------------------------


def parse_time(value: str, param: str) -> float:
    """ISO 8601 in UTC (or with an offset), or a date (its midnight), as Unix seconds."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"Invalid '{param}': expected an ISO 8601 date or time (UTC), e.g. 2026-12-01 or "
            "2026-12-01T13:00:00Z.",
            param=param,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _span(start: str | None, end: str | None) -> tuple[float | None, float | None]:
    # An empty value is no filter, as everywhere here: a GET form (the console's) sends every
    # field, filled or not.
    low = parse_time(start, "start") if start else None
    high = parse_time(end, "end") if end else None
    if low is not None and high is not None and high < low:
        raise InvalidRequest("Invalid 'end': it is before 'start'.", param="end")
    return low, high


def _text(value: str | None, param: str) -> str | None:
    if not value:  # absent or empty: no filter
        return None
    if len(value) > _MAX_VALUE or not value.isprintable():
        raise InvalidRequest(
            f"Invalid '{param}': expected 1 to {_MAX_VALUE} characters.", param=param
        )
    return value


def parse_status(value: str | None) -> tuple[int, int] | None:
    """A code (`429`) as [429, 430), a class (`4xx`) as [400, 500); empty: no filter."""
    if not value:
        return None
    found = _STATUS.match(value.strip().lower())
    if found is None:
        raise InvalidRequest(
            "Invalid 'status': expected an HTTP status code such as 429 or a class such as 4xx.",
            param="status",
        )
    if found[2] == "xx":
        low = int(found[1]) * 100
        return low, low + 100
    code = int(value)
    return code, code + 1


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(jsonio.dumps(list(values))).decode().rstrip("=")


def decode_cursor(value: str | None, kinds: Sequence[type]) -> tuple[Any, ...] | None:
    """A cursor this API gave (`after`), as the sort key it holds; anything else is a 400."""
    if value is None:
        return None
    try:
        padded = value + "=" * (-len(value) % 4)
        decoded = jsonio.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(decoded, list) or len(decoded) != len(kinds):
            raise ValueError
        out: list[Any] = []
        for item, kind in zip(decoded, kinds, strict=True):
            if kind is float and isinstance(item, int | float) and not isinstance(item, bool):
                out.append(float(item))
            elif kind is str and isinstance(item, str):
                out.append(item)
            else:
                raise ValueError
        return tuple(out)
    except ValueError:
        raise InvalidRequest(
            "Invalid 'after': not a cursor this list gave (pass its next_cursor as is).",
            param="after",
        ) from None


def _time_cursor(after: str | None) -> tuple[float, str] | None:
    found = decode_cursor(after, (float, str))
    return None if found is None else (float(found[0]), str(found[1]))


_Text = Annotated[str | None, Query(max_length=_MAX_VALUE)]
_Time = Annotated[
    str | None, Query(description="ISO 8601 (UTC) or a date (its midnight)", max_length=64)
]


def request_filter(
    start: _Time = None,
    end: _Time = None,
    key: _Text = None,
    team: _Text = None,
    model: _Text = None,
    route: _Text = None,
    status: Annotated[
        str | None, Query(description="a code (429) or a class (4xx)", max_length=3)
    ] = None,
    error_code: _Text = None,
    request_id: _Text = None,
    job_id: _Text = None,
    upstream_task_id: _Text = None,
    batch_id: _Text = None,
) -> RequestFilter:
    low, high = _span(start, end)
    return RequestFilter(
        start=low,
        end=high,
        key=_text(key, "key"),
        team=_text(team, "team"),
        model=_text(model, "model"),
        route=_text(route, "route"),
        status=parse_status(status),
        error_code=_text(error_code, "error_code"),
        request_id=_text(request_id, "request_id"),
        job_id=_text(job_id, "job_id"),
        upstream_task_id=_text(upstream_task_id, "upstream_task_id"),
        batch_id=_text(batch_id, "batch_id"),
    )


RequestFilters = Annotated[RequestFilter, Depends(request_filter)]
After = Annotated[str | None, Query(description="the next_cursor of the page before")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def scope_of(gw: Gateway, caller: Principal) -> Scope:
    team, key = caller.scope()
    if team is None:
        return Scope(key=key)
    return Scope(team=team, team_keys=_team_keys(gw, team))


def _team_keys(gw: Gateway, team: str) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in gw.clients.policies() if p.team == team))


def reports(request: Request, caller: Principal) -> tuple[Gateway, Reports, Scope]:
    gw = gateway(request)
    return gw, Reports(gw.database), scope_of(gw, caller)


# --- rows as the API shows them ---------------------------------------------------------------


def usd(micros: int | None) -> float:
    return round((micros or 0) / 1_000_000, 6)


def _decoded(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return jsonio.loads(text.encode())
    except ValueError:
        return text


def request_item(row: Any) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for column in REQUEST_COLUMNS:
        value = row[column]
        if column == "cost_micros":
            item["cost_usd"] = usd(value)
        elif column in REQUEST_JSON_COLUMNS:
            item[column] = _decoded(value)
        elif column == "replayed":
            item[column] = bool(value)
        else:
            item[column] = value
    return item


def job_item(row: Any) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for column in JOB_COLUMNS:
        value = row[column]
        if column == "cost":
            item["cost_usd"] = None if value is None else round(float(value), 6)
        elif column in ("error", "route_snapshot"):
            item[column] = _decoded(value)
        else:
            item[column] = value
    return item


def _page(
    rows: list[Any],
    limit: int,
    item: Callable[[Any], dict[str, Any]],
    key: Callable[[Any], list[Any]],
) -> dict[str, Any]:
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "object": "list",
        "data": [item(row) for row in rows],
        "has_more": more,
        "next_cursor": encode_cursor(key(rows[-1])) if more and rows else None,
    }


def _answer(body: dict[str, Any]) -> Response:
    """The body as JSON, rendered by orjson as it is: the route's `response_model` describes it
    in the OpenAPI document (the tests check answers against it), and is not run per answer,
    which cost ~0.1 ms a row (a page of 1000: 100 ms) where rendering costs ~1 µs."""
    return jsonio.FastJSONResponse(body)


def _request_key(row: Any) -> list[Any]:
    return [row["at"], row["request_id"]]


# --- requests ---------------------------------------------------------------------------------


@reads.get("/requests", name="admin.requests", response_model=RequestList)
async def list_requests(
    request: Request,
    caller: Caller,
    filters: RequestFilters,
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """The request log, newest first, filtered; a page of `limit` after the cursor `after`."""
    cursor = _time_cursor(after)
    _, store, scope = reports(request, caller)
    rows = await store.requests(filters, scope, cursor, limit)
    return _answer(_page(rows, limit, request_item, _request_key))


@reads.get("/requests/{request_id}", name="admin.request", response_model=RequestDetail)
async def one_request(request: Request, caller: Caller, request_id: str) -> Response:
    """One request's full record (its prompt where prompts are recorded)."""
    _, store, scope = reports(request, caller)
    row = await store.request(request_id[:_MAX_VALUE], scope)
    if row is None:
        raise NotFound(f"No request '{request_id[:_MAX_VALUE]}' on record.", param="request_id")
    return _answer({**request_item(row), "object": "admin.request", "prompt": row["prompt"]})


# --- jobs -------------------------------------------------------------------------------------


def job_filter(
    start: _Time = None,
    end: _Time = None,
    status: Annotated[
        Literal["queued", "in_progress", "completed", "failed"] | None, Query()
    ] = None,
    model: _Text = None,
    key: _Text = None,
    team: _Text = None,
) -> JobFilter:
    low, high = _span(start, end)
    return JobFilter(
        start=low,
        end=high,
        status=status,
        model=_text(model, "model"),
        key=_text(key, "key"),
        team=_text(team, "team"),
    )


async def jobs_page(
    gw: Gateway,
    store: Reports,
    scope: Scope,
    filters: JobFilter,
    cursor: tuple[float, str] | None,
    limit: int,
) -> dict[str, Any]:
    """A page of video jobs as the list shows them (newest first): what /admin/v1/jobs and
    the console's jobs page answer."""
    if filters.team is not None:
        filters = dataclasses.replace(filters, team_keys=_team_keys(gw, filters.team))
    rows = await store.jobs(filters, scope, cursor, limit)

    def listed(row: Any) -> dict[str, Any]:
        item = job_item(row)
        del item["route_snapshot"]
        return item

    return _page(rows, limit, listed, lambda row: [row["created_at"], row["id"]])


async def job_detail(store: Reports, scope: Scope, job_id: str) -> dict[str, Any]:
    """One video job's record with its history (its rows in the request log, oldest first);
    a 404 when it is not on record or not the scope's."""
    record, history = await store.job(job_id[:_MAX_VALUE], scope)
    if record is None:
        raise NotFound(f"No video job '{job_id[:_MAX_VALUE]}' on record.", param="job_id")
    return {
        **job_item(record),
        "object": "admin.job",
        "history": [request_item(row) for row in history],
    }


@reads.get("/jobs", name="admin.jobs", response_model=JobList)
async def list_jobs(
    request: Request,
    caller: Caller,
    filters: Annotated[JobFilter, Depends(job_filter)],
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """Video jobs, newest first (by created_at), filtered by status, model, key, team, time."""
    cursor = _time_cursor(after)
    gw, store, scope = reports(request, caller)
    return _answer(await jobs_page(gw, store, scope, filters, cursor, limit))


@reads.get("/jobs/{job_id}", name="admin.job", response_model=JobDetail)
async def one_job(request: Request, caller: Caller, job_id: str) -> Response:
    """One video job's record and its history: its rows in the request log."""
    _, store, scope = reports(request, caller)
    return _answer(await job_detail(store, scope, job_id))


# --- usage ------------------------------------------------------------------------------------


def _bucket(moment: datetime, grain: str) -> str:
    return moment.strftime("%Y-%m-%d" if grain == "day" else "%Y-%m-%dT%H")


def _ceil(seconds: float, grain: str) -> datetime:
    """The first bucket boundary at or after `seconds`."""
    step = 86400 if grain == "day" else 3600
    return datetime.fromtimestamp(math.ceil(seconds / step) * step, UTC)


def _bucket_start(bucket: str) -> str:
    return f"{bucket}T00:00:00Z" if len(bucket) == 10 else f"{bucket}:00:00Z"


def usage_query(
    start: _Time = None,
    end: _Time = None,
    granularity: Literal["hour", "day"] = "day",
    group_by: Annotated[
        str | None, Query(description="key, team, model, route, or a comma list", max_length=64)
    ] = None,
    key: _Text = None,
    team: _Text = None,
    model: _Text = None,
    route: _Text = None,
) -> UsageQuery:
    """The buckets whose first instant is in [start, end): by default the last 30 days (day)
    or 24 hours (hour), up to now."""
    low, high = _span(start, end)
    step = 86400 if granularity == "day" else 3600
    if high is None:
        high = _ceil(time.time(), granularity).timestamp()
    if low is None:
        low = high - (30 * step if granularity == "day" else 24 * step)
    groups: list[str] = []
    for name in (group_by or "").split(","):
        name = name.strip()
        if not name:
            continue
        if name not in DIMENSIONS or name in groups:
            raise InvalidRequest(
                "Invalid 'group_by': expected key, team, model or route, or a comma list of "
                "them (each once).",
                param="group_by",
            )
        groups.append(name)
    return UsageQuery(
        grain=granularity,
        start_bucket=_bucket(_ceil(low, granularity), granularity),
        end_bucket=_bucket(_ceil(high, granularity), granularity),
        group_by=tuple(groups),
        key=_text(key, "key"),
        team=_text(team, "team"),
        model=_text(model, "model"),
        route=_text(route, "route"),
    )


UsageQueries = Annotated[UsageQuery, Depends(usage_query)]


def usage_item(row: Any, q: UsageQuery) -> dict[str, Any]:
    item: dict[str, Any] = {"bucket": row["bucket"], "start": _bucket_start(row["bucket"])}
    for name in q.group_by:
        item[name] = row[name]
    for name in ("requests", "errors", "reads", "images", "video_seconds"):
        item[name] = int(row[name] or 0)
    item["cost_usd"] = usd(row["cost_micros"])
    return item


def _totals(row: Any) -> dict[str, Any]:
    totals = {name: int(row[name] or 0) for name in USAGE_SUMS if name != "cost_micros"}
    return {**totals, "cost_usd": usd(row["cost_micros"])}


def _budget(limit: float | None, spent_micros: int) -> dict[str, Any] | None:
    if limit is None:
        return None
    spent = usd(spent_micros)
    return {
        "limit_usd": limit,
        "spent_usd": spent,
        "remaining_usd": round(max(0.0, limit - spent), 6),
        "exceeded": spent >= limit,
    }


async def budgets(
    gw: Gateway, store: Reports, q: UsageQuery, data: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Budget status of the keys and teams on the page (where grouped by them): today's and
    this month's spend (UTC) from the day rollups, against their limits."""
    today = datetime.now(UTC)
    day, month = today.strftime("%Y-%m-%d"), today.strftime("%Y-%m")
    out: dict[str, dict[str, Any]] = {}
    columns: tuple[Literal["key", "team"], ...] = ("key", "team")
    for column in columns:
        if column not in q.group_by:
            continue
        names = sorted({row[column] for row in data if row[column]})
        spent = await store.spend(column, names, day, month)
        found: dict[str, Any] = {}
        for name in names:
            policy = gw.clients.policy(name) if column == "key" else gw.clients.team(name)
            day_limit = policy.budget_usd_per_day if policy is not None else None
            month_limit = policy.budget_usd_per_month if policy is not None else None
            spent_day, spent_month = spent.get(name, (0, 0))
            found[name] = {
                "day": _budget(day_limit, spent_day),
                "month": _budget(month_limit, spent_month),
            }
        out[column] = found
    return out


@reads.get("/usage", name="admin.usage", response_model=UsageList)
async def usage(
    request: Request,
    caller: Caller,
    q: UsageQueries,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=MAX_USAGE_LIMIT)] = 1000,
) -> Response:
    """Usage from the rollups by hour or day, grouped by key, team, model or route (any of
    them), filtered by each; with budget status per key and team where grouped by them."""
    cursor = decode_cursor(after, (str,) * (1 + len(q.group_by)))
    gw, store, scope = reports(request, caller)
    rows = await store.usage(q, scope, cursor, limit)
    page = _page(
        rows,
        limit,
        lambda row: usage_item(row, q),
        lambda row: [row["bucket"], *(row[g] for g in q.group_by)],
    )
    return _answer(
        {
            **page,
            "granularity": q.grain,
            "group_by": list(q.group_by),
            "start": _bucket_start(q.start_bucket),
            "end": _bucket_start(q.end_bucket),
            "budgets": await budgets(gw, store, q, page["data"]),
            "totals": None if cursor is not None else _totals(await store.usage_totals(q, scope)),
        }
    )


# --- exports ----------------------------------------------------------------------------------

Format = Annotated[Literal["csv", "jsonl"], Query(alias="format")]


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return jsonio.dumps(value).decode()
    return value


def _lines(items: list[dict[str, Any]], columns: Sequence[str], kind: str, header: bool) -> bytes:
    if kind == "jsonl":
        return b"".join(jsonio.dumps(item) + b"\n" for item in items)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for item in items:
        writer.writerow([_csv_cell(item.get(c)) for c in columns])
    return out.getvalue().encode()


def _streamed(chunks: AsyncIterator[bytes], kind: str, name: str) -> StreamingResponse:
    media = "text/csv; charset=utf-8" if kind == "csv" else "application/x-ndjson"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        chunks,
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{name}-{stamp}.{kind}"'},
    )


REQUEST_EXPORT_COLUMNS = tuple("cost_usd" if c == "cost_micros" else c for c in REQUEST_COLUMNS)
ExportKind = Literal["csv", "jsonl"]


async def request_lines(
    store: Reports, filters: RequestFilter, scope: Scope, kind: ExportKind
) -> AsyncIterator[bytes]:
    """The request log's rows (as the list shows them), newest first, in chunks of
    EXPORT_CHUNK: CSV with a header row, or JSON Lines. What the admin API's and the console's
    exports stream."""
    cursor: tuple[float, str] | None = None
    first = True
    while True:
        rows = await store.requests(filters, scope, cursor, EXPORT_CHUNK)
        part = rows[:EXPORT_CHUNK]
        items = [request_item(row) for row in part]
        if items or first:
            yield _lines(items, REQUEST_EXPORT_COLUMNS, kind, first)
        first = False
        if len(rows) <= EXPORT_CHUNK:
            return
        cursor = (part[-1]["at"], part[-1]["request_id"])


async def usage_lines(
    store: Reports, q: UsageQuery, scope: Scope, kind: ExportKind
) -> AsyncIterator[bytes]:
    """Usage rows (as /usage shows them), in chunks: CSV with a header row, or JSON Lines."""
    columns = ("bucket", "start", *q.group_by, "requests", "errors", "reads", "images")
    columns = (*columns, "video_seconds", "cost_usd")
    cursor: tuple[str, ...] | None = None
    first = True
    while True:
        rows = await store.usage(q, scope, cursor, EXPORT_CHUNK)
        part = rows[:EXPORT_CHUNK]
        items = [usage_item(row, q) for row in part]
        if items or first:
            yield _lines(items, columns, kind, first)
        first = False
        if len(rows) <= EXPORT_CHUNK:
            return
        cursor = (part[-1]["bucket"], *(part[-1][g] for g in q.group_by))


def export_requests_response(
    request: Request, caller: Principal, filters: RequestFilter, kind: ExportKind
) -> StreamingResponse:
    """The request log's export for `caller` (narrowed to its scope), as a download."""
    _, store, scope = reports(request, caller)
    return _streamed(request_lines(store, filters, scope, kind), kind, "requests")


def export_usage_response(
    request: Request, caller: Principal, q: UsageQuery, kind: ExportKind
) -> StreamingResponse:
    """The usage export for `caller` (narrowed to its scope), as a download."""
    _, store, scope = reports(request, caller)
    return _streamed(usage_lines(store, q, scope, kind), kind, "usage")


@reads.get(
    "/export/requests",
    name="admin.export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
async def export_requests(
    request: Request, caller: Caller, filters: RequestFilters, kind: Format = "csv"
) -> StreamingResponse:
    """The request log's rows (as the list shows them), newest first, streamed in chunks:
    CSV with a header row, or JSON Lines. No row limit."""
    return export_requests_response(request, caller, filters, kind)


@reads.get(
    "/export/usage",
    name="admin.export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
async def export_usage(
    request: Request, caller: Caller, q: UsageQueries, kind: Format = "csv"
) -> StreamingResponse:
    """Usage rows (as /usage shows them), streamed: CSV with a header row, or JSON Lines."""
    return export_usage_response(request, caller, q, kind)


# --- catalog and health -----------------------------------------------------------------------


def _visible(gw: Gateway, caller: Principal) -> Callable[[str], bool]:
    """The models a caller may see: a member's key's allow-list, everything for the others."""
    policy = gw.clients.policy(caller.name) if caller.role == "member" else None
    return policy.allows if policy is not None else (lambda model: True)


def catalog_view(gw: Gateway, caller: Principal) -> dict[str, Any]:
    """The catalog as /admin/v1/catalog answers it (and the console's models page shows it):
    the models the caller may see, their routes with prices and whether the upstream lists
    them."""
    current = gw.catalog
    allowed = _visible(gw, caller)
    listed = gw.catalog_watch.listed() if gw.catalog_watch is not None else {}
    models = [m for m in sorted(current.models.values(), key=lambda m: m.id) if allowed(m.id)]
    served: dict[str, list[str]] = {}
    for model in models:
        for route_id in model.routes:
            served.setdefault(route_id, []).append(model.id)
    routes = []
    for route_id in sorted(served):
        route = current.routes[route_id]
        price = route.price if route.price is not None else (route.video and route.video.price)
        dumped = price.model_dump(mode="json", exclude_none=True) if price is not None else None
        group = current.group_info.get(route.group)
        routes.append(
            {
                "id": route.id,
                "kind": route.kind,
                "group": route.group,
                "upstream_model": route.upstream_model,
                "dialect": route.dialect,
                "models": served[route_id],
                "price": dumped,
                "price_as_of": (dumped or {}).get("as_of"),
                "price_source": (dumped or {}).get("source"),
                "group_multiplier": group.multiplier if group is not None else 1.0,
                "listed": listed.get(route.id),
            }
        )
    return {
        "object": "admin.catalog",
        "models": [
            {"id": m.id, "routes": m.routes, "owned_by": m.owned_by, "legacy": m.legacy}
            for m in models
        ],
        "routes": routes,
        "listing_checked": gw.catalog_watch is not None,
    }


@reads.get("/catalog", name="admin.catalog", response_model=CatalogView)
async def catalog(request: Request, caller: Caller) -> Response:
    """Models, routes, prices (with `as_of` and `source`), and whether the upstream still
    lists each route (the gateway's catalog check; null when not known)."""
    return _answer(catalog_view(gateway(request), caller))


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(share * len(ordered)) - 1)], 3)


async def health_view(
    gw: Gateway, store: Reports, scope: Scope, caller: Principal, since: float
) -> dict[str, Any]:
    """Per route since `since`, from the request log: requests, success rate (answers below
    400), p50/p95 latency, 429s; and each route's breaker state on this replica. What
    /admin/v1/health answers (over the last hour) and the console's health page shows."""
    found = await store.health(since, scope)
    current = gw.catalog
    allowed = _visible(gw, caller)
    routes = {rid for m in current.models.values() if allowed(m.id) for rid in m.routes}
    if caller.role != "member":
        routes |= set(found)
    data = []
    for route_id in sorted(routes):
        seen = found.get(route_id)
        route = current.routes.get(route_id)
        breaker = None
        if route is not None:
            breaker = _BREAKER[gw.upstream.breakers.get(route.id, route.breaker).state]
        requests = seen.requests if seen is not None else 0
        latencies = seen.latencies_ms if seen is not None else []
        data.append(
            {
                "route": route_id,
                "requests": requests,
                "success_rate": round(seen.successes / requests, 4) if seen and requests else None,
                "p50_ms": percentile(latencies, 0.5),
                "p95_ms": percentile(latencies, 0.95),
                "rate_limited": seen.rate_limited if seen is not None else 0,
                "breaker": breaker,
            }
        )
    return {"object": "list", "since": since, "data": data, "has_more": False, "next_cursor": None}


@reads.get("/health", name="admin.health", response_model=HealthList)
async def health(request: Request, caller: Caller) -> Response:
    """Per route over the last hour, from the request log: requests, success rate (answers
    below 400), p50/p95 latency, 429s; and each route's breaker state on this replica."""
    gw, store, scope = reports(request, caller)
    since = time.time() - HEALTH_WINDOW_S
    return _answer(await health_view(gw, store, scope, caller, since))


# --- the admin API's OpenAPI document ---------------------------------------------------------


def admin_document(routes: Sequence[Any]) -> dict[str, Any]:
    """FastAPI's document of the `/admin/v1` routes among `routes` (an app's)."""
    from fastapi.openapi.utils import get_openapi

    chosen = [r for r in routes if getattr(r, "path", "").startswith(PREFIX + "/")]
    document = get_openapi(
        title="mediagate admin API",
        version="1",
        summary="Keys, teams, usage, the request log, video jobs, exports, catalog and health.",
        routes=chosen,
    )
    # FastAPI documents its own 422; the gateway answers bad input (and every other error)
    # with the OpenAI error body instead (mediagate.http.errors).
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = copy.deepcopy(_ERROR_SCHEMA)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            answers.pop("422", None)
            wanted = {"401": "no valid key", "403": "the key may not do this"}
            if operation.get("parameters"):
                wanted["400"] = "a bad parameter, named in the error's `param`"
            if "{" in path:
                wanted["404"] = "not on record (or not the caller's team's)"
            for status, text in wanted.items():
                answers[status] = {"description": text, "content": error}
    return document


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}


_rendered: bytes | None = None


def saved_document() -> bytes:
    return resources.files("mediagate.http").joinpath(OPENAPI_DOCUMENT).read_bytes()


@reads.get("/openapi.json", name="admin.openapi", include_in_schema=False)
async def openapi_document(caller: Caller) -> Response:
    """The admin API's OpenAPI document: the saved file (`make admin-openapi` regenerates it;
    a test fails when it differs from the code's routes)."""
    global _rendered
    if _rendered is None:
        _rendered = await anyio.to_thread.run_sync(saved_document)
    return Response(_rendered, media_type="application/json")

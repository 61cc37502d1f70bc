"""The console's Requests page (`/console/requests`): the request log, filtered by the admin
API's own parameters (`RequestFilters`: start, end, key, team, model, route, status, error_code,
request_id, job_id, upstream_task_id, batch_id) plus a search box (`q`: a request id, a client's
request id, a job id or an upstream task id), a keyset page at a time (`after`), with a
histogram of the filtered window's answers (ok / 4xx / 5xx) above it; and one request's record
(`/console/requests/{request_id}`): the routes tried, what the gateway changed, cost, times,
trace, job and prompt.

A member reads its own team's rows only (`scope_of`): another team's filter gives an empty
list, another team's request id the 404 page.
"""

from __future__ import annotations

import dataclasses
import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render
from mediagate.errors import NotFound
from mediagate.http.admin_reads import (
    RequestFilters,
    _page,
    _request_key,
    _text,
    _time_cursor,
    reports,
    request_item,
)
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes
from mediagate.stores.sql.reports import Histogram, RequestFilter

pages = Routes()

PAGE_ROWS = 100  # a page's rows at most (`limit`, 50 by default)
DEFAULT_WINDOW_S = 48 * 3600.0  # whole hours: the rollups give its ok answers
MAX_BARS = 48
# Bucket widths a histogram picks from: the narrowest giving at most MAX_BARS bars.
STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
HEIGHTS = 20  # bar heights in steps of 5 % (classes h0..h20 in requests.css)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(f: RequestFilter, now: float) -> tuple[float, float, int]:
    """The histogram's buckets for the filtered window: (first bucket's start, step, count).
    Without a start, the last 48 hours up to the end (or now), by hour."""
    end = f.end if f.end is not None else now
    start = f.start if f.start is not None else end - DEFAULT_WINDOW_S
    span = max(end - start, 1.0)
    step = next((s for s in STEPS if span / s <= MAX_BARS), math.ceil(span / MAX_BARS))
    first = math.floor(start / step) * step
    return float(first), float(step), max(1, min(MAX_BARS + 1, math.ceil((end - first) / step)))


def bars(h: Histogram) -> list[dict[str, Any]]:
    """The histogram's buckets as the template draws them: counts, and each part's height as
    a class step (h0..h20) of the tallest bar."""
    tallest = max(
        (a + b + c for a, b, c in zip(h.ok, h.client_errors, h.server_errors, strict=True)),
        default=0,
    )

    def height(n: int) -> int:
        return 0 if not n or not tallest else max(1, round(n * HEIGHTS / tallest))

    out = []
    for i, (ok, c4, c5) in enumerate(zip(h.ok, h.client_errors, h.server_errors, strict=True)):
        start = h.start + i * h.step
        out.append(
            {
                "start": iso(start),
                "end": iso(start + h.step),
                "ok": ok,
                "c4": c4,
                "c5": c5,
                "total": ok + c4 + c5,
                "h_ok": height(ok),
                "h_c4": height(c4),
                "h_c5": height(c5),
            }
        )
    return out


async def search(
    request: Request, caller: Principal, filters: RequestFilter, q: str
) -> list[dict[str, Any]]:
    """The rows whose request id (ours or the client's), job id or upstream task id is `q`,
    within the other filters, newest first."""
    _, store, scope = reports(request, caller)
    found: dict[str, Any] = {}
    searched = (
        dataclasses.replace(filters, request_id=q),
        dataclasses.replace(filters, job_id=q),
        dataclasses.replace(filters, upstream_task_id=q),
    )
    for each in searched:
        rows = await store.requests(each, scope, None, PAGE_ROWS)
        for row in rows[:PAGE_ROWS]:
            found[row["request_id"]] = row
    ordered = sorted(found.values(), key=lambda r: (r["at"], r["request_id"]), reverse=True)
    return [request_item(row) for row in ordered[:PAGE_ROWS]]


@pages.get(PREFIX + "/requests", name="console.requests", include_in_schema=False)
async def requests_page(
    request: Request,
    session: Viewer,
    filters: RequestFilters,
    q: Annotated[str | None, Query(max_length=256)] = None,
    after: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_ROWS)] = 50,
) -> HTMLResponse:
    _, store, scope = reports(request, session.principal)
    wanted = (q or "").strip() or None
    if wanted is not None:
        _text(wanted, "q")
        rows = await search(request, session.principal, filters, wanted)
        page: dict[str, Any] = {"data": rows, "has_more": False, "next_cursor": None}
    else:
        found = await store.requests(filters, scope, _time_cursor(after), limit)
        page = _page(found, limit, request_item, _request_key)
    start, step, count = window(filters, time.time())
    histogram = await store.histogram(filters, scope, start, step, count)
    args = dict(request.query_params)
    export_args = {k: v for k, v in args.items() if k not in ("after", "q")}
    return render(
        request,
        session,
        "requests.html",
        title="Requests",
        rows=page["data"],
        next_cursor=page["next_cursor"],
        after=after,
        q=wanted or "",
        bars=bars(histogram),
        window_start=iso(start),
        window_end=iso(start + step * count),
        step=step,
        export_args=export_args,
        member=session.principal.role == "member",
        team=session.principal.team,
    )


def trace_link(template: str | None, trace_id: str | None) -> str | None:
    """The tracing UI's page of a trace: the template with `{trace_id}` replaced, escaped."""
    if not template or not trace_id:
        return None
    return template.replace("{trace_id}", quote(trace_id, safe=""))


@pages.get(PREFIX + "/requests/{request_id}", name="console.requests.one", include_in_schema=False)
async def request_page(request: Request, session: Viewer, request_id: str) -> HTMLResponse:
    gw, store, scope = reports(request, session.principal)
    wanted = request_id[:256]
    row = await store.request(wanted, scope)
    if row is None:
        raise NotFound(f"No request '{wanted}' on record.", param="request_id")
    item = {**request_item(row), "prompt": row["prompt"]}
    return render(
        request,
        session,
        "request.html",
        title=f"Request {item['request_id']}",
        item=item,
        trace_url=trace_link(gw.settings.trace_url_template, item.get("trace_id")),
    )

"""The console's Video jobs page (`/console/jobs`, `/console/jobs/{job_id}`).

The list reads the admin API's own jobs page (`admin_reads.jobs_page`, with `job_filter`'s
query names: status, model, key, team, start, end), newest first in keyset pages. On the first
page the jobs that need someone come first: the stuck ones (unfinished, their status and
progress unchanged for MEDIAGATE_CONSOLE_STUCK_AFTER_S), then the failed ones of the last day,
each newest first; the rest follow. A member sees its team's jobs only (`scope_of`); another
team's job id is a 404 page. Rows still running refresh themselves (htmx polls the row).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any, cast

from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render
from mediagate.errors import InvalidRequest
from mediagate.http.admin_reads import (
    After,
    _time_cursor,
    job_detail,
    job_filter,
    jobs_page,
    reports,
    usd,
)
from mediagate.http.routes import Routes
from mediagate.stores.sql.reports import JobFilter, Reports, Scope

pages = Routes()

PAGE_ROWS = 50  # by default; `limit` (the admin API's name) up to MAX_ROWS
MAX_ROWS = 100
ATTENTION_ROWS = 20  # stuck and failed jobs shown first, at most, each
FAILED_WINDOW_S = 86400.0  # failed jobs listed first: those of the last day
UNFINISHED = ("queued", "in_progress")
REFRESH_S = 3  # how often a running row refreshes itself

STATUSES = ("queued", "in_progress", "completed", "failed")
FILTER_NAMES = ("start", "end", "status", "model", "key", "team")  # job_filter's


def page_filter(request: Request) -> JobFilter:
    """`job_filter` of the page's query, an empty field being no filter: the filter form sends
    every field, filled or not (the admin API refuses an empty value; a form must not)."""
    given = {
        name: value
        for name, value in request.query_params.items()
        if name in FILTER_NAMES and value != ""
    }
    status = given.pop("status", None)
    if status is not None and status not in STATUSES:
        raise InvalidRequest(
            f"Invalid 'status': expected one of {', '.join(STATUSES)}.", param="status"
        )
    return job_filter(status=cast(Any, status), **given)


Filters = Annotated[JobFilter, Depends(page_filter)]


def decorate(items: list[dict[str, Any]], costs: dict[str, dict[str, int]], limit_s: float) -> None:
    """Each job with what the page shows beyond its record: its reserved and booked cost from
    the request log, and whether it is stuck."""
    now = time.time()
    for item in items:
        found = costs.get(item["id"], {})
        item["reserved_usd"] = usd(found["reserved"]) if "reserved" in found else None
        item["booked_usd"] = usd(found["booked"]) if "booked" in found else item["cost_usd"]
        item["stuck"] = item["status"] in UNFINISHED and now - item["updated_at"] > limit_s
        item["running"] = item["status"] in UNFINISHED
        item.setdefault("first", False)  # listed first (stuck or failed): set by the list


async def attention(
    request: Request, store: Reports, scope: Scope, filters: JobFilter, limit_s: float
) -> list[dict[str, Any]]:
    """The jobs listed first (within the page's filters): stuck, then failed in the last day."""
    from mediagate.http.deps import gateway

    gw = gateway(request)
    now = time.time()
    found: list[dict[str, Any]] = []
    if filters.status in (None, *UNFINISHED):
        stuck = dataclasses.replace(filters, updated_before=now - limit_s)
        page = await jobs_page(gw, store, scope, stuck, None, ATTENTION_ROWS)
        found += page["data"]
    if filters.status in (None, "failed"):
        since = max(filters.start or 0.0, now - FAILED_WINDOW_S)
        failed = dataclasses.replace(filters, status="failed", start=since)
        page = await jobs_page(gw, store, scope, failed, None, ATTENTION_ROWS)
        found += page["data"]
    return found


@pages.get(PREFIX + "/jobs", name="console.jobs", include_in_schema=False)
async def jobs_list(
    request: Request,
    session: Viewer,
    filters: Filters,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = PAGE_ROWS,
) -> HTMLResponse:
    cursor = _time_cursor(after)
    gw, store, scope = reports(request, session.principal)
    limit_s = gw.settings.console_stuck_after_s
    first = await attention(request, store, scope, filters, limit_s) if cursor is None else []
    page = await jobs_page(gw, store, scope, filters, cursor, limit)
    shown = {item["id"] for item in first}
    rest = [item for item in page["data"] if item["id"] not in shown]
    rows = first + rest
    costs = await store.job_costs([item["id"] for item in rows], scope)
    decorate(rows, costs, limit_s)
    for item in first:
        item["first"] = True
    return render(
        request,
        session,
        "jobs.html",
        title="Video jobs",
        rows=rows,
        attention_count=len(first),
        next_cursor=page["next_cursor"],
        stuck_after_s=limit_s,
        statuses=STATUSES,
        models=sorted(m.id for m in gw.catalog.models.values() if _is_video(gw, m.routes)),
        refresh_s=REFRESH_S,
        now=time.time(),
    )


def _is_video(gw: Any, routes: list[str]) -> bool:
    route = gw.catalog.routes.get(routes[0])
    return route is not None and route.kind == "video"


async def _one(request: Request, session: Any, job_id: str) -> tuple[dict[str, Any], float]:
    gw, store, scope = reports(request, session.principal)
    job = await job_detail(store, scope, job_id)
    costs = await store.job_costs([job["id"]], scope)
    limit_s = gw.settings.console_stuck_after_s
    decorate([job], costs, limit_s)
    return job, limit_s


@pages.get(PREFIX + "/jobs/{job_id}", name="console.jobs.job", include_in_schema=False)
async def job_page(request: Request, session: Viewer, job_id: str) -> HTMLResponse:
    job, limit_s = await _one(request, session, job_id)
    return render(
        request,
        session,
        "job.html",
        title=f"Video job {job['id']}",
        job=job,
        stuck_after_s=limit_s,
        refresh_s=REFRESH_S,
        now=time.time(),
    )


@pages.get(PREFIX + "/jobs/{job_id}/row", name="console.jobs.row", include_in_schema=False)
async def job_row(request: Request, session: Viewer, job_id: str) -> HTMLResponse:
    """One row of the list (htmx swaps it in while the job runs: a finished row stops)."""
    job, _ = await _one(request, session, job_id)
    job["first"] = request.query_params.get("first") == "1"
    return render(
        request, session, "jobs_row.html", title="", job=job, refresh_s=REFRESH_S, now=time.time()
    )

"""The console's Health page (`/console/health`): per route over the last hour, what the admin
API's health answers (`admin_reads.health_view`: requests, success rate, p50/p95 latency, 429s,
the breaker's state on this replica), and the route's recent failures (5xx answers) by error
code, each linked to those requests in the request log.

The failures are the newest FAILURE_ROWS 5xx rows of the hour (one keyset page of the request
log, `Reports.requests`), so the page never scans the log.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render
from mediagate.http.admin_reads import HEALTH_WINDOW_S, health_view, reports
from mediagate.http.routes import Routes
from mediagate.stores.sql.reports import RequestFilter

pages = Routes()

FAILURE_ROWS = 100


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def failures_by_route(rows: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows (newest first) grouped by route, then error code: count and the latest."""
    found: dict[str, dict[tuple[int, str], dict[str, Any]]] = {}
    for row in rows:
        route = row["route"]
        if route is None:
            continue
        key = (int(row["status"]), row["error_code"] or "")
        seen = found.setdefault(route, {}).get(key)
        if seen is None:
            found[route][key] = {
                "status": key[0],
                "error_code": key[1],
                "count": 1,
                "latest": row["at"],
                "request_id": row["request_id"],
            }
        else:
            seen["count"] += 1
    return {route: list(codes.values()) for route, codes in found.items()}


@pages.get(PREFIX + "/health", name="console.health", include_in_schema=False)
async def health_page(request: Request, session: Viewer) -> HTMLResponse:
    gw, store, scope = reports(request, session.principal)
    since = time.time() - HEALTH_WINDOW_S
    view = await health_view(gw, store, scope, session.principal, since)
    rows = await store.requests(
        RequestFilter(start=since, status=(500, 600)), scope, None, FAILURE_ROWS
    )
    failures = failures_by_route(rows[:FAILURE_ROWS])
    routes = view["data"]
    for route in routes:
        route["failures"] = failures.get(route["route"], [])
    # Routes that served or failed first (the most requests), then the idle ones by name.
    routes.sort(key=lambda r: (-r["requests"], r["route"]))
    return render(
        request,
        session,
        "health.html",
        title="Health",
        routes=routes,
        since=since,
        since_iso=iso(since),
        window_s=HEALTH_WINDOW_S,
        more_failures=len(rows) > FAILURE_ROWS,
    )

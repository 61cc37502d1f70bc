"""The console's Export page (`/console/export`): the request log's and the usage rollups'
rows, for the page's filters, as CSV or JSON Lines downloads. The downloads stream exactly what
the admin API's `/admin/v1/export/requests` and `/export/usage` stream (the same generators,
`admin_reads.request_lines` / `usage_lines`), with the session's cookie instead of a key, and a
member's narrowed to its team.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from mediagate.console.web import PREFIX, Viewer, render
from mediagate.http.admin_reads import (
    RequestFilters,
    UsageQueries,
    export_requests_response,
    export_usage_response,
)
from mediagate.http.routes import Routes

pages = Routes()

Kind = Annotated[Literal["csv", "jsonl"], Query(alias="format")]
REQUEST_PARAMS = (
    "start",
    "end",
    "team",
    "key",
    "model",
    "route",
    "status",
    "error_code",
    "request_id",
    "job_id",
    "upstream_task_id",
    "batch_id",
)
USAGE_PARAMS = ("start", "end", "team", "key", "model", "route", "granularity", "group_by")


@pages.get(PREFIX + "/export", name="console.export", include_in_schema=False)
async def export_page(
    request: Request, session: Viewer, filters: RequestFilters, usage: UsageQueries
) -> HTMLResponse:
    # The filters are parsed (a bad one is the error page, as the downloads would answer),
    # and passed on as given.
    args = dict(request.query_params)
    return render(
        request,
        session,
        "export.html",
        title="Export",
        request_args={k: v for k, v in args.items() if k in REQUEST_PARAMS},
        usage_args={k: v for k, v in args.items() if k in USAGE_PARAMS},
        member=session.principal.role == "member",
        team=session.principal.team,
    )


@pages.get(PREFIX + "/export/requests", name="console.export.requests", include_in_schema=False)
async def export_requests(
    request: Request, session: Viewer, filters: RequestFilters, kind: Kind = "csv"
) -> StreamingResponse:
    """The request log's export, as the admin API's (`/admin/v1/export/requests`)."""
    return export_requests_response(request, session.principal, filters, kind)


@pages.get(PREFIX + "/export/usage", name="console.export.usage", include_in_schema=False)
async def export_usage(
    request: Request, session: Viewer, q: UsageQueries, kind: Kind = "csv"
) -> StreamingResponse:
    """The usage export, as the admin API's (`/admin/v1/export/usage`)."""
    return export_usage_response(request, session.principal, q, kind)

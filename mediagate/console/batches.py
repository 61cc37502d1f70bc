"""The console's Batches page (`/console/batches`, `/console/batches/{batch_id}`).

The list reads the records' batches (`stores.sql.batches.list_batches`), newest first in keyset
pages (`after`: the last batch shown), filtered by status, key and team: an admin or a viewer
sees every batch, a member its team's (without a team, its own key's); another team's batch is
a 404 page, as a video job is. Rows of running batches refresh themselves (htmx polls the row).

A batch's page shows its record, its lines (paged by line number, `after_line`) with a link to
each sent line's request in the request log, and its files, downloaded through the console
(the session checked, and only a file of this batch). Cancel is the Batch API's own
(`BatchService.cancel`): for an admin, or a member whose team's the batch is; never a viewer.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mediagate.batches.files import file_not_found
from mediagate.batches.service import batch_not_found
from mediagate.console.web import PREFIX, Editor, Viewer, render
from mediagate.errors import Conflict, InvalidRequest, PermissionDenied
from mediagate.http.deps import gateway
from mediagate.http.files import file_content
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes
from mediagate.stores.sql import batches as sql

pages = Routes()

PAGE = PREFIX + "/batches"
PAGE_ROWS = 50  # by default; `limit` up to MAX_ROWS
MAX_ROWS = 100
LINE_ROWS = 100  # a batch's lines shown per page
REFRESH_S = 3  # how often a running batch's row (or page) refreshes itself
STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
    "completed",
    "failed",
    "expired",
    "cancelled",
)
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
CANCELLABLE = ("validating", "in_progress")
_MAX_VALUE = 200  # the longest filter value or id looked up


def _value(request: Request, name: str) -> str | None:
    """A filter of the page's query: an empty field is no filter (the form sends them all)."""
    value = request.query_params.get(name, "")
    return value[:_MAX_VALUE] or None


def _narrowed(principal: Principal, key: str | None, team: str | None) -> tuple[str | None, ...]:
    """(owner, team) a list reads: a member's own team (or key) whatever it asked for."""
    member_team, member_key = principal.scope()
    if principal.role != "member":
        return key, team
    if member_team is not None:
        return key, member_team
    return member_key, None


def _visible(principal: Principal, row: dict[str, Any]) -> bool:
    team, key = principal.scope()
    if principal.role != "member":
        return True
    return bool(row["team"] == team if team is not None else row["owner"] == key)


def decorate(row: dict[str, Any]) -> dict[str, Any]:
    """The batch's row with what the page shows beyond its columns."""
    row["done"] = row["completed"] + row["failed"]
    row["running"] = row["status"] in RUNNING
    row["cancellable"] = row["status"] in CANCELLABLE
    row["percent"] = round(100 * row["done"] / row["total"]) if row["total"] else None
    return row


async def _batch(request: Request, principal: Principal, batch_id: str) -> dict[str, Any]:
    """The batch, if the signed-in user may see it; a 404 page otherwise (another team's batch
    is as unknown as one that never was)."""
    gw = gateway(request)
    batch_id = batch_id[:_MAX_VALUE]
    row = await gw.database.run(lambda tx: sql.get_batch(tx, batch_id))
    if row is None or not _visible(principal, row):
        raise batch_not_found(batch_id)
    return decorate(row)


@pages.get(PAGE, name="console.batches", include_in_schema=False)
async def batches_list(
    request: Request,
    session: Viewer,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = PAGE_ROWS,
) -> HTMLResponse:
    status = _value(request, "status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(
            f"Invalid 'status': expected one of {', '.join(STATUSES)}.", param="status"
        )
    after = _value(request, "after")
    owner, team = _narrowed(session.principal, _value(request, "key"), _value(request, "team"))
    gw = gateway(request)
    page = await gw.database.run(
        lambda tx: sql.list_batches(tx, owner, after=after, limit=limit, team=team, status=status)
    )
    if page is None:
        raise InvalidRequest(f"Invalid 'after': no batch {after!r}.", param="after")
    rows, more = page
    return render(
        request,
        session,
        "batches.html",
        title="Batches",
        rows=[decorate(row) for row in rows],
        next_cursor=rows[-1]["id"] if more and rows else None,
        statuses=STATUSES,
        refresh_s=REFRESH_S,
        now=time.time(),
    )


@pages.get(PAGE + "/{batch_id}/row", name="console.batches.row", include_in_schema=False)
async def batch_row(request: Request, session: Viewer, batch_id: str) -> HTMLResponse:
    """One row of the list (htmx swaps it in while the batch runs: a finished row stops)."""
    batch = await _batch(request, session.principal, batch_id)
    return render(
        request,
        session,
        "batches_row.html",
        title="",
        batch=batch,
        refresh_s=REFRESH_S,
        now=time.time(),
    )


def _line_error(line: dict[str, Any]) -> str | None:
    """A failed line's error code, from its stored output line when kept in the row (a long
    output is in the store, named by `@`: not read for a page of lines)."""
    result = line["result"]
    if line["state"] != "failed" or not isinstance(result, str) or result.startswith("@"):
        return None
    try:
        found = json.loads(result)
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    error = found.get("error")
    if not isinstance(error, dict):
        body = (found.get("response") or {}).get("body")
        error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") or error.get("type") if isinstance(error, dict) else None
    return str(code) if code else None


async def _batch_page(
    request: Request,
    session: Any,
    batch: dict[str, Any],
    status: int = 200,
    error: Exception | None = None,
) -> HTMLResponse:
    gw = gateway(request)
    try:
        after_line = max(0, int(request.query_params.get("after_line") or 0))
    except ValueError:
        raise InvalidRequest("Invalid 'after_line': a line number.", param="after_line") from None
    batch_id = batch["id"]
    lines = await gw.database.run(lambda tx: sql.line_page(tx, batch_id, after_line, LINE_ROWS + 1))
    more = len(lines) > LINE_ROWS
    lines = lines[:LINE_ROWS]
    for line in lines:
        line["error"] = _line_error(line)
    errors = json.loads(batch["errors"]) if batch["errors"] else None
    principal = session.principal
    return render(
        request,
        session,
        "batch.html",
        status=status,
        title=f"Batch {batch_id}",
        batch=batch,
        lines=lines,
        after_line=after_line,
        next_line=lines[-1]["line"] if more else None,
        batch_errors=(errors or {}).get("data") or [],
        metadata=json.loads(batch["metadata"]) if batch["metadata"] else {},
        may_cancel=batch["cancellable"] and principal.may_act_with(batch["owner"], batch["team"]),
        error=error,
        refresh_s=REFRESH_S,
        now=time.time(),
    )


@pages.get(PAGE + "/{batch_id}", name="console.batches.batch", include_in_schema=False)
async def batch_page(request: Request, session: Viewer, batch_id: str) -> HTMLResponse:
    batch = await _batch(request, session.principal, batch_id)
    return await _batch_page(request, session, batch)


@pages.post(PAGE + "/{batch_id}/cancel", name="console.batches.cancel", include_in_schema=False)
async def cancel_batch(request: Request, session: Editor, batch_id: str) -> Response:
    """The Batch API's cancel, for an admin or a member of the batch's team: no new line is
    sent; what is in flight finishes; the runner then writes the files."""
    principal = session.principal
    batch = await _batch(request, principal, batch_id)
    if not principal.may_act_with(batch["owner"], batch["team"]):
        raise PermissionDenied(
            "Only an admin, or a member of the batch's team, may cancel it.",
            code="permission_denied",
        )
    gw = gateway(request)
    try:
        await gw.batches.cancel(None, batch["id"])
    except Conflict as exc:  # it ended meanwhile
        fresh = await _batch(request, principal, batch["id"])
        return await _batch_page(request, session, fresh, status=409, error=exc)
    gw.batch_runner.wake()
    return RedirectResponse(
        f"{PAGE}/{batch['id']}", status_code=303, headers={"cache-control": "no-store"}
    )


@pages.get(
    PAGE + "/{batch_id}/files/{file_id}", name="console.batches.file", include_in_schema=False
)
async def batch_file(request: Request, session: Viewer, batch_id: str, file_id: str) -> Response:
    """One of the batch's files (its input, output or error file), streamed as the Files API's
    content is; any other file id is a 404 here."""
    batch = await _batch(request, session.principal, batch_id)
    if file_id not in {batch["input_file_id"], batch["output_file_id"], batch["error_file_id"]}:
        raise file_not_found(file_id[:_MAX_VALUE])
    row, found = await gateway(request).batches.files.content(None, file_id)
    return file_content(row, found)

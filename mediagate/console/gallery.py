"""The console's Gallery page (`/console/gallery`) and its content route.

The images and videos the gateway kept (MEDIAGATE_KEEP_OUTPUTS, mediagate.stores.kept), newest
first, keyset-paged, filtered by team, key, model and kind; a member sees only its team's (its
scope, as the admin API narrows it: `scope_of`). Thumbnails and players load through
`/console/content/{id}`, cookie-authenticated (an <img> or <video> cannot send a bearer key),
with single Range requests (a player seeks) and `?download=1` for an attachment. The object is
streamed from the store in chunks, never read whole.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from mediagate.console.web import PREFIX, SECURITY_HEADERS, Viewer, render
from mediagate.errors import NotFound
from mediagate.http.admin_reads import jobs_page, reports, scope_of
from mediagate.http.deps import gateway
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes
from mediagate.http.videos import relay_content
from mediagate.stores.hosted import CONTENT_TYPES
from mediagate.stores.sql import outputs
from mediagate.stores.sql.outputs import OutputFilter
from mediagate.stores.sql.reports import JobFilter

pages = Routes()

_PAGE = 24
_MAX_PAGE = 100
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EXTENSION = {kind: ext for ext, kind in CONTENT_TYPES.items()}
# The kept object itself: never a document with rights on the console's origin (an SVG).
_CONTENT_HEADERS = {
    **SECURITY_HEADERS,
    "content-security-policy": "default-src 'none'; sandbox",
    "cache-control": "private, max-age=3600",
}


def _filter(principal: Principal, request: Request, **asked: str | None) -> OutputFilter:
    scope = scope_of(gateway(request), principal)
    clean = {k: (v.strip() or None) if v else None for k, v in asked.items()}
    if clean.get("kind") not in ("image", "video"):
        clean["kind"] = None
    return OutputFilter(scope_team=scope.team, scope_key=scope.key, **clean)


def _cursor(value: str | None) -> tuple[float, int] | None:
    """`before`: the last row's (created_at, id) as `<time>_<id>`; anything else, the start."""
    if not value:
        return None
    at, _, ident = value.partition("_")
    try:
        return float(at), int(ident)
    except ValueError:
        return None


@pages.get(PREFIX + "/gallery", name="console.gallery", include_in_schema=False)
async def gallery_page(
    request: Request,
    session: Viewer,
    team: str | None = None,
    key: str | None = None,
    model: str | None = None,
    kind: str | None = None,
    before: str | None = None,
    limit: Annotated[int, Query(ge=1, le=_MAX_PAGE)] = _PAGE,
) -> HTMLResponse:
    gw = gateway(request)
    where = _filter(session.principal, request, team=team, key=key, model=model, kind=kind)
    after = _cursor(before)
    rows = await gw.database.run(lambda tx: outputs.page(tx, where, after, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    older = f"{rows[-1]['created_at']!r}_{rows[-1]['id']}" if more and rows else None
    items = [
        {**row, "anchor": str(row["id"]), "src": f"{PREFIX}/content/{row['id']}"} for row in rows
    ]
    if gw.kept is None and where.kind != "image" and before is None:
        # Nothing new is kept: the completed videos the gateway can still relay from their
        # upstream (until their links expire), newest first.
        items += await _relayable(request, session.principal, where, limit)
    return render(
        request,
        session,
        "gallery.html",
        title="Gallery",
        items=items,
        kept=gw.kept is not None,
        older=older,
        now=time.time(),
        member=session.principal.role == "member",
    )


async def _relayable(
    request: Request, principal: Principal, where: OutputFilter, limit: int
) -> list[dict[str, Any]]:
    """The scope's completed video jobs, as gallery items played through `video_content`."""
    gw, store, scope = reports(request, principal)
    asked = JobFilter(status="completed", model=where.model, key=where.key, team=where.team)
    page = await jobs_page(gw, store, scope, asked, None, limit)
    logged = gw.settings.prompts_logged()
    return [
        {
            "anchor": job["id"],
            "src": f"{PREFIX}/content/videos/{job['id']}",
            "kind": "video",
            "job_id": job["id"],
            "prompt": job["prompt"] if logged else None,
            "model": job["model"],
            "route": job["route"],
            "size": job["size"],
            "seconds": job["seconds"],
            "quality": None,
            "cost_micros": None if job["cost_usd"] is None else round(job["cost_usd"] * 1e6),
            "created_at": job["created_at"],
            "key": job["owner"],
            "principal": None,
            "team": None,
            "upstream_expires_at": job["expires_at"],
        }
        for job in page["data"]
        if job.get("deleted_at") is None
    ]


@pages.get(
    PREFIX + "/content/videos/{video_id}",
    name="console.content.video",
    include_in_schema=False,
)
async def video_content(
    request: Request, session: Viewer, video_id: str, download: bool = False
) -> Response:
    """A video job's file relayed from its upstream (outputs not kept): the scope's jobs only
    (another team's is a 404); Range passes through so the player can seek."""
    _, store, scope = reports(request, session.principal)
    record, _ = await store.job(video_id[:64], scope)
    if record is None:
        raise NotFound(f"No video '{video_id[:64]}'.", code="output_not_found")
    response = await relay_content(request, record["owner"], record["id"])
    if download:
        name = f"{record['id']}.mp4"
        response.headers["content-disposition"] = f'attachment; filename="{name}"'
    return response


@pages.get(PREFIX + "/content/{output_id}", name="console.content", include_in_schema=False)
async def content(
    request: Request, session: Viewer, output_id: str, download: bool = False
) -> Response:
    """A kept output's bytes (a 404, like any record, when it is another team's)."""
    gw = gateway(request)
    where = _filter(session.principal, request)
    row = None
    if output_id.isdigit() and gw.kept is not None:
        ident = int(output_id)
        row = await gw.database.run(lambda tx: outputs.get(tx, ident, where))
    if row is None or gw.kept is None:
        raise NotFound(f"No output '{output_id}'.", code="output_not_found")
    size = int(row["bytes"])
    headers = {**_CONTENT_HEADERS, "accept-ranges": "bytes"}
    if download:
        name = f"{row['kind']}-{row['id']}.{_EXTENSION.get(row['content_type'], 'bin')}"
        headers["content-disposition"] = f'attachment; filename="{name}"'
    try:
        span = _span(request.headers.get("range"), size)
    except _Unsatisfiable:
        headers["content-range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    start, end = span if span is not None else (0, size - 1)
    stored = await gw.kept.store.get(row["object"], start)
    if stored is None:  # swept, or past its retention, since the row was read
        raise NotFound(f"No output '{output_id}'.", code="output_not_found")
    length = max(end - start + 1, 0)
    headers["content-length"] = str(length)
    status = 200
    if span is not None:
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        _sliced(stored.chunks, length),
        status_code=status,
        media_type=row["content_type"],
        headers=headers,
    )


class _Unsatisfiable(ValueError):
    """A range that starts past the end (a 416)."""


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """A single byte range (first, last) asked for; None to send it whole (no Range, or one
    this route does not take, such as several ranges); `_Unsatisfiable` past the end."""
    found = _RANGE.match((header or "").strip())
    if found is None:
        return None
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _Unsatisfiable
    return start, end


async def _sliced(chunks: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """The first `length` bytes of `chunks`, which are closed however this ends."""
    left = length
    try:
        async for chunk in chunks:
            if len(chunk) >= left:
                if left:
                    yield chunk[:left]
                break
            left -= len(chunk)
            yield chunk
    finally:
        close: Any = getattr(chunks, "aclose", None)
        if close is not None:
            await close()

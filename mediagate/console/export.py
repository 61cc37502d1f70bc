"""The console's Export page (`/console/export`): being built (issue 26)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render

pages = APIRouter()


@pages.get(PREFIX + "/export", name="console.export", include_in_schema=False)
async def export_page(request: Request, session: Viewer) -> HTMLResponse:
    return render(request, session, "pending.html", title="Export")

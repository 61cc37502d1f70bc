"""The console's Requests page (`/console/requests`): being built (issue 26)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render

pages = APIRouter()


@pages.get(PREFIX + "/requests", name="console.requests", include_in_schema=False)
async def requests_page(request: Request, session: Viewer) -> HTMLResponse:
    return render(request, session, "pending.html", title="Requests")

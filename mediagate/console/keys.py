"""The console's Keys and teams page (`/console/keys`): being built (issue 26)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render

pages = APIRouter()


@pages.get(PREFIX + "/keys", name="console.keys", include_in_schema=False)
async def keys_page(request: Request, session: Viewer) -> HTMLResponse:
    return render(request, session, "pending.html", title="Keys and teams")

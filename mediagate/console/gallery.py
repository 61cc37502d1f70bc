"""The console's Gallery page (`/console/gallery`): being built (issue 26)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render

pages = APIRouter()


@pages.get(PREFIX + "/gallery", name="console.gallery", include_in_schema=False)
async def gallery_page(request: Request, session: Viewer) -> HTMLResponse:
    return render(request, session, "pending.html", title="Gallery")

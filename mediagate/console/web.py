"""What every console page shares: the signed-in user (`Viewer`), rendering a template with
the layout's context, the package's static files, and errors as HTML pages.

Pages are server-rendered from Jinja2 templates in `templates/`, with the scripts and styles in
`static/` (htmx and uPlot vendored in `static/vendor/`): no Node toolchain, no CDN. A page
module declares its routes on its own `Routes` (`pages`, mediagate.http.routes), each named
`console.<page>` (the request log neither logs nor counts the console's own successful
requests, as for the admin API), takes `session: Viewer`, and answers
`render(request, session, "<page>.html", ...)`.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mediagate.errors import AuthenticationFailed, GatewayError
from mediagate.http import sessions
from mediagate.http.deps import gateway
from mediagate.http.sessions import Session

if TYPE_CHECKING:
    import jinja2

PREFIX = "/console"

# The pages in the navigation, in order: (path, label, who sees it).
NAV: tuple[tuple[str, str], ...] = (
    ("", "Overview"),
    ("/gallery", "Gallery"),
    ("/requests", "Requests"),
    ("/jobs", "Video jobs"),
    ("/batches", "Batches"),
    ("/keys", "Keys and teams"),
    ("/models", "Models"),
    ("/playground", "Playground"),
    ("/health", "Health"),
    ("/export", "Export"),
)

# Every console answer's headers: its own scripts and styles only (no inline script), media
# from the gateway itself, never framed.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


async def viewer(request: Request) -> Session:
    """The signed-in user of a console page: a 401 otherwise, which the console's error page
    turns into a redirect to the sign-in page (`render_error`)."""
    session = sessions.current(request)
    if session is None:
        raise AuthenticationFailed("Sign in to the console.", code="console_sign_in")
    return session


# The console's signed-in user, as a handler parameter: `session: Viewer`.
Viewer = Annotated[Session, Depends(viewer)]


async def form_csrf(request: Request, session: Viewer) -> Session:
    """A console form's POST: the signed-in user, with the session's CSRF token in the form's
    `csrf_token` field (or the X-CSRF-Token header), from this site. Use it instead of
    `Viewer` on every state-changing route."""
    presented = request.headers.get(sessions.CSRF_HEADER)
    if presented is None:
        form = await request.form()
        value = form.get(sessions.CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    sessions.require_csrf(request, session, presented)
    return session


# The signed-in user of a state-changing route, its CSRF token checked: `session: Editor`.
Editor = Annotated[Session, Depends(form_csrf)]


# --- templates --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates, loaded from the package on first use (not at import: Jinja2 is not
    imported until a console page is asked for, so the API's start does not pay for it)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mediagate.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(static=static_url, nav=NAV, prefix=PREFIX)
    env.filters.update(usd=usd, when=when, ago=ago, duration=duration, query=query_string)
    return env


def render(
    request: Request,
    session: Session | None,
    template: str,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    """The page `template` (which extends base.html), with what the layout needs: the user,
    their CSRF token, the current path for the navigation, and the request's query."""
    gw = gateway(request)
    context = {
        "request": request,
        "session": session,
        "principal": session.principal if session is not None else None,
        "csrf_token": sessions.sessions(request).csrf_token(session) if session else "",
        "path": request.url.path,
        "args": dict(request.query_params),
        "oidc": gw.settings.oidc_enabled(),
        **values,
    }
    html = environment().get_template(template).render(context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def query_string(args: dict[str, Any], **changes: Any) -> str:
    """`args` with `changes` applied (a None removes one), as `?a=1&b=2` (or "" when empty):
    for links that keep the page's filters."""
    merged = {k: v for k, v in {**args, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else ""


def usd(value: float | int | None, micros: bool = False) -> str:
    if value is None:
        return "—"
    amount = value / 1_000_000 if micros else float(value)
    if amount and abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def when(value: float | str | None) -> str:
    """A time as `2026-12-07 01:02:03 UTC` (Unix seconds or ISO 8601 in)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        moment = datetime.fromtimestamp(float(value), UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: float | None, now: float | None = None) -> str:
    if value is None:
        return "—"
    return duration((now if now is not None else time.time()) - float(value)) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = abs(float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s // 60:.0f} min {s % 60:.0f} s"
    if s < 86400:
        return f"{s // 3600:.0f} h {s % 3600 // 60:.0f} min"
    return f"{s // 86400:.0f} d {s % 86400 // 3600:.0f} h"


# --- static files -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def static_file(name: str) -> tuple[bytes, str, str] | None:
    """A file of `static/` (its bytes, content type and ETag), or None: only plain names under
    it, never a path out of it."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    node = resources.files("mediagate.console").joinpath("static", *parts)
    if not node.is_file():
        return None
    data = node.read_bytes()
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind == "application/javascript":
        kind += "; charset=utf-8"
    return data, kind, '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def static_url(name: str) -> str:
    """The file's URL, with its content's hash as the version (so it can be cached for good)."""
    found = static_file(name)
    version = found[2].strip('"')[:8] if found else "0"
    return f"{PREFIX}/static/{quote(name)}?v={version}"


def static_response(request: Request, name: str) -> Response:
    found = static_file(name)
    if found is None:
        return Response(status_code=404, headers={"cache-control": "no-store"})
    data, kind, etag = found
    headers = {
        "etag": etag,
        "cache-control": "public, max-age=31536000, immutable"
        if request.query_params.get("v")
        else "public, max-age=300",
        "x-content-type-options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=kind, headers=headers)


# --- errors -----------------------------------------------------------------------------------


def render_error(request: Request, exc: GatewayError) -> Response | None:
    """A console path's error as a page (the API's are JSON): a GET that needs a session goes
    to the sign-in page and comes back; anything else is an error page saying what happened.
    None for paths outside the console, or a script's request (which wants the JSON)."""
    path = request.url.path
    if not (path == PREFIX or path.startswith(PREFIX + "/")):
        return None
    if "text/html" not in request.headers.get("accept", "") and request.method != "GET":
        return None
    if exc.status == 401 and request.method in ("GET", "HEAD"):
        back = path + (f"?{request.url.query}" if request.url.query else "")
        target = f"{PREFIX}/login" + ("" if back == PREFIX else "?" + urlencode({"next": back}))
        return RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
    session = sessions.current(request) if getattr(request.app.state, "gateway", None) else None
    return render(
        request,
        session,
        "error.html",
        status=exc.status,
        title="Error",
        error=exc,
    )


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX

"""Signing in and out of the console: with a key (an admin key, or a client key as a member of
its team), or with OpenID Connect (mediagate.console.oidc). A gateway with no keys at all
(simulator mode, open to every caller) lets anyone in as its local admin, as its API does.

The sign-in form is protected from cross-site posts by a double-submit token: a random value in
a short-lived cookie and in the form, compared in constant time, and the request's Origin.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mediagate.console.web import PREFIX, Editor, render, safe_next, static_response
from mediagate.errors import AuthenticationFailed, PermissionDenied
from mediagate.gateway import Gateway
from mediagate.http import sessions
from mediagate.http.admin import key_principal
from mediagate.http.deps import gateway
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes

LOGIN_COOKIE = "mediagate_login"

pages = Routes()


def is_open(gw: Gateway) -> bool:
    """No key of any kind: the gateway serves every caller (simulator mode without keys)."""
    return not gw.clients.enabled and not gw.admin_keys


@pages.get(PREFIX + "/static/{name:path}", name="console.static", include_in_schema=False)
async def static(request: Request, name: str) -> Response:
    return static_response(request, name)


@pages.get(PREFIX + "/login", name="console.login", include_in_schema=False)
async def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    gw = gateway(request)
    token = secrets.token_urlsafe(16)
    response = render(
        request,
        None,
        "login.html",
        title="Sign in",
        login_token=token,
        next=safe_next(next),
        open=is_open(gw),
        failed=None,
    )
    _login_cookie(request, response, token)
    return response


def _login_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=sessions.secure_cookies(request),
    )


@pages.post(PREFIX + "/login", name="console.login_submit", include_in_schema=False)
async def login(
    request: Request,
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    key: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=2048)] = PREFIX,
) -> Response:
    gw = gateway(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if (
        not sessions.same_origin(request)
        or not expected
        or not hmac.compare_digest(expected.encode(), csrf_token.encode())
    ):
        raise PermissionDenied(
            "This sign-in form has expired: reload the page and try again.", code="csrf_failed"
        )
    key = key.strip()
    via: sessions.Via
    if is_open(gw) and not key:
        principal, via = Principal("local", "admin"), "open"
    else:
        try:
            principal, is_admin = key_principal(gw, key) if key else _no_key()
        except AuthenticationFailed as exc:
            token = secrets.token_urlsafe(16)
            response = render(
                request,
                None,
                "login.html",
                status=401,
                title="Sign in",
                login_token=token,
                next=safe_next(next),
                open=is_open(gw),
                failed=exc.message,
            )
            _login_cookie(request, response, token)
            return response
        via = "admin_key" if is_admin else "client_key"
    return sign_in(request, principal, via, safe_next(next))


def _no_key() -> tuple[Principal, bool]:
    raise AuthenticationFailed("Enter an admin key or an API key.")


def sign_in(request: Request, principal: Principal, via: sessions.Via, target: str) -> Response:
    """A new session for `principal`, and on to `target`: also OpenID Connect's end."""
    store = sessions.sessions(request)
    session = store.new(principal, via)
    response = RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
    store.set_cookie(response, session, sessions.secure_cookies(request))
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@pages.post(PREFIX + "/logout", name="console.logout", include_in_schema=False)
async def logout(request: Request, session: Editor) -> Response:
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    sessions.Sessions.clear_cookie(response, sessions.secure_cookies(request))
    return response

"""The console's sessions: who is signed in, in a signed cookie, and the CSRF token that goes
with it.

A session is a small signed value (itsdangerous, HMAC-SHA256 with MEDIAGATE_CONSOLE_SECRET or
the one kept in the database), in an HttpOnly, SameSite=Lax cookie: no server-side state, so
every replica that shares the secret knows it. It says who signed in, how, and when; it is
checked again on every request against what signed it in (an admin key still configured, a
client key not revoked or expired), so revoking a key ends its sessions on every replica.

Every state-changing request of the console carries the session's CSRF token (a form's hidden
`csrf_token`, or the `X-CSRF-Token` header of a script's fetch), derived from the session's own
random id by HMAC and compared in constant time; a request whose `Origin` is another site's is
refused as well.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection
from starlette.responses import Response

from mediagate.errors import AuthenticationFailed, PermissionDenied
from mediagate.gateway import Gateway
from mediagate.http.principals import Principal, Role

COOKIE = "mediagate_console"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
PATH = "/"  # the playground's requests to /v1 carry the session too

Via = Literal["admin_key", "client_key", "oidc", "open"]


@dataclass(frozen=True)
class Session:
    principal: Principal
    via: Via
    sid: str  # random: what the CSRF token is derived from
    issued_at: float


class Sessions:
    """Makes and reads session cookies with one secret (the same on every replica)."""

    def __init__(self, secret: bytes, max_age_s: float) -> None:
        self._secret = secret
        self.max_age_s = max_age_s
        self._signer = URLSafeTimedSerializer(secret, salt="mediagate.console.session")

    def new(self, principal: Principal, via: Via) -> Session:
        return Session(principal, via, secrets.token_urlsafe(16), time.time())

    def dumps(self, session: Session) -> str:
        p = session.principal
        return self._signer.dumps(
            {"n": p.name, "r": p.role, "t": p.team, "v": session.via, "s": session.sid}
        )

    def loads(self, value: str) -> Session | None:
        """The session a cookie holds, or None when it is not ours, tampered with or expired."""
        try:
            data, signed_at = self._signer.loads(
                value, max_age=int(self.max_age_s), return_timestamp=True
            )
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(data, dict):
            return None
        role: Any = data.get("r")
        if role not in ("admin", "viewer", "member"):
            return None
        principal = Principal(str(data.get("n")), _role(role), data.get("t") or None)
        via: Any = data.get("v")
        if via not in ("admin_key", "client_key", "oidc", "open"):
            return None
        return Session(principal, via, str(data.get("s")), signed_at.timestamp())

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._secret, b"csrf:" + session.sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session: Session, presented: str | None) -> None:
        expected = self.csrf_token(session)
        if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
            raise PermissionDenied(
                "This form has expired or did not come from the console: reload the page and "
                "try again.",
                code="csrf_failed",
            )

    def set_cookie(self, response: Response, session: Session, secure: bool) -> None:
        response.set_cookie(
            COOKIE,
            self.dumps(session),
            max_age=int(self.max_age_s),
            path=PATH,
            httponly=True,
            samesite="lax",
            secure=secure,
        )

    @staticmethod
    def clear_cookie(response: Response, secure: bool) -> None:
        response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="lax", secure=secure)


def _role(value: str) -> Role:
    return "admin" if value == "admin" else "viewer" if value == "viewer" else "member"


def sessions(conn: HTTPConnection) -> Sessions:
    gw: Gateway = conn.app.state.gateway
    return _sessions(gw.console_secret, gw.settings.console_session_s)


@functools.lru_cache(maxsize=4)
def _sessions(secret: bytes, max_age_s: float) -> Sessions:
    return Sessions(secret, max_age_s)


def current(conn: HTTPConnection) -> Session | None:
    """The request's session, still valid: its cookie signed by us and not expired, and what
    signed it in still there (an admin key still configured, a client key still usable, with
    its team as it is now). None otherwise."""
    value = conn.cookies.get(COOKIE)
    if not value:
        return None
    session = sessions(conn).loads(value)
    if session is None:
        return None
    gw: Gateway = conn.app.state.gateway
    p = session.principal
    if session.via == "admin_key":
        if not any(k.name == p.name and k.role == p.role for k in gw.admin_keys):
            return None
    elif session.via == "open":
        if gw.clients.enabled or gw.admin_keys:  # keys since: sign in with one
            return None
    elif session.via == "client_key":
        try:
            policy = gw.clients.usable(p.name)
        except AuthenticationFailed:
            return None
        if policy.team != p.team:  # moved to another team: sign in again
            return None
    return session


def same_origin(conn: HTTPConnection) -> bool:
    """Whether the request's Origin (when the browser sent one) is this site's own."""
    origin = conn.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = conn.headers.get("x-forwarded-host") or conn.headers.get("host") or ""
    host = host.split(",")[0].strip()
    return origin.split("://", 1)[-1].rstrip("/") == host


def require_csrf(conn: HTTPConnection, session: Session, presented: str | None) -> None:
    """403 unless a state-changing request carries the session's token and comes from here."""
    if not same_origin(conn):
        raise PermissionDenied("This request came from another site.", code="csrf_failed")
    sessions(conn).check_csrf(session, presented)


def secure_cookies(conn: HTTPConnection) -> bool:
    """Cookies marked Secure when the console is reached over HTTPS (directly or behind a
    proxy that says so)."""
    gw: Gateway = conn.app.state.gateway
    if gw.settings.public_url:
        return gw.settings.public_url.startswith("https://")
    proto = conn.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return (proto or conn.url.scheme) == "https"

"""What every endpoint shares: the gateway's parts, the calling client, a bounded JSON body, and
the gateway's own base URL as the client sees it.

One way of applying the client key: every handler that acts for a client takes it as a
parameter, `policy: Client` (FastAPI's dependency injection, so `app.dependency_overrides` and
router dependencies apply to every route alike). A request's endpoint label is the name of the
route that served it (`name="images.generations"`), read by the bookkeeping middleware.

All async, so FastAPI runs them on the event loop instead of handing them to a worker thread
(a thread hop per request).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from starlette.types import Scope

from mediagate import context
from mediagate.accounting.clients import ANONYMOUS, KeyPolicy
from mediagate.accounting.metering import Gate
from mediagate.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from mediagate.gateway import Gateway
from mediagate.http import sessions
from mediagate.http.bodies import parse_json, read_body
from mediagate.http.headers import ACT_AS

_FORWARDED_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_FORWARDED_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def client(request: Request) -> KeyPolicy:
    """The calling client key's policy (the dependency that enforces auth): the bearer key's,
    or, for the console's signed-in user (its playground), the key it names in `X-Mediagate-Key`
    (`acting_key`)."""
    gw = gateway(request)
    ctx = context.current()
    if not gw.clients.enabled:
        policy = ANONYMOUS
    else:
        authorization = request.headers.get("authorization")
        acting = request.headers.get(ACT_AS) if authorization is None else None
        policy = (
            gw.clients.identify(authorization)
            if acting is None
            else acting_key(request, gw, acting, ctx)
        )
    ctx.key_name, ctx.team = policy.name, policy.team
    return policy


# The console's playground sends its /v1 requests with the user's session (its cookie), the
# header ACT_AS naming which of the team's keys to act with, and the CSRF token: the same
# request path as any client's, counted against that key, with the user recorded.
_KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def acting_key(request: Request, gw: Gateway, name: str, ctx: context.RequestContext) -> KeyPolicy:
    """The key a signed-in console user acts with: 401 without a valid session, 403 without
    the session's CSRF token (or from another site) or for a key the user may not use."""
    session = sessions.current(request)
    if session is None:
        raise AuthenticationFailed(
            "Your console session has ended: sign in again, or send an API key as "
            "'Authorization: Bearer YOUR_KEY'."
        )
    sessions.require_csrf(request, session, request.headers.get(sessions.CSRF_HEADER))
    if not _KEY_NAME.fullmatch(name):
        raise InvalidRequest(f"Invalid '{ACT_AS}': not a key name.", param=ACT_AS)
    policy = gw.clients.usable(name)
    if not session.principal.may_act_with(policy.name, policy.team):
        raise PermissionDenied(
            f"You may not act with the key '{policy.name}': it is not your team's.",
            code="permission_denied",
        )
    ctx.principal = session.principal.name
    return policy


# The calling client key's policy, as a handler parameter: `policy: Client`.
Client = Annotated[KeyPolicy, Depends(client)]


@asynccontextmanager
async def admitted(request: Request, policy: KeyPolicy) -> AsyncIterator[Gate]:
    """The scope of a request that may cost money, entered before its body is read: the key's
    request rate, concurrency slot and budget left (`Metering.gate`), so a client over its
    limits is answered without the gateway reading (or holding) its body. The service's
    admission takes the slot over; one it never took (a bad body, a replay) is freed here."""
    gate = await gateway(request).metering.gate(policy)
    try:
        yield gate
    finally:
        await gate.release()


async def json_body(request: Request, cap: int | None = None) -> Any:
    """The request's JSON, read bounded (the endpoint's `cap`, and MEDIAGATE_MAX_JSON_BYTES)
    and parsed safely."""
    settings = gateway(request).settings
    limit = min(cap, settings.max_json_bytes) if cap is not None else settings.max_json_bytes
    return parse_json(await read_body(request, limit))


async def read_budget(request: Request, policy: KeyPolicy) -> None:
    """A read takes from the key's read budget (MEDIAGATE_READS_PER_MINUTE): a 429 past it."""
    gw = gateway(request)
    await gw.metering.admit_read(policy, gw.settings.reads_per_minute)


def list_limit(value: str | None, most: int = 100) -> int:
    """A list's `limit` query parameter: 20 by default, 1 to `most`."""
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise InvalidRequest(
            f"Invalid 'limit': expected an integer from 1 to {most}.", param="limit"
        )
    return int(value)


def list_order(value: str | None) -> Literal["asc", "desc"]:
    if value in (None, "desc"):
        return "desc"
    if value == "asc":
        return "asc"
    raise InvalidRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's cursor page: the items, the first and last ids, and whether more follow."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def public_base(request: Request) -> str:
    """The gateway's own base URL as the client reaches it, for the links it hands out."""
    configured = gateway(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    headers, scope = request.headers, request.scope
    server = scope.get("server")
    return _public_base(
        headers.get("x-forwarded-proto", ""),
        headers.get("x-forwarded-host", ""),
        headers.get("x-forwarded-prefix", ""),
        headers.get("host"),
        scope.get("scheme", "http"),
        tuple(server) if server else None,
        scope.get("root_path", ""),
    )


# A pure function of the request's few inputs, and the same few for every request: worked out
# once each (bounded, as the headers are the client's).
@lru_cache(maxsize=256)
def _public_base(
    proto: str,
    forwarded_host: str,
    prefix: str,
    host: str | None,
    scheme: str,
    server: tuple[str, int | None] | None,
    root_path: str,
) -> str:
    # Behind a proxy the Host the gateway sees is not the one clients use; the usual
    # X-Forwarded-* headers say which is. Values that are not plainly a host are ignored.
    proto = proto.split(",")[0].strip()
    forwarded_host = forwarded_host.split(",")[0].strip()
    prefix = prefix.split(",")[0].strip().rstrip("/")
    seen: Scope = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "root_path": root_path,
        "path": "/",
        "query_string": b"",
        "headers": [] if host is None else [(b"host", host.encode("latin-1"))],
    }
    base = str(Request(seen).base_url).rstrip("/")
    scheme, _, netloc = base.partition("://")
    scheme = proto if proto in ("http", "https") else scheme
    netloc = forwarded_host if _FORWARDED_HOST.match(forwarded_host) else netloc
    prefix = prefix if _FORWARDED_PREFIX.match(prefix) else ""
    return f"{scheme}://{netloc}{prefix}"

"""The admin API's door (`/admin/v1`): who is calling, and what they may see.

Three kinds of caller, all with `Authorization: Bearer <key>`:
- an admin key (MEDIAGATE_ADMIN_KEYS `name:role:sha256`, role `admin` or `viewer`; the older
  MEDIAGATE_ADMIN_KEY is one `admin` named "admin"), compared by digest in constant time;
- a client key: a `member` of its team (or of no team: then only its own key's records), who
  may read its team's usage, requests and jobs, never another team's.

Every admin route takes `caller: Caller` (any of the three) and asks `caller.require(...)` for
what it does; a member's reads are narrowed by `caller.scope()`. The routes themselves live in
the modules beside this one (`admin_keys`, `admin_reads`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Generic, Literal, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict

from mediagate import context
from mediagate.errors import AuthenticationFailed, InvalidRequest
from mediagate.gateway import ConfigError, Gateway
from mediagate.http.deps import gateway
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A list answer of the admin API: one keyset page, and the cursor of the next."""

    model_config = ConfigDict(extra="forbid")

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None


PREFIX = "/admin/v1"


async def principal(request: Request) -> Principal:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
        )
    found, _ = key_principal(gateway(request), token)
    context.current().key_name = found.name
    return found


def key_principal(gw: Gateway, token: str) -> tuple[Principal, bool]:
    """Who a key is: an admin key's principal (True), else its client key's team member
    (False); 401 when it is neither. Also the console's sign-in with a key."""
    presented = hashlib.sha256(token.encode()).hexdigest()
    found: Principal | None = None
    for key in gw.admin_keys:
        # Every configured digest compared, in constant time: no early exit to time.
        if hmac.compare_digest(presented.encode(), key.sha256.encode()) and found is None:
            found = Principal(key.name, key.role)
    if found is not None:
        return found, True
    policy = gw.clients.identify(f"Bearer {token}")  # 401 when no client key either
    return Principal(policy.name, "member", policy.team), False


# The caller of an admin route, as a handler parameter: `caller: Caller`.
Caller = Annotated[Principal, Depends(principal)]

admin = Routes(prefix=PREFIX)


@admin.get("/whoami", name="admin.whoami")
async def whoami(caller: Caller) -> dict[str, str | None]:
    """Who the key is to the admin API: its name, role and team."""
    return {
        "object": "admin.principal",
        "name": caller.name,
        "role": caller.role,
        "team": caller.team,
    }


@admin.post("/catalog/reload", name="admin.catalog_reload")
async def reload_catalog(request: Request, caller: Caller) -> dict[str, object]:
    """MEDIAGATE_CONFIG read again on this replica, as SIGHUP does: in force for new requests
    if valid; an invalid file is a 400 naming why, and the catalog in force is kept. Each
    replica reloads on its own call (or signal)."""
    caller.require("admin")
    gw = gateway(request)
    try:
        catalog = gw.reload_catalog()
    except ConfigError as exc:
        raise InvalidRequest(
            f"The catalog was not reloaded; the one in force is kept: {exc}",
            param="MEDIAGATE_CONFIG",
            code="catalog_invalid",
        ) from None
    return {
        "object": "catalog.reload",
        "models": len(catalog.models),
        "routes": len(catalog.routes),
    }

"""What each client key has used and spent: its own view, and the platform team's view of all."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from fastapi import Depends, Request

from mediagate import context
from mediagate.accounting.clients import KeyPolicy
from mediagate.errors import AuthenticationFailed, InvalidRequest, NotFound
from mediagate.gateway import Gateway
from mediagate.http.deps import Client, gateway
from mediagate.http.routes import Routes
from mediagate.stores.ledger import DAY_S, day_of

MAX_DAYS = 400


def _days(request: Request) -> list[str]:
    raw = request.query_params.get("days", "30")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
        raise InvalidRequest(f"Invalid 'days': expected 1 to {MAX_DAYS}.", param="days")
    now = time.time()
    return [day_of(now - i * DAY_S) for i in range(int(raw))][::-1]


def _budget(limit: float | None, spent: float, reserved: float) -> dict[str, Any] | None:
    if limit is None:
        return None
    remaining = max(0.0, limit - spent - reserved)
    return {
        "limit_usd": limit,
        "spent_usd": round(spent, 6),
        "reserved_usd": round(reserved, 6),
        "remaining_usd": round(remaining, 6),
    }


async def report(gw: Gateway, policy: KeyPolicy, days: list[str]) -> dict[str, Any]:
    await gw.metering.flush()  # the usage of requests answered so far, booked in batches
    if gw.request_log is not None:
        await gw.request_log.flush()  # and their rows, whose rollups count the requests
    rows = await gw.ledger.usage(policy.name, days)
    spend = await gw.ledger.spend(policy.name)
    await gw.metering.update_budget_gauge(policy, spend)
    data = [
        {
            "date": row.day,
            "model": row.model,
            "requests": row.requests,
            "images": row.images,
            "video_seconds": row.video_seconds,
            "cost_usd": round(row.cost, 6),
        }
        for row in rows
    ]
    totals: dict[str, float] = {
        "requests": sum(row.requests for row in rows),
        "images": sum(row.images for row in rows),
        "video_seconds": sum(row.video_seconds for row in rows),
        "cost_usd": round(sum(row.cost for row in rows), 6),
    }
    return {
        "object": "usage",
        "key": policy.name,
        "start_date": days[0],
        "end_date": days[-1],
        "data": data,
        "totals": totals,
        "budget": {
            "day": _budget(policy.budget_usd_per_day, spend.day, spend.reserved),
            "month": _budget(policy.budget_usd_per_month, spend.month, spend.reserved),
        },
    }


async def admin(request: Request) -> None:
    """The admin key, compared in constant time; no admin view when none is configured."""
    configured = gateway(request).settings.admin_key
    if configured is None:
        raise NotFound("The admin view is not enabled (set MEDIAGATE_ADMIN_KEY).")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    presented = hashlib.sha256(token.strip().encode()).digest()
    expected = hashlib.sha256(configured.get_secret_value().encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected):
        raise AuthenticationFailed("This view needs the admin key.")
    context.current().key_name = "admin"


usage = Routes(prefix="/v1")


@usage.get("/usage", name="usage")
async def own_usage(request: Request, policy: Client) -> dict[str, Any]:
    return await report(gateway(request), policy, _days(request))


@usage.get("/admin/usage", dependencies=[Depends(admin)], name="admin.usage")
async def all_usage(request: Request) -> dict[str, Any]:
    gw = gateway(request)
    days = _days(request)
    return {"object": "list", "data": [await report(gw, p, days) for p in gw.clients.policies()]}

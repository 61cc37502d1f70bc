"""Client keys and teams through the admin API: `/admin/v1/keys` and `/admin/v1/teams`.

Admins write; viewers read everything; a client key (a `member`) reads only its own team's keys
and team (a key without a team: only itself); anything else is a 404, as if it did not exist.
No answer ever holds a key's secret or its digest, except the secret of a key just made or
rotated, answered once as `key`. The keys of MEDIAGATE_API_KEYS and of the keys file are listed
(`source` `env`, `file`) and read-only here. A change is in force on this replica at once and
on every other within about a second (`KeyRegistry`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from mediagate.errors import InvalidRequest, NotFound
from mediagate.http.admin import PREFIX, Caller, Page
from mediagate.http.admin_reads import known_parameters
from mediagate.http.deps import gateway
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes

# A query parameter a route does not take is a 400 naming it, as on the admin API's reads.
keys = Routes(prefix=PREFIX, dependencies=[Depends(known_parameters)])

_NAME = r"^[A-Za-z0-9._-]+$"
_MAX_GRACE_S = 30 * 86400.0

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=_NAME)]
After = Annotated[str | None, Query(max_length=100)]
Limit = Annotated[int, Query(ge=1, le=100)]


class _TeamFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    requests_per_minute: int | None = Field(default=None, ge=1)
    images_per_minute: int | None = Field(default=None, ge=1)
    reads_per_minute: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)
    budget_usd_per_day: float | None = Field(default=None, ge=0)
    budget_usd_per_month: float | None = Field(default=None, ge=0)


class _KeyFields(_TeamFields):
    team: Name | None = None
    expires_at: datetime | None = None  # ISO 8601; without a zone: UTC
    webhook_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")


class KeyCreate(_KeyFields):
    name: Name


class KeyUpdate(_KeyFields):
    """Only the fields sent are changed; `null` clears one (`models`: back to every model)."""


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long the old secret stays valid beside the new one (0: refused at once).
    grace_s: float = Field(default=0, ge=0, le=_MAX_GRACE_S)


class TeamCreate(_TeamFields):
    name: Name


class TeamUpdate(_TeamFields):
    """Only the fields sent are changed; `null` clears one."""


class ClientKey(BaseModel):
    object: Literal["client_key"] = "client_key"
    name: str
    team: str | None
    models: list[str]
    requests_per_minute: int | None
    images_per_minute: int | None
    reads_per_minute: int | None
    concurrent_requests: int | None
    budget_usd_per_day: float | None
    budget_usd_per_month: float | None
    expires_at: str | None
    webhook_url: str | None
    source: str  # api | file | env
    created_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class NewClientKey(ClientKey):
    key: str  # the secret: answered this once, never again
    # Until when the previous secret is still accepted (a rotation with grace_s).
    previous_key_valid_until: str | None = None


class Team(BaseModel):
    object: Literal["team"] = "team"
    name: str
    models: list[str] | None
    requests_per_minute: int | None
    images_per_minute: int | None
    reads_per_minute: int | None
    concurrent_requests: int | None
    budget_usd_per_day: float | None
    budget_usd_per_month: float | None
    source: str
    created_at: str | None


class KeyList(Page[ClientKey]):
    """A page of client keys."""


class TeamList(Page[Team]):
    """A page of teams."""


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def public_record(row: dict[str, Any]) -> dict[str, Any]:
    fields = {name: row[name] for name in ClientKey.model_fields if name in row}
    for name in ("expires_at", "created_at", "last_used_at", "revoked_at"):
        fields[name] = _iso(row[name])
    fields["models"] = row["models"] or ["*"]
    return fields


def _team(row: dict[str, Any]) -> Team:
    fields = {name: row[name] for name in Team.model_fields if name in row}
    fields["created_at"] = _iso(row["created_at"])
    return Team(**fields)


def columns(body: BaseModel) -> dict[str, Any]:
    """The fields the client sent, as the tables' columns (times as Unix seconds)."""
    fields = {name: getattr(body, name) for name in body.model_fields_set if name != "name"}
    if "expires_at" in fields and fields["expires_at"] is not None:
        when: datetime = fields["expires_at"]
        fields["expires_at"] = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if "models" in fields and fields["models"] is None and "team" in type(body).model_fields:
        fields["models"] = ["*"]  # a key without a list may use every model
    return fields


def _check_webhook(request: Request, fields: dict[str, Any]) -> None:
    if fields.get("webhook_url") and gateway(request).settings.webhook_secret is None:
        raise InvalidRequest(
            "A webhook_url needs MEDIAGATE_WEBHOOK_SECRET set on the gateway.",
            param="webhook_url",
        )


def _visible(caller: Principal, row: dict[str, Any]) -> bool:
    """A member sees its own team's keys (without a team: only its own key)."""
    if caller.role != "member":
        return True
    if caller.team is not None:
        return bool(row.get("team") == caller.team)
    return bool(row.get("name") == caller.name)


def _page(rows: list[Any], limit: int) -> tuple[list[Any], bool, str | None]:
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, more, (rows[-1]["name"] if more and rows else None)


@keys.get("/keys", name="admin.keys.list", response_model=KeyList)
async def list_keys(
    request: Request, caller: Caller, after: After = None, limit: Limit = 20
) -> KeyList:
    """Every client key by name (a member: its team's), `limit` at a time after `after`."""
    team, name = None, None
    if caller.role == "member":
        team, name = (caller.team, None) if caller.team else (None, caller.name)
    else:
        caller.require("viewer")
    rows = await gateway(request).clients.keys(after=after, limit=limit + 1, team=team, name=name)
    rows, more, cursor = _page(rows, limit)
    data = [ClientKey(**public_record(row)) for row in rows]
    return KeyList(data=data, has_more=more, next_cursor=cursor)


@keys.post("/keys", name="admin.keys.create", response_model=NewClientKey)
async def create_key(request: Request, caller: Caller, body: KeyCreate) -> NewClientKey:
    """A new client key: its secret is in this answer (`key`) and nowhere else, ever."""
    caller.require("admin")
    fields = columns(body)
    _check_webhook(request, fields)
    secret, row = await gateway(request).clients.create_key(body.name, fields)
    return NewClientKey(**public_record(row), key=secret)


async def _key_for(request: Request, caller: Caller, name: str) -> dict[str, Any]:
    row = await gateway(request).clients.key(name)
    if row is None or not _visible(caller, row):
        raise NotFound(f"No key named '{name[:100]}'.", code="key_not_found")
    return row


@keys.get("/keys/{name}", name="admin.keys.get", response_model=ClientKey)
async def get_key(request: Request, caller: Caller, name: str) -> ClientKey:
    if caller.role != "member":
        caller.require("viewer")
    return ClientKey(**public_record(await _key_for(request, caller, name)))


@keys.patch("/keys/{name}", name="admin.keys.update", response_model=ClientKey)
async def update_key(request: Request, caller: Caller, name: str, body: KeyUpdate) -> ClientKey:
    """Change a key's team, models, limits, budgets, expiry or webhook (the fields sent)."""
    caller.require("admin")
    fields = columns(body)
    _check_webhook(request, fields)
    row = await gateway(request).clients.update_key(name, fields)
    return ClientKey(**public_record(row))


@keys.delete("/keys/{name}", name="admin.keys.revoke", response_model=ClientKey)
async def revoke_key(request: Request, caller: Caller, name: str) -> ClientKey:
    """Revoke a key: refused on every replica within a second; its record stays."""
    caller.require("admin")
    return ClientKey(**public_record(await gateway(request).clients.revoke_key(name)))


@keys.post("/keys/{name}/rotate", name="admin.keys.rotate", response_model=NewClientKey)
async def rotate_key(
    request: Request, caller: Caller, name: str, body: KeyRotate | None = None
) -> NewClientKey:
    """A new secret for the key (answered once); the old one stays valid `grace_s` seconds."""
    caller.require("admin")
    grace_s = body.grace_s if body is not None else 0.0
    secret, row = await gateway(request).clients.rotate_key(name, grace_s)
    return NewClientKey(
        **public_record(row), key=secret, previous_key_valid_until=_iso(row["previous_until"])
    )


@keys.get("/teams", name="admin.teams.list", response_model=TeamList)
async def list_teams(
    request: Request, caller: Caller, after: After = None, limit: Limit = 20
) -> TeamList:
    """Every team by name (a member: its own), `limit` at a time after `after`."""
    name = None
    if caller.role == "member":
        if caller.team is None:
            return TeamList(data=[], has_more=False, next_cursor=None)
        name = caller.team
    else:
        caller.require("viewer")
    rows = await gateway(request).clients.teams(after=after, limit=limit + 1, name=name)
    rows, more, cursor = _page(rows, limit)
    return TeamList(data=[_team(row) for row in rows], has_more=more, next_cursor=cursor)


@keys.post("/teams", name="admin.teams.create", response_model=Team)
async def create_team(request: Request, caller: Caller, body: TeamCreate) -> Team:
    caller.require("admin")
    return _team(await gateway(request).clients.create_team(body.name, columns(body)))


@keys.get("/teams/{name}", name="admin.teams.get", response_model=Team)
async def get_team(request: Request, caller: Caller, name: str) -> Team:
    if caller.role != "member":
        caller.require("viewer")
    row = await gateway(request).clients.team_record(name)
    if row is None or (caller.role == "member" and caller.team != name):
        raise NotFound(f"No team named '{name[:100]}'.", code="team_not_found")
    return _team(row)


@keys.patch("/teams/{name}", name="admin.teams.update", response_model=Team)
async def update_team(request: Request, caller: Caller, name: str, body: TeamUpdate) -> Team:
    caller.require("admin")
    return _team(await gateway(request).clients.update_team(name, columns(body)))


@keys.delete("/teams/{name}", name="admin.teams.delete")
async def delete_team(request: Request, caller: Caller, name: str) -> dict[str, Any]:
    """Delete a team; one that still has keys (not revoked) is a 409."""
    caller.require("admin")
    await gateway(request).clients.delete_team(name)
    return {"object": "team.deleted", "name": name, "deleted": True}

"""The console's Keys and teams page (`/console/keys`): every client key and team, and (for an
admin) the forms that make, change, rotate and revoke them.

Everything goes through the admin API's own handlers (mediagate.http.admin_keys), called with
the signed-in user as the caller: the same role rules (a viewer reads everything, a member its
own team's keys), the same validation and error messages, and the same registry, so a change is
in force on every replica as one made through /admin/v1/keys is. A form post answers a redirect
back to the page (post/redirect/get), except making or rotating a key, whose answer is the one
page that ever shows the new secret. A form that does not validate comes back with the admin
API's message, as a 400 (a clash, a 409).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from mediagate.console.web import PREFIX, Editor, Viewer, render
from mediagate.errors import GatewayError, InvalidRequest
from mediagate.http import admin_keys as api
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes
from mediagate.http.sessions import CSRF_FIELD, Session

pages = Routes()

PAGE = PREFIX + "/keys"
LIMIT = 100  # keys (and teams) a page lists; `after` / `teams_after` page on

# The limits and budgets a key and a team both have: (form field, label).
LIMITS: tuple[tuple[str, str], ...] = (
    ("requests_per_minute", "Requests per minute"),
    ("images_per_minute", "Images per minute"),
    ("reads_per_minute", "Reads per minute"),
    ("concurrent_requests", "Concurrent requests"),
)
BUDGETS: tuple[tuple[str, str], ...] = (
    ("budget_usd_per_day", "Budget per day (USD)"),
    ("budget_usd_per_month", "Budget per month (USD)"),
)
_KEY_ONLY = ("team", "expires_at", "webhook_url")


def _invalid(exc: ValidationError) -> InvalidRequest:
    """A form's first problem, worded as the admin API words a body's (its 400)."""
    errors = exc.errors()
    param = ".".join(str(p) for p in errors[0]["loc"]) or None if errors else None
    message = errors[0]["msg"] if errors else "Invalid request"
    return InvalidRequest(
        f"Invalid value for '{param}': {message}" if param else message, param=param
    )


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}


def _fields(form: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """The form's fields as an admin API body: a blank field is `null` (cleared), the models
    one per line or comma-separated (blank: none set)."""
    body: dict[str, Any] = {}
    for name in names:
        if name not in form:
            continue
        value = form[name].strip()
        if name == "models":
            listed = [m.strip() for m in value.replace(",", "\n").splitlines() if m.strip()]
            body[name] = listed or None
        else:
            body[name] = value or None
    return body


def _body(model: type[BaseModel], form: dict[str, str], names: tuple[str, ...]) -> Any:
    try:
        return model.model_validate(_fields(form, names))
    except ValidationError as exc:
        raise _invalid(exc) from None


_TEAM_FIELDS = ("models", *(n for n, _ in LIMITS), *(n for n, _ in BUDGETS))
_KEY_FIELDS = (*_TEAM_FIELDS, *_KEY_ONLY)


def _back(path: str = PAGE) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"cache-control": "no-store"})


# --- reads ------------------------------------------------------------------------------------


async def _lists(
    request: Request, principal: Principal, after: str | None, teams_after: str | None
) -> dict[str, Any]:
    keys = await api.list_keys(request, principal, after=after, limit=LIMIT)
    teams = await api.list_teams(request, principal, after=teams_after, limit=LIMIT)
    return {"keys": keys, "teams": teams}


async def _team_names(request: Request, principal: Principal) -> list[str]:
    teams = await api.list_teams(request, principal, limit=LIMIT)
    return [t.name for t in teams.data]


async def _main(
    request: Request,
    session: Session,
    *,
    status: int = 200,
    error: GatewayError | None = None,
    form: str | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    after = request.query_params.get("after") or None
    teams_after = request.query_params.get("teams_after") or None
    lists = await _lists(request, session.principal, after, teams_after)
    return render(
        request,
        session,
        "keys.html",
        status=status,
        title="Keys and teams",
        limits=LIMITS,
        budgets=BUDGETS,
        error=error,
        failed_form=form,
        values=values or {},
        team_names=[t.name for t in lists["teams"].data],
        **lists,
    )


@pages.get(PAGE, name="console.keys", include_in_schema=False)
async def keys_page(request: Request, session: Viewer) -> HTMLResponse:
    return await _main(request, session)


@pages.get(PAGE + "/key/{name}", name="console.keys.key", include_in_schema=False)
async def key_page(request: Request, session: Viewer, name: str) -> HTMLResponse:
    return await _key_page(request, session, name)


async def _key_page(
    request: Request,
    session: Session,
    name: str,
    *,
    status: int = 200,
    error: GatewayError | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    principal = session.principal
    key = await api.get_key(request, principal, name)
    return _record_page(
        request,
        session,
        "key.html",
        status,
        error,
        values if values is not None else _key_values(key),
        principal.role == "admin" and key.source == "api" and key.revoked_at is None,
        key=key,
        title=f"Key {key.name}",
        team_names=await _team_names(request, principal),
    )


def _record_page(
    request: Request,
    session: Session,
    template: str,
    status: int,
    error: GatewayError | None,
    values: dict[str, str],
    editable: bool,
    **record: Any,
) -> HTMLResponse:
    """A key's or a team's page: its record, and its form (the values shown, the error of the
    change refused) when an admin may edit it."""
    return render(
        request,
        session,
        template,
        status=status,
        limits=LIMITS,
        budgets=BUDGETS,
        error=error,
        values=values,
        editable=editable,
        **record,
    )


def _key_values(key: api.ClientKey) -> dict[str, str]:
    values = _values(key.model_dump(), (*_TEAM_FIELDS, "team", "webhook_url"))
    if key.models == ["*"]:
        values["models"] = ""
    # <input type="datetime-local"> takes `2026-12-31T23:59` (UTC here, as labelled).
    values["expires_at"] = (key.expires_at or "")[:16]
    return values


def _values(record: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in names:
        value = record.get(name)
        if value is None:
            values[name] = ""
        elif isinstance(value, list):
            values[name] = "\n".join(value)
        elif isinstance(value, float) and value.is_integer():
            values[name] = str(int(value))
        else:
            values[name] = str(value)
    return values


@pages.get(PAGE + "/team/{name}", name="console.keys.team", include_in_schema=False)
async def team_page(request: Request, session: Viewer, name: str) -> HTMLResponse:
    return await _team_page(request, session, name)


async def _team_page(
    request: Request,
    session: Session,
    name: str,
    *,
    status: int = 200,
    error: GatewayError | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    principal = session.principal
    team = await api.get_team(request, principal, name)
    return _record_page(
        request,
        session,
        "team.html",
        status,
        error,
        values if values is not None else _values(team.model_dump(), _TEAM_FIELDS),
        principal.role == "admin" and team.source == "api",
        team=team,
        title=f"Team {team.name}",
    )


# --- changes (an admin's) ---------------------------------------------------------------------


def _secret_page(
    request: Request, session: Session, key: api.NewClientKey, action: str
) -> HTMLResponse:
    """The one page that shows a key's new secret: never cached, never shown again."""
    return render(
        request, session, "key_secret.html", title=f"Key {key.name}", key=key, action=action
    )


@pages.post(PAGE, name="console.keys.create", include_in_schema=False)
async def create_key(request: Request, session: Editor) -> Response:
    session.principal.require("admin")
    form = await _form(request)
    try:
        body = _body(api.KeyCreate, form, ("name", *_KEY_FIELDS))
        made = await api.create_key(request, session.principal, body)
    except GatewayError as exc:
        if exc.status not in (400, 409):
            raise
        return await _main(request, session, status=exc.status, error=exc, form="key", values=form)
    return _secret_page(request, session, made, "made")


@pages.post(PAGE + "/key/{name}", name="console.keys.update", include_in_schema=False)
async def update_key(request: Request, session: Editor, name: str) -> Response:
    session.principal.require("admin")
    form = await _form(request)
    try:
        body = _body(api.KeyUpdate, form, _KEY_FIELDS)
        await api.update_key(request, session.principal, name, body)
    except GatewayError as exc:
        if exc.status not in (400, 409):
            raise
        return await _key_page(request, session, name, status=exc.status, error=exc, values=form)
    return _back(f"{PAGE}/key/{name}")


@pages.post(PAGE + "/key/{name}/revoke", name="console.keys.revoke", include_in_schema=False)
async def revoke_key(request: Request, session: Editor, name: str) -> Response:
    session.principal.require("admin")
    try:
        await api.revoke_key(request, session.principal, name)
    except GatewayError as exc:
        if exc.status != 409:  # a key from the environment or the keys file, or revoked
            raise
        return await _key_page(request, session, name, status=409, error=exc)
    return _back(f"{PAGE}/key/{name}")


@pages.post(PAGE + "/key/{name}/rotate", name="console.keys.rotate", include_in_schema=False)
async def rotate_key(request: Request, session: Editor, name: str) -> Response:
    session.principal.require("admin")
    form = await _form(request)
    try:
        hours = float(form.get("grace_hours") or 0)
        body = api.KeyRotate(grace_s=hours * 3600)
    except (ValueError, ValidationError):
        error = InvalidRequest(
            "Invalid value for 'grace_hours': a number of hours from 0 to 720.", param="grace_hours"
        )
        return await _key_page(request, session, name, status=400, error=error)
    try:
        made = await api.rotate_key(request, session.principal, name, body)
    except GatewayError as exc:
        if exc.status != 409:
            raise
        return await _key_page(request, session, name, status=409, error=exc)
    return _secret_page(request, session, made, "rotated")


@pages.post(PAGE + "/teams", name="console.keys.team_create", include_in_schema=False)
async def create_team(request: Request, session: Editor) -> Response:
    session.principal.require("admin")
    form = await _form(request)
    try:
        body = _body(api.TeamCreate, form, ("name", *_TEAM_FIELDS))
        await api.create_team(request, session.principal, body)
    except GatewayError as exc:
        if exc.status not in (400, 409):
            raise
        return await _main(request, session, status=exc.status, error=exc, form="team", values=form)
    return _back()


@pages.post(PAGE + "/team/{name}", name="console.keys.team_update", include_in_schema=False)
async def update_team(request: Request, session: Editor, name: str) -> Response:
    session.principal.require("admin")
    form = await _form(request)
    try:
        body = _body(api.TeamUpdate, form, _TEAM_FIELDS)
        await api.update_team(request, session.principal, name, body)
    except GatewayError as exc:
        if exc.status not in (400, 409):
            raise
        return await _team_page(request, session, name, status=exc.status, error=exc, values=form)
    return _back(f"{PAGE}/team/{name}")


@pages.post(PAGE + "/team/{name}/delete", name="console.keys.team_delete", include_in_schema=False)
async def delete_team(request: Request, session: Editor, name: str) -> Response:
    session.principal.require("admin")
    try:
        await api.delete_team(request, session.principal, name)
    except GatewayError as exc:
        if exc.status != 409:
            raise
        return await _team_page(request, session, name, status=409, error=exc)
    return _back()

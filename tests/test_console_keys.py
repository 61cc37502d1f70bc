"""The console's Keys and teams page (issue 26): its forms make, change, rotate and revoke the
same records the admin API does, and the gateway enforces them at once; only an admin changes
anything, a viewer reads everything, a member reads its own team's keys, never a secret."""

from __future__ import annotations

import re
from collections.abc import Callable

import openai
import pytest

from .conftest import (
    CONSOLE_ADMIN_KEY,
    CONSOLE_VIEWER_KEY,
    Console,
    Gateway,
    console_admin_keys,
    create_key,
    two_teams,
)

_SECRET = re.compile(r'<input id="secret-value" type="text" readonly value="([^"]+)"')


def secret_of(html: str) -> str:
    found = _SECRET.search(html)
    assert found is not None, "no secret on the page"
    return found.group(1)


def draw(gw: Gateway, secret: str) -> None:
    gw.sdk(secret).images.generate(model="gpt-image-2-web", prompt="a kite", size="1024x1024")


def test_an_admin_makes_a_team_and_a_key_whose_secret_works_once_shown(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    c = console(gw)
    team = c.post("/console/keys/teams", {"name": "design", "budget_usd_per_month": "50"})
    assert team.status_code == 303
    assert team.headers["location"] == "/console/keys"
    made = c.post(
        "/console/keys",
        {"name": "poster-bot", "team": "design", "images_per_minute": "30", "models": ""},
    )
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    secret = secret_of(made.text)
    assert '<button type="button" data-copy="secret-value">Copy</button>' in made.text
    draw(gw, secret)
    # The page lists both as the admin API does; the secret is never on it again.
    page = c.get("/console/keys")
    assert page.status_code == 200
    assert ">poster-bot</a>" in page.text and ">design</a>" in page.text
    assert "30 img/min" in page.text and "$50.00/month" in page.text
    assert secret not in page.text
    assert secret not in c.get("/console/keys/key/poster-bot").text
    with gw.http(CONSOLE_ADMIN_KEY) as admin:
        record = admin.get("/admin/v1/keys/poster-bot").json()
    assert record["team"] == "design" and record["images_per_minute"] == 30
    assert record["models"] == ["*"]


def test_an_edited_budget_is_enforced_and_a_revoked_key_refused(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    c = console(gw)
    secret = secret_of(c.post("/console/keys", {"name": "app"}).text)
    draw(gw, secret)
    edit = c.post(
        "/console/keys/key/app",
        {"budget_usd_per_day": "0", "models": "gpt-image-2-web", "concurrent_requests": "2"},
    )
    assert edit.status_code == 303
    assert edit.headers["location"] == "/console/keys/key/app"
    page = c.get("/console/keys/key/app")
    assert (
        'name="budget_usd_per_day" type="number" min="0" step="any" inputmode="decimal" value="0"'
        in page.text
    )
    with pytest.raises(openai.RateLimitError) as spent:
        draw(gw, secret)
    assert spent.value.code == "insufficient_quota"
    # Cleared again (a blank field is null), the key draws again.
    assert c.post("/console/keys/key/app", {"budget_usd_per_day": ""}).status_code == 303
    draw(gw, secret)
    revoked = c.post("/console/keys/key/app/revoke")
    assert revoked.status_code == 303
    with pytest.raises(openai.AuthenticationError):
        draw(gw, secret)
    assert "revoked" in c.get("/console/keys/key/app").text


def test_rotation_shows_the_new_secret_once_and_keeps_the_old_for_its_grace(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    c = console(gw)
    old = secret_of(c.post("/console/keys", {"name": "svc"}).text)
    rotated = c.post("/console/keys/key/svc/rotate", {"grace_hours": "1"})
    assert rotated.status_code == 200
    new = secret_of(rotated.text)
    assert new != old
    assert "The previous secret stays valid until" in rotated.text
    draw(gw, new)
    draw(gw, old)  # within its grace
    at_once = c.post("/console/keys/key/svc/rotate", {"grace_hours": "0"})
    draw(gw, secret_of(at_once.text))
    with pytest.raises(openai.AuthenticationError):
        draw(gw, new)


def test_a_form_that_does_not_validate_comes_back_with_the_admin_api_s_message(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    c = console(gw)
    bad = c.post("/console/keys", {"name": "x", "requests_per_minute": "0"})
    assert bad.status_code == 400
    assert "Invalid value for &#39;requests_per_minute&#39;" in bad.text
    assert 'role="alert"' in bad.text
    assert 'value="x"' in bad.text  # what was typed is kept
    no_team = c.post("/console/keys", {"name": "y", "team": "ghosts"})
    assert no_team.status_code == 400
    assert "No team named &#39;ghosts&#39;: create it first" in no_team.text
    c.post("/console/keys", {"name": "z"})
    twice = c.post("/console/keys", {"name": "z"})
    assert twice.status_code == 409
    assert "A key named &#39;z&#39; exists already." in twice.text
    hook = c.post("/console/keys/key/z", {"webhook_url": "https://hooks.example/x"})
    assert hook.status_code == 400
    assert "A webhook_url needs MEDIAGATE_WEBHOOK_SECRET" in hook.text
    create_key(gw, "busy", "ops-team")
    busy = c.post("/console/keys/team/ops-team/delete")
    assert busy.status_code == 409
    assert "still has keys" in busy.text
    c.post("/console/keys/teams", {"name": "empty"})
    assert c.post("/console/keys/team/empty", {"requests_per_minute": "5"}).status_code == 303
    assert 'value="5"' in c.get("/console/keys/team/empty").text
    assert c.post("/console/keys/team/empty/delete").status_code == 303
    assert c.get("/console/keys/team/empty").status_code == 404


def test_only_an_admin_changes_and_every_form_needs_the_csrf_token(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    create_key(gw, "app")
    viewer = console(gw, CONSOLE_VIEWER_KEY)
    page = viewer.get("/console/keys")
    assert ">app</a>" in page.text
    assert "Create key" not in page.text and "only an admin can change them" in page.text
    assert "Revoke key" not in viewer.get("/console/keys/key/app").text
    assert viewer.post("/console/keys", {"name": "mine"}).status_code == 403
    assert viewer.post("/console/keys/key/app/revoke").status_code == 403
    assert viewer.post("/console/keys/teams", {"name": "t"}).status_code == 403
    admin = console(gw)
    forged = admin.http.post("/console/keys/key/app/revoke", data={})
    assert forged.status_code == 403
    wrong = admin.http.post("/console/keys/key/app/revoke", data={"csrf_token": "nope"})
    assert wrong.status_code == 403
    with gw.http(CONSOLE_ADMIN_KEY) as api:
        assert api.get("/admin/v1/keys/app").json()["revoked_at"] is None


def test_a_member_sees_its_own_team_s_keys_only_and_changes_nothing(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    secret = two_teams(gw)
    member = console(gw, secret)
    page = member.get("/console/keys")
    assert ">designer</a>" in page.text and ">shop-bot</a>" in page.text
    assert ">ml</a>" not in page.text and "research" not in page.text
    assert secret not in page.text
    assert member.get("/console/keys/key/ml").status_code == 404
    assert member.get("/console/keys/team/research").status_code == 404
    assert member.get("/console/keys/key/shop-bot").status_code == 200
    assert member.post("/console/keys/key/shop-bot/revoke").status_code == 403


def test_keys_from_the_environment_are_read_only_and_say_why(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys(), api_keys="envbot:mg-env-0123456789")
    c = console(gw)
    page = c.get("/console/keys/key/envbot")
    assert page.status_code == 200
    assert "Defined in MEDIAGATE_API_KEYS: change it there" in page.text
    assert "Revoke key" not in page.text
    refused = c.post("/console/keys/key/envbot/revoke")
    assert refused.status_code == 409
    assert "defined in MEDIAGATE_API_KEYS: change it there." in refused.text
    assert 'role="alert"' in refused.text
    draw(gw, "mg-env-0123456789")  # still in force


def test_an_expiry_set_in_the_form_is_enforced(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    c = console(gw)
    secret = secret_of(c.post("/console/keys", {"name": "temp"}).text)
    draw(gw, secret)
    # As a browser's <input type="datetime-local"> sends it: no seconds, no zone (UTC).
    assert c.post("/console/keys/key/temp", {"expires_at": "2020-01-02T03:04"}).status_code == 303
    page = c.get("/console/keys/key/temp").text
    assert "2020-01-02 03:04:00 UTC" in page
    assert 'name="expires_at" type="datetime-local" value="2020-01-02T03:04"' in page
    with pytest.raises(openai.AuthenticationError) as expired:
        draw(gw, secret)
    assert expired.value.code == "api_key_expired"

"""Client keys and teams in the database, through the admin API (/admin/v1/keys, /teams):
made on one gateway, in force on a second one sharing the database within a second; narrowed,
revoked and rotated (with a grace) the same way; read-only where they come from the keys file
or MEDIAGATE_API_KEYS; a member sees only its own team; no secret in an answer or a log line.
Every test that holds records runs on SQLite and on PostgreSQL (with Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml

from mediagate.accounting.clients import KeyRegistry, digest
from mediagate.errors import AuthenticationFailed
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.migrate import upgrade

from .conftest import CLIENT_KEY, Gateway, wait_until

ADMIN = "mga-admin-0123456789abcdef"
VIEWER = "mga-viewer-0123456789abcdef"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


ADMIN_KEYS = f"ops:admin:{sha(ADMIN)},auditor:viewer:{sha(VIEWER)}"


@pytest.fixture
def pair(job_store: dict[str, str], make_gateway: Callable[..., Gateway]) -> list[Gateway]:
    """Two gateways (replicas) sharing one database: the same SQLite file, or PostgreSQL."""
    return [make_gateway(admin_keys=ADMIN_KEYS, **job_store) for _ in range(2)]


@pytest.fixture
def admin(pair: list[Gateway]) -> Iterator[httpx2.Client]:
    with pair[0].http(ADMIN) as http:
        yield http


def works(gateway: Gateway, key: str) -> bool:
    try:
        gateway.sdk(api_key=key).models.list()
        return True
    except openai.AuthenticationError:
        return False


def within_a_second(check: Callable[[], bool]) -> float:
    """How long until `check` holds (polled, not slept through): under 1 s, the contract."""
    start = time.monotonic()
    wait_until(check, timeout_s=3.0, interval_s=0.02)
    took = time.monotonic() - start
    assert took < 1.0, f"took {took:.2f} s"
    return took


def ok(answer: httpx2.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


def test_a_key_made_on_one_replica_works_on_the_other_within_a_second(
    pair: list[Gateway], admin: httpx2.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mediagate")
    first, second = pair
    team = ok(admin.post("/admin/v1/teams", json={"name": "marketing", "budget_usd_per_day": 5}))
    assert team["name"] == "marketing" and team["budget_usd_per_day"] == 5
    made = ok(
        admin.post(
            "/admin/v1/keys",
            json={
                "name": "designer",
                "team": "marketing",
                "models": ["gpt-image-2-*", "sora_image"],
                "requests_per_minute": 1000,
                "expires_at": "2100-01-01T00:00:00Z",
            },
        )
    )
    secret = made["key"]
    assert secret.startswith("mg-")
    assert made["source"] == "api" and made["team"] == "marketing"
    assert made["expires_at"] == "2100-01-01T00:00:00Z" and made["revoked_at"] is None
    # In force here at once, and on the other replica within a second.
    assert works(first, secret)
    within_a_second(lambda: works(second, secret))
    image = second.sdk(api_key=secret).images.generate(model="gpt-image-2-web", prompt="a cat")
    assert image.data

    # PATCH narrows it: the other replica refuses the model it no longer may use.
    narrowed = ok(admin.patch("/admin/v1/keys/designer", json={"models": ["sora_image"]}))
    assert narrowed["models"] == ["sora_image"] and narrowed["requests_per_minute"] == 1000

    def refused() -> bool:
        try:
            second.sdk(api_key=secret).images.generate(model="gpt-image-2-web", prompt="x")
            return False
        except openai.PermissionDeniedError as exc:
            return exc.code == "model_not_allowed"

    within_a_second(refused)
    assert {m.id for m in second.sdk(api_key=secret).models.list().data} == {"sora_image"}

    # Read back: never the secret, never a digest.
    listed = ok(admin.get("/admin/v1/keys"))
    assert listed["object"] == "list" and listed["has_more"] is False
    assert listed["next_cursor"] is None
    assert {k["name"]: k["source"] for k in listed["data"]} == {
        "designer": "api",
        "team-a": "env",
        "team-b": "env",
    }
    one = ok(admin.get("/admin/v1/keys/designer"))
    assert "key" not in one and "sha256" not in one
    for text in (admin.get("/admin/v1/keys").text, admin.get("/admin/v1/keys/designer").text):
        for hidden in (secret, digest(secret), digest(CLIENT_KEY), CLIENT_KEY):
            assert hidden not in text

    # Its last use is recorded in the background (at most once a minute), seen by both.
    wait_until(lambda: ok(admin.get("/admin/v1/keys/designer"))["last_used_at"] is not None)

    # An expired key is refused, saying so.
    expired = ok(
        admin.post("/admin/v1/keys", json={"name": "old", "expires_at": "2020-01-01T00:00:00"})
    )
    assert expired["expires_at"] == "2020-01-01T00:00:00Z"
    with pytest.raises(openai.AuthenticationError) as caught:
        first.sdk(api_key=expired["key"]).models.list()
    assert caught.value.code == "api_key_expired" and "2020-01-01T00:00:00Z" in str(caught.value)

    # Revoke: refused on both, within a second; the record stays, and can change no more.
    revoked = ok(admin.delete("/admin/v1/keys/designer"))
    assert revoked["revoked_at"] is not None
    assert not works(first, secret)
    within_a_second(lambda: not works(second, secret))
    answer = admin.patch("/admin/v1/keys/designer", json={"requests_per_minute": 1})
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "key_revoked"

    # No secret in any log line either.
    assert secret not in caplog.text and digest(secret) not in caplog.text


def test_rotation_with_a_grace_keeps_the_old_secret_on_both_replicas(
    pair: list[Gateway], admin: httpx2.Client
) -> None:
    first, second = pair
    old = ok(admin.post("/admin/v1/keys", json={"name": "app"}))["key"]
    within_a_second(lambda: works(second, old))
    rotated = ok(admin.post("/admin/v1/keys/app/rotate", json={"grace_s": 3600}))
    new = rotated["key"]
    assert new != old and rotated["previous_key_valid_until"] is not None
    within_a_second(lambda: works(second, new))
    assert works(second, old) and works(first, old) and works(first, new)
    # Without a grace (the default, as before): the old secret stops at once.
    newest_answer = ok(admin.post("/admin/v1/keys/app/rotate"))
    newest = newest_answer["key"]
    assert newest_answer["previous_key_valid_until"] is None
    assert not works(first, new) and not works(first, old) and works(first, newest)
    within_a_second(lambda: not works(second, new) and works(second, newest))
    bad = admin.post("/admin/v1/keys/app/rotate", json={"grace_s": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grace_s"


def test_grace_and_expiry_follow_the_clock(database_url: str) -> None:
    asyncio.run(_grace_and_expiry(database_url))


async def _grace_and_expiry(database_url: str) -> None:
    """The registry on each engine with its clock injected: a rotated-out secret works until
    its grace ends, an expired key is refused saying so, and last use is written (once a
    minute at most) off the request path."""
    now = [1_800_000_000.0]
    db = await Database.open(database_url)
    try:
        await upgrade(db)
        registry = KeyRegistry({}, None, clock=lambda: now[0], poll_s=3600)
        await registry.open(db)
        old, _ = await registry.create_key("app", {"models": ["*"]})
        assert registry.identify(f"Bearer {old}").name == "app"
        new, row = await registry.rotate_key("app", grace_s=60)
        assert row["previous_until"] == now[0] + 60 and "sha256" not in row
        now[0] += 59.9
        assert registry.identify(f"Bearer {old}").name == "app"
        now[0] += 0.2
        with pytest.raises(AuthenticationFailed) as caught:
            registry.identify(f"Bearer {old}")
        assert caught.value.code == "invalid_api_key"
        assert registry.identify(f"Bearer {new}").name == "app"

        await registry.update_key("app", {"expires_at": now[0] + 10})
        assert registry.identify(f"Bearer {new}").name == "app"
        now[0] += 10
        with pytest.raises(AuthenticationFailed) as caught:
            registry.identify(f"Bearer {new}")
        assert caught.value.code == "api_key_expired" and "expired at" in caught.value.message

        # Last use: written when the registry closes (or on its next round), not per request.
        await registry.update_key("app", {"expires_at": None})
        now[0] += 60  # a minute after the last use queued
        used_at = now[0]
        registry.identify(f"Bearer {new}")
        now[0] += 30
        registry.identify(f"Bearer {new}")  # within the minute: not queued again
        await registry.close()
        record = await registry.key("app")
        assert record is not None and record["last_used_at"] == used_at
    finally:
        await db.close()


def test_who_may_read_and_write_keys_and_teams(
    pair: list[Gateway], admin: httpx2.Client, job_store: dict[str, str]
) -> None:
    first = pair[0]
    for team in ("marketing", "sales"):
        ok(admin.post("/admin/v1/teams", json={"name": team}))
    mine = ok(admin.post("/admin/v1/keys", json={"name": "m1", "team": "marketing"}))["key"]
    ok(admin.post("/admin/v1/keys", json={"name": "m2", "team": "marketing"}))
    theirs = ok(admin.post("/admin/v1/keys", json={"name": "s1", "team": "sales"}))["key"]

    with first.http(VIEWER) as viewer:
        assert {k["name"] for k in ok(viewer.get("/admin/v1/keys"))["data"]} >= {"m1", "s1"}
        assert ok(viewer.get("/admin/v1/teams/sales"))["name"] == "sales"
        for method, path, body in (
            ("POST", "/admin/v1/keys", {"name": "x"}),
            ("PATCH", "/admin/v1/keys/m1", {"requests_per_minute": 1}),
            ("DELETE", "/admin/v1/keys/m1", None),
            ("POST", "/admin/v1/keys/m1/rotate", None),
            ("POST", "/admin/v1/teams", {"name": "x"}),
            ("PATCH", "/admin/v1/teams/sales", {"requests_per_minute": 1}),
            ("DELETE", "/admin/v1/teams/sales", None),
        ):
            answer = viewer.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "permission_denied"

    with first.http(mine) as member:
        # Its own team's keys only, whatever the query asks.
        for query in ("", "?after=a&limit=100"):
            data = ok(member.get(f"/admin/v1/keys{query}"))["data"]
            assert {k["name"] for k in data} == {"m1", "m2"}, query
        for query in ("?team=sales", "?name=s1"):  # not a filter here: said, not ignored
            answer = member.get(f"/admin/v1/keys{query}")
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "unknown_parameter"
        assert ok(member.get("/admin/v1/keys/m2"))["team"] == "marketing"
        for path in (
            "/admin/v1/keys/s1",
            "/admin/v1/keys/team-a",
            "/admin/v1/keys/nobody",
            "/admin/v1/teams/sales",
            "/admin/v1/keys/..%2Fkeys%2Fs1",
            "/admin/v1/keys/%73%31",  # "s1", percent-encoded
        ):
            answer = member.get(path)
            assert answer.status_code == 404, (path, answer.text)
        assert [t["name"] for t in ok(member.get("/admin/v1/teams"))["data"]] == ["marketing"]
        for method, path in (("PATCH", "/admin/v1/keys/m1"), ("DELETE", "/admin/v1/keys/s1")):
            assert member.request(method, path, json={}).status_code == 403
        assert member.post("/admin/v1/keys/m1/rotate").status_code == 403
        assert works(first, theirs)  # nothing a member tried changed the other team's key

    with first.http(CLIENT_KEY) as lone:  # a key without a team: itself only
        assert [k["name"] for k in ok(lone.get("/admin/v1/keys"))["data"]] == ["team-a"]
        assert ok(lone.get("/admin/v1/teams"))["data"] == []
        assert lone.get("/admin/v1/keys/m1").status_code == 404

    # A team with keys is not deleted; once they are revoked, it is.
    answer = admin.delete("/admin/v1/teams/marketing")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "team_has_keys"
    for name in ("m1", "m2"):
        ok(admin.delete(f"/admin/v1/keys/{name}"))
    assert ok(admin.delete("/admin/v1/teams/marketing"))["deleted"] is True
    assert admin.get("/admin/v1/teams/marketing").status_code == 404
    assert not works(first, mine)


def test_team_policies_and_pages(pair: list[Gateway], admin: httpx2.Client) -> None:
    second = pair[1]
    for name in ("t1", "t2", "t3"):
        ok(admin.post("/admin/v1/teams", json={"name": name}))
    page = ok(admin.get("/admin/v1/teams", params={"limit": 2}))
    assert [t["name"] for t in page["data"]] == ["t1", "t2"]
    assert page["has_more"] is True and page["next_cursor"] == "t2"
    rest = ok(admin.get("/admin/v1/teams", params={"limit": 2, "after": page["next_cursor"]}))
    assert [t["name"] for t in rest["data"]] == ["t3"] and rest["has_more"] is False

    # A team's models bound its keys' too, on every replica.
    key = ok(admin.post("/admin/v1/keys", json={"name": "k", "team": "t1"}))["key"]
    within_a_second(lambda: works(second, key))
    changed = ok(
        admin.patch(
            "/admin/v1/teams/t1", json={"models": ["sora_image"], "budget_usd_per_month": 100}
        )
    )
    assert changed["models"] == ["sora_image"] and changed["budget_usd_per_month"] == 100
    within_a_second(
        lambda: {m.id for m in second.sdk(api_key=key).models.list().data} == {"sora_image"}
    )

    # Mistakes: OpenAI-shaped, before anything changes.
    for body, status, param, code in (
        ({"name": "bad name!"}, 400, "name", None),
        ({"name": "x", "colour": "red"}, 400, "colour", None),
        ({"name": "x", "requests_per_minute": 0}, 400, "requests_per_minute", None),
        ({"name": "x", "team": "nope"}, 400, "team", "team_not_found"),
        ({"name": "x", "webhook_url": "https://hooks.example/x"}, 400, "webhook_url", None),
        ({"name": "k"}, 409, None, "key_exists"),
        ({"name": "team-a"}, 409, None, "key_exists"),
    ):
        answer = admin.post("/admin/v1/keys", json=body)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()["error"]
        assert error["param"] == param and set(error) == {"message", "type", "param", "code"}
        if code:
            assert error["code"] == code
    assert admin.post("/admin/v1/teams", json={"name": "t1"}).json()["error"]["code"] == (
        "team_exists"
    )
    assert admin.get("/admin/v1/keys", params={"limit": 0}).status_code == 400
    assert admin.patch("/admin/v1/teams/nope", json={}).status_code == 404


def test_file_keys_are_listed_and_read_only(
    make_gateway: Callable[..., Gateway], tmp_path: Path, job_store: dict[str, str]
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump({"keys": [{"name": "designer", "sha256": digest("sk-designer")}]})
    )
    gateway = make_gateway(admin_keys=ADMIN_KEYS, keys_file=path, **job_store)
    with gateway.http(ADMIN) as admin:
        listed = {k["name"]: k for k in ok(admin.get("/admin/v1/keys"))["data"]}
        assert listed["designer"]["source"] == "file" and listed["team-a"]["source"] == "env"
        for name, where in (("designer", str(path)), ("team-a", "MEDIAGATE_API_KEYS")):
            for method, suffix, body in (
                ("PATCH", "", {"requests_per_minute": 1}),
                ("DELETE", "", None),
                ("POST", "/rotate", None),
            ):
                answer = admin.request(method, f"/admin/v1/keys/{name}{suffix}", json=body)
                assert answer.status_code == 409, answer.text
                error = answer.json()["error"]
                assert error["code"] == "key_read_only" and where in error["message"]
        assert works(gateway, "sk-designer")

        # The file's live re-read reaches the records too.
        entries = [
            {"name": "designer", "sha256": digest("sk-designer")},
            {"name": "video", "sha256": digest("sk-video"), "models": ["sora-2*"]},
        ]
        path.write_text(yaml.safe_dump({"keys": entries[1:]}))

        def synced() -> bool:
            names = {k["name"]: k for k in ok(admin.get("/admin/v1/keys"))["data"]}
            return "video" in names and names["designer"]["revoked_at"] is not None

        wait_until(synced, timeout_s=5)
        assert works(gateway, "sk-video") and not works(gateway, "sk-designer")


def test_configured_keys_are_synced_into_the_records(database_url: str, tmp_path: Path) -> None:
    asyncio.run(_synced(database_url, tmp_path))


async def _synced(database_url: str, tmp_path: Path) -> None:
    """MEDIAGATE_API_KEYS and the keys file become records of their source; a replica started
    with another configuration takes them over (a secret may change its name); a clash with a
    key made through the API leaves that key alone and is logged, not fatal."""
    db = await Database.open(database_url)
    try:
        await upgrade(db)
        first = KeyRegistry({"team-a": "sk-one"}, None)
        await first.open(db)
        await first.close()
        file = tmp_path / "keys.yaml"
        file.write_text(
            yaml.safe_dump({"keys": [{"name": "team-a", "sha256": digest("sk-two"), "team": "x"}]})
        )
        # The same secret under a new name, and team-a's name now in the keys file.
        second = KeyRegistry({"renamed": "sk-one"}, file)
        await second.open(db)
        rows = {r["name"]: r for r in await second.keys()}
        assert rows["renamed"]["source"] == "env" and rows["renamed"]["revoked_at"] is None
        assert rows["team-a"]["source"] == "file" and rows["team-a"]["team"] == "x"
        assert rows["team-a"]["revoked_at"] is None
        assert second.identify("Bearer sk-one").name == "renamed"
        assert second.identify("Bearer sk-two").name == "team-a"
        # A key made through the API keeps its name against a configured one.
        await second.create_key("api-made", {})
        await second.close()
        third = KeyRegistry({"api-made": "sk-three"}, None)
        await third.open(db)
        rows = {r["name"]: r for r in await third.keys()}
        assert rows["api-made"]["source"] == "api"
        assert rows["renamed"]["revoked_at"] is not None and rows["team-a"]["revoked_at"]
        assert third.identify("Bearer sk-three").name == "api-made"  # its own, in memory
        await third.close()
    finally:
        await db.close()

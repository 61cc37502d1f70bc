"""The console's door (issue 26): signing in with a key or into an open gateway, sessions in
signed HttpOnly SameSite cookies, CSRF on every form, the pages' security headers and static
files, and the playground's requests through /v1 with the signed-in user's chosen key."""

from __future__ import annotations

from collections.abc import Callable

import httpx2

from .conftest import (
    CLIENT_KEY,
    CLIENT_TLS,
    CONSOLE_ADMIN_KEY,
    CONSOLE_VIEWER_KEY,
    Console,
    Gateway,
    console_admin_keys,
    create_key,
    csrf_token,
    two_teams,
    wait_until,
)


def browser(gw: Gateway) -> httpx2.Client:
    return httpx2.Client(base_url=gw.url, timeout=30, verify=CLIENT_TLS)


def test_a_page_without_a_session_goes_to_sign_in_and_comes_back(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    with browser(gw) as http:
        page = http.get("/console/requests?status=5xx")
        assert page.status_code == 303
        assert (
            page.headers["location"] == "/console/login?next=%2Fconsole%2Frequests%3Fstatus%3D5xx"
        )
        login = http.get(page.headers["location"])
        assert login.status_code == 200
        assert '<label for="key">Key</label>' in login.text
        assert ">Sign in</button>" in login.text
        assert 'value="/console/requests?status=5xx"' in login.text
        signed = http.post(
            "/console/login",
            data={
                "key": CONSOLE_ADMIN_KEY,
                "csrf_token": csrf_token(login.text),
                "next": "/console/requests?status=5xx",
            },
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/console/requests?status=5xx"
        cookie = signed.headers["set-cookie"]
        assert "mediagate_console=" in cookie
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
        assert CONSOLE_ADMIN_KEY not in cookie
        page = http.get("/console/requests?status=5xx")
        assert page.status_code == 200
        assert "ops · admin" in page.text
        # Every page: its own scripts only, never framed, never cached.
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"


def test_sign_in_refuses_a_wrong_key_a_foreign_next_and_a_form_from_elsewhere(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    with browser(gw) as http:
        login = http.get("/console/login?next=https://evil.example/")
        token = csrf_token(login.text)
        assert 'value="/console"' in login.text  # the foreign `next` is not kept
        wrong = http.post("/console/login", data={"key": "nope", "csrf_token": token})
        assert wrong.status_code == 401
        assert "Incorrect API key provided." in wrong.text
        assert "mediagate_console=" not in wrong.headers.get("set-cookie", "")
        # A post without the form's token (a cross-site form) is refused before the key is read.
        forged = http.post(
            "/console/login", data={"key": CONSOLE_ADMIN_KEY, "csrf_token": "x" * 22}
        )
        assert forged.status_code == 403
        login = http.get("/console/login")
        other_site = http.post(
            "/console/login",
            data={"key": CONSOLE_ADMIN_KEY, "csrf_token": csrf_token(login.text)},
            headers={"origin": "https://evil.example"},
        )
        assert other_site.status_code == 403
        assert http.get("/console").status_code == 303  # still signed out


def test_a_client_key_signs_in_as_a_member_and_its_revocation_ends_the_session(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    member = console(gw, create_key(gw, "designer", "marketing"))
    assert "designer · member of marketing" in member.get("/console").text
    with gw.http(CONSOLE_ADMIN_KEY) as admin:
        assert admin.delete("/admin/v1/keys/designer").status_code == 200
    wait_until(lambda: member.get("/console").status_code == 303)


def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    viewer = console(gw, CONSOLE_VIEWER_KEY)
    assert "auditor · viewer" in viewer.get("/console").text
    refused = viewer.http.post("/console/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert viewer.get("/console").status_code == 200
    out = viewer.post("/console/logout")
    assert out.status_code == 303
    assert viewer.get("/console").status_code == 303


def test_a_gateway_without_keys_lets_its_local_admin_in(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(api_keys=None, simulator=True)
    local = console(gw, None)
    assert "local · admin" in local.get("/console").text


def test_static_files_are_the_package_s_own_and_nothing_else(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway()
    with browser(gw) as http:
        css = http.get("/console/static/console.css?v=1")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert "immutable" in css.headers["cache-control"]
        again = http.get(
            "/console/static/console.css", headers={"if-none-match": css.headers["etag"]}
        )
        assert again.status_code == 304
        assert http.get("/console/static/vendor/htmx.min.js").status_code == 200
        for path in ("../web.py", "%2e%2e/web.py", "vendor/../../web.py", ".hidden", "nope.css"):
            assert http.get(f"/console/static/{path}").status_code == 404, path


def test_the_console_can_be_turned_off(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(console=False)
    with browser(gw) as http:
        answer = http.get("/console/login")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "unsupported_endpoint"


def test_the_playground_acts_through_v1_with_a_key_of_the_user_s_team(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    secret = two_teams(gw)
    member = console(gw, secret)
    body = {"model": "gpt-image-2-web", "prompt": "a red kite", "size": "1024x1024"}

    def generate(key: str, token: str | None = member.csrf) -> httpx2.Response:
        headers = {"x-mediagate-key": key}
        if token is not None:
            headers["x-csrf-token"] = token
        return member.http.post("/v1/images/generations", json=body, headers=headers)

    ok = generate("shop-bot")
    assert ok.status_code == 200, ok.text
    assert ok.json()["data"][0]["b64_json"]
    other_team = generate("ml")
    assert other_team.status_code == 403
    assert other_team.json()["error"]["code"] == "permission_denied"
    no_token = generate("shop-bot", token=None)
    assert no_token.status_code == 403
    assert no_token.json()["error"]["code"] == "csrf_failed"
    # Without the session, the header is nothing: the request needs a key as ever.
    with browser(gw) as stranger:
        anonymous = stranger.post(
            "/v1/images/generations",
            json=body,
            headers={"x-mediagate-key": "shop-bot", "x-csrf-token": member.csrf},
        )
        assert anonymous.status_code == 401
    # The request was the key's, with the user recorded beside it.
    request_id = ok.headers["x-request-id"]
    with gw.http(CONSOLE_ADMIN_KEY) as admin:

        def recorded() -> bool:
            return admin.get(f"/admin/v1/requests/{request_id}").status_code == 200

        wait_until(recorded)
        row = admin.get(f"/admin/v1/requests/{request_id}").json()
    assert row["key"] == "shop-bot"
    assert row["team"] == "marketing"
    assert row["principal"] == "designer"
    # A bearer key still wins over a session: an SDK in the same browser is itself.
    with gw.http(CLIENT_KEY) as sdk:
        mine = sdk.post("/v1/images/generations", json=body, headers={"x-mediagate-key": "ml"})
        assert mine.status_code == 200


def test_replicas_sharing_a_database_share_the_session_secret_it_keeps(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    # No MEDIAGATE_CONSOLE_SECRET: the first replica makes one and keeps it in the database;
    # the other reads the same, so a session signed by one is good on the other.
    first = make_gateway(admin_keys=console_admin_keys())
    second = make_gateway(admin_keys=console_admin_keys())
    signed = console(first)
    with browser(second) as http:
        http.cookies.set("mediagate_console", signed.http.cookies["mediagate_console"])
        assert "ops · admin" in http.get("/console").text
    # A configured secret signs differently: the kept one's sessions are not good there.
    other = make_gateway(admin_keys=console_admin_keys(), console_secret="another-secret")
    with browser(other) as http:
        http.cookies.set("mediagate_console", signed.http.cookies["mediagate_console"])
        assert http.get("/console").status_code == 303

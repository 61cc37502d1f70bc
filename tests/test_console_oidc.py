"""OpenID Connect sign-in to the console, end to end: a real identity provider on loopback
(oidc-provider-mock: authlib's authorization server), a real gateway, and a browser's hops
followed one by one (the gateway's redirect to the provider, the provider's consent form, its
redirect back to the callback). The ID token checks the provider cannot be made to fail
(another audience, another issuer, an expired or unsigned token) are driven with tokens signed
here by a key made here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import io
import json
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

# The provider imports authlib.jose, which authlib itself marks deprecated (and authlib's first
# import sets its warnings to "always"): quiet that import, and its own deprecated hooks.
import authlib.deprecate  # noqa: F401
import httpx2
import jwt
import pytest
import werkzeug.serving
from cryptography.hazmat.primitives.asymmetric import rsa

from mediagate.console import oidc
from mediagate.console.oidc import principal_of, role_of, validate_id_token
from mediagate.errors import GatewayError, PermissionDenied
from mediagate.settings import Settings

from .conftest import CLIENT_TLS, Gateway, console_admin_keys
from .processes import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import oidc_provider_mock

pytestmark = pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")

CLIENT_ID = "mediagate-console"
CLIENT_SECRET = "console-secret-0123456789abcdefghijkl"


class Provider:
    """oidc-provider-mock served on a thread, recording the PKCE values and client credentials
    it was sent; `auth_methods`: the token endpoint's methods its discovery then names."""

    def __init__(self) -> None:
        self.challenges: list[str] = []
        self.verifiers: list[str] = []
        self.token_auth: list[str] = []
        self.token_secrets: list[str] = []  # client_secret in the token request's form
        self.auth_methods: list[str] | None = None
        self.hits: list[str] = []  # every path asked for
        app = oidc_provider_mock.app(require_nonce=True)
        self.server = werkzeug.serving.make_server(
            "127.0.0.1", 0, self._recording(app), threaded=True
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def _recording(self, app: Any) -> Callable[..., Any]:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ.get("PATH_INFO", "")
            self.hits.append(path)
            if path == "/oauth2/authorize" and environ["REQUEST_METHOD"] == "POST":
                query = parse_qs(environ.get("QUERY_STRING", ""))
                self.challenges.append(query.get("code_challenge", [""])[0])
            if path == "/oauth2/token":
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                environ["wsgi.input"] = io.BytesIO(body)
                self.verifiers.append(parse_qs(body.decode()).get("code_verifier", [""])[0])
                self.token_auth.append(environ.get("HTTP_AUTHORIZATION", ""))
                self.token_secrets += parse_qs(body.decode()).get("client_secret", [])
            if path == "/.well-known/openid-configuration" and self.auth_methods:
                return self._discovery(app, environ, start_response)
            return app(environ, start_response)

        return wsgi

    def _discovery(self, app: Any, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        answered: list[Any] = []
        body = b"".join(app(environ, lambda *args: answered.append(args)))
        doc = json.loads(body) | {"token_endpoint_auth_methods_supported": self.auth_methods}
        body = json.dumps(doc).encode()
        status, headers = answered[0][:2]
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("content-length", str(len(body)))])
        return [body]

    def user(self, sub: str, claims: dict[str, Any]) -> None:
        answer = httpx2.put(f"{self.url}/users/{sub}", json=claims, timeout=10)
        assert answer.status_code == 204, answer.text

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[Provider]:
    provider = Provider()
    # A port of an earlier test's provider may come back: its keys must not be remembered.
    oidc._cache.pop(provider.url, None)
    yield provider
    provider.close()


@pytest.fixture
def oidc_gateway(make_gateway: Callable[..., Gateway], idp: Provider) -> Gateway:
    return make_gateway(
        admin_keys=console_admin_keys(),
        oidc_issuer=idp.url,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
    )


def browse(gw: Gateway) -> httpx2.Client:
    return httpx2.Client(base_url=gw.url, timeout=30, verify=CLIENT_TLS)


def through_provider(
    gw: Gateway,
    idp: Provider,
    browser: httpx2.Client,
    sub: str,
    *,
    next: str = "/console",
    change: dict[str, str] | None = None,
    action: str | None = None,
) -> str:
    """The browser's hops from the sign-in page's single sign-on link to the provider's redirect
    back: the callback URL it is sent to (with `change` made to the authorization request on
    the way, as an attacker between them could)."""
    login = browser.get("/console/login", params={"next": next})
    link = re.search(r'href="(/console/oidc/login[^"]*)">Sign in with single sign-on', login.text)
    assert link is not None, login.text
    start = browser.get(html.unescape(link.group(1)))
    assert start.status_code == 303, start.text
    authorize = httpx2.URL(start.headers["location"])
    assert str(authorize).startswith(f"{idp.url}/oauth2/authorize?")
    params = dict(authorize.params)
    assert params["redirect_uri"] == f"{gw.url}/console/oidc/callback"
    assert params["code_challenge_method"] == "S256"
    assert params["client_id"] == CLIENT_ID
    assert params["scope"] == "openid email profile"
    # The flow's secrets travel in a cookie only the callback path gets, HttpOnly, SameSite=Lax.
    cookie = start.headers["set-cookie"].lower()
    assert "path=/console/oidc" in cookie
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    params.update(change or {})
    form = {"sub": sub} if action is None else {"action": action}
    consent = httpx2.post(str(authorize.copy_with(params=params)), data=form, timeout=10)
    assert consent.status_code == 302, consent.text
    back = consent.headers["location"]
    assert back.startswith(f"{gw.url}/console/oidc/callback?"), back
    return back


def signed_in_as(browser: httpx2.Client) -> str:
    page = browser.get("/console")
    assert page.status_code == 200, page.text
    marker = 'title="signed in as">'
    return page.text.split(marker, 1)[1].split("</span>", 1)[0]


@pytest.mark.parametrize(
    ("claims", "shown"),
    [
        ({"email": "ada@example.com", "role": "admin"}, "ada@example.com · admin"),
        ({"preferred_username": "grace", "role": "viewer"}, "grace · viewer"),
        (
            {"email": "lin@example.com", "role": "designer", "team": "marketing"},
            "lin@example.com · member of marketing",
        ),
    ],
)
def test_signs_in_with_the_role_and_team_the_provider_gives(
    oidc_gateway: Gateway, idp: Provider, claims: dict[str, Any], shown: str
) -> None:
    gw = oidc_gateway
    sub = f"user-{claims.get('role')}"
    idp.user(sub, claims)
    with browse(gw) as browser:
        back = through_provider(gw, idp, browser, sub, next="/console/models")
        done = browser.get(back)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/console/models"
        assert "mediagate_console=" in done.headers.get("set-cookie", "")
        assert signed_in_as(browser) == shown
    # PKCE: the code was exchanged with the verifier whose S256 digest was sent to authorize.
    assert len(idp.challenges) == len(idp.verifiers) == 1
    digest = hashlib.sha256(idp.verifiers[0].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == idp.challenges[0]
    # client_secret_basic (the provider's discovery names no other method).
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert idp.token_auth == [f"Basic {basic}"]
    assert idp.token_secrets == []


def test_client_secret_post_when_the_provider_offers_only_that(
    oidc_gateway: Gateway, idp: Provider
) -> None:
    gw = oidc_gateway
    idp.auth_methods = ["client_secret_post"]
    idp.user("pat", {"email": "pat@example.com", "role": "viewer"})
    with browse(gw) as browser:
        done = browser.get(through_provider(gw, idp, browser, "pat"))
        assert done.status_code == 303, done.text
        assert signed_in_as(browser) == "pat@example.com · viewer"
    assert idp.token_auth == [""]
    assert idp.token_secrets == [CLIENT_SECRET]


def test_a_tampered_state_is_refused(oidc_gateway: Gateway, idp: Provider) -> None:
    gw = oidc_gateway
    idp.user("mallory", {"email": "mallory@example.com", "role": "admin"})
    with browse(gw) as browser:
        back = httpx2.URL(through_provider(gw, idp, browser, "mallory"))
        forged = back.copy_merge_params({"state": "forged-state"})
        refused = browser.get(str(forged), headers={"accept": "text/html"})
        assert refused.status_code == 403
        assert "did not start here" in refused.text
        assert "mediagate_console=" not in refused.headers.get("set-cookie", "")
        # Another browser (no flow cookie) handed the genuine callback URL is refused too.
        with browse(gw) as other:
            stolen = other.get(str(back))
            assert stolen.status_code == 403
            assert "no record in your browser" in stolen.text
        assert browser.get("/console").status_code == 303  # still signed out: to the login
    assert idp.verifiers == []  # no code was exchanged


def test_an_id_token_with_another_nonce_is_refused(oidc_gateway: Gateway, idp: Provider) -> None:
    gw = oidc_gateway
    idp.user("eve", {"email": "eve@example.com", "role": "admin"})
    with browse(gw) as browser:
        back = through_provider(gw, idp, browser, "eve", change={"nonce": "replayed-nonce"})
        refused = browser.get(back)
        assert refused.status_code == 403
        assert "nonce differs" in refused.text
        assert browser.get("/console").status_code == 303


def test_the_provider_refusing_is_shown(oidc_gateway: Gateway, idp: Provider) -> None:
    gw = oidc_gateway
    with browse(gw) as browser:
        back = through_provider(gw, idp, browser, "anyone", action="deny")
        refused = browser.get(back)
        assert refused.status_code == 403
        assert "The identity provider refused the sign-in (access_denied)" in refused.text
        # A link made elsewhere cannot put its words on the console's page.
        planted = browser.get(
            "/console/oidc/callback",
            params={"error": "Call +1 555 0100", "error_description": "Your account is locked"},
        )
        assert planted.status_code == 403
        assert "refused the sign-in (error)." in planted.text
        assert "555" not in planted.text
        assert "locked" not in planted.text


def test_a_member_without_a_team_is_refused(oidc_gateway: Gateway, idp: Provider) -> None:
    gw = oidc_gateway
    idp.user("drifter", {"email": "drifter@example.com", "role": "designer"})
    with browse(gw) as browser:
        refused = browser.get(through_provider(gw, idp, browser, "drifter"))
        assert refused.status_code == 403
        assert "has no team" in refused.text


def test_an_unreachable_provider_is_a_clear_error(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(
        admin_keys=console_admin_keys(),
        oidc_issuer=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
    )
    with browse(gw) as browser:
        down = browser.get("/console/oidc/login")
        assert down.status_code == 502
        assert "The identity provider could not be reached (discovery" in down.text
        assert CLIENT_SECRET not in down.text


def test_discovery_and_keys_are_cached_and_bounded(idp: Provider) -> None:
    now = [1000.0]

    async def run() -> None:
        async with oidc.provider_client() as client:
            first = await oidc.discover(client, idp.url, lambda: now[0])
            assert first.provider.token_endpoint == f"{idp.url}/oauth2/token"
            assert first.provider.auth_methods == ("client_secret_basic",)
            assert first.provider.algorithms == {"RS256"}
            now[0] += oidc.DISCOVERY_TTL_S - 1
            assert await oidc.discover(client, idp.url, lambda: now[0]) is first
            keys = await oidc.signing_keys(client, first, None, lambda: now[0])
            assert await oidc.signing_keys(client, first, None, lambda: now[0]) is keys
            # A key id it does not know: read again, but not more than once a minute.
            await oidc.signing_keys(client, first, "rotated", lambda: now[0])
            now[0] += oidc.KEYS_REFRESH_S
            await oidc.signing_keys(client, first, "rotated", lambda: now[0])
            await oidc.signing_keys(client, first, "rotated", lambda: now[0])
            now[0] += 2
            again = await oidc.discover(client, idp.url, lambda: now[0])
            assert again is not first

    asyncio.run(run())
    assert idp.hits.count("/.well-known/openid-configuration") == 2
    assert idp.hits.count("/jwks") == 2


def test_a_provider_answer_too_large_is_refused() -> None:
    huge = b'{"issuer": "' + b"x" * (oidc.MAX_BODY + 1) + b'"}'

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "application/json")])
        return [huge]

    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    issuer = f"http://127.0.0.1:{server.server_port}"

    async def run() -> None:
        async with oidc.provider_client() as client:
            await oidc.discover(client, issuer)

    try:
        with pytest.raises(GatewayError, match="larger than") as refused:
            asyncio.run(run())
        assert refused.value.code == "oidc_unavailable"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_without_oidc_configured_there_is_no_single_sign_on(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    with browse(gw) as browser:
        assert "single sign-on" not in browser.get("/console/login").text
        assert browser.get("/console/oidc/login").status_code == 404


# --- the ID token's checks, with tokens signed here ---------------------------------------------

ISSUER = "https://id.example.test"


@pytest.fixture(scope="module")
def signing() -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public |= {"kid": "k1", "use": "sig", "alg": "RS256"}
    return key, {"keys": [public]}


def id_token(key: Any, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "u1",
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
        "email": "u1@example.com",
    }
    headers = {"kid": changes.pop("kid", "k1")}
    claims |= changes
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, "RS256", headers)


def check(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    return validate_id_token(token, jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce="n-1")


def test_a_valid_id_token_passes(signing: tuple[Any, dict[str, Any]]) -> None:
    key, jwks = signing
    assert check(id_token(key), jwks)["email"] == "u1@example.com"
    # Several audiences: fine when this client is the authorized party.
    assert check(id_token(key, aud=[CLIENT_ID, "other"], azp=CLIENT_ID), jwks)["sub"] == "u1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aud": "another-app"}, "issued for another application"),
        ({"aud": [CLIENT_ID, "other"], "azp": "other"}, "issued for another application"),
        ({"iss": "https://evil.example.test"}, "issued by another identity provider"),
        ({"exp": int(time.time()) - 3600}, "has expired"),
        ({"nonce": "n-2"}, "nonce differs"),
        ({"nonce": None}, "nonce differs"),
        ({"kid": "unknown"}, "does not publish"),
        ({"exp": None}, "not valid"),
    ],
)
def test_an_id_token_that_is_wrong_is_refused(
    signing: tuple[Any, dict[str, Any]], changes: dict[str, Any], message: str
) -> None:
    key, jwks = signing
    with pytest.raises(PermissionDenied) as refused:
        check(id_token(key, **changes), jwks)
    assert refused.value.code == "oidc_failed"
    assert message in refused.value.message


def test_a_token_signed_with_another_key_or_none_is_refused(
    signing: tuple[Any, dict[str, Any]],
) -> None:
    _, jwks = signing
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(PermissionDenied, match="signature does not verify"):
        check(id_token(stranger), jwks)
    claims = jwt.decode(id_token(stranger), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, "none")
    with pytest.raises(PermissionDenied, match=r"algorithm \(none\) is not accepted"):
        check(unsigned, jwks)
    # HMAC keyed with a public value (the algorithm-confusion attack) is not accepted either.
    hmac_token = jwt.encode(claims, CLIENT_SECRET, "HS256", {"kid": "k1"})
    with pytest.raises(PermissionDenied, match=r"algorithm \(HS256\) is not accepted"):
        check(hmac_token, jwks)


def test_roles_and_names_from_claims() -> None:
    assert role_of("admin") == "admin"
    assert role_of("viewer") == "viewer"
    assert role_of("Admin") == "member"
    assert role_of(None) == "member"
    assert role_of(["viewer", "admin"]) == "admin"
    assert role_of(["ops", "viewer"]) == "viewer"
    assert role_of(["ops"]) == "member"
    settings = Settings(oidc_role_claim="groups", oidc_team_claim="dept")
    p = principal_of({"sub": "s1", "groups": ["staff"], "dept": "video"}, settings)
    assert (p.name, p.role, p.team) == ("s1", "member", "video")
    p = principal_of({"sub": "s1", "preferred_username": "kim", "groups": "admin"}, settings)
    assert (p.name, p.role, p.team) == ("kim", "admin", None)

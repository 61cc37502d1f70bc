"""Signing in to the console with OpenID Connect: the authorization code flow with PKCE.

`/console/oidc/login` reads the identity provider's discovery document (cached), keeps a
random `state`, `nonce` and PKCE verifier in a short-lived signed cookie (SameSite=Lax, so the
browser sends it back on the provider's redirect), and sends the browser to the provider.
`/console/oidc/callback` checks the state, exchanges the code at the token endpoint (with the
verifier and the client secret), validates the ID token (its signature against the provider's
JWKS, its issuer, audience, expiry and nonce) and signs the user in: the role claim's `admin`
or `viewer` give those roles, anything else makes a `member` of the team claim's team.

The issuer is the operator's own setting, often on a private network, so it is fetched with a
plain client (not the public-address-only fetcher that user-supplied links go through), with
timeouts and bounded bodies. Tokens and the client secret are never logged nor shown.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx2
import orjson
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from mediagate.console.auth import sign_in
from mediagate.console.web import PREFIX, safe_next
from mediagate.errors import GatewayError, NotFound, PermissionDenied
from mediagate.http import sessions
from mediagate.http.deps import gateway, public_base
from mediagate.http.principals import Principal, Role
from mediagate.http.routes import Routes
from mediagate.settings import Settings

if TYPE_CHECKING:
    import jwt  # PyJWT (and cryptography under it): imported at the first sign-in, not at start

log = logging.getLogger("mediagate.console.oidc")

pages = Routes()

COOKIE = "mediagate_oidc"
COOKIE_PATH = PREFIX + "/oidc"
FLOW_S = 600  # how long a sign-in may take at the provider
CALLBACK = PREFIX + "/oidc/callback"

# How long the provider's discovery document and keys are kept; unknown key ids fetch the keys
# again, at most once per KEYS_REFRESH_S (a provider rotating its keys is served at once).
DISCOVERY_TTL_S = 3600.0
KEYS_REFRESH_S = 60.0
MAX_BODY = 1 << 20  # a discovery document, a JWKS or a token answer: far smaller than this
TIMEOUT = httpx2.Timeout(10.0, connect=5.0)
LEEWAY_S = 60  # clock skew allowed on exp / iat / nbf

# Asymmetric signatures only: never `none`, nor HMAC with the client secret.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def failed(message: str) -> PermissionDenied:
    """The sign-in was refused: shown as the console's error page (403, `oidc_failed`)."""
    return PermissionDenied(message, code="oidc_failed")


def unavailable(what: str) -> GatewayError:
    return GatewayError(
        f"The identity provider could not be reached ({what}): try again later.",
        code="oidc_unavailable",
        status=502,
    )


# --- the provider -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What the discovery document says, and the keys last read from its jwks_uri."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    auth_methods: tuple[str, ...]
    algorithms: frozenset[str]


@dataclass
class _Cached:
    provider: Provider
    read_at: float
    jwks: dict[str, Any] | None = None
    jwks_read_at: float = float("-inf")


_cache: dict[str, _Cached] = {}


async def _get_json(client: httpx2.AsyncClient, url: str, what: str) -> dict[str, Any]:
    """A JSON object from the provider, read to MAX_BODY at most."""
    try:
        async with client.stream("GET", url, headers={"accept": "application/json"}) as answer:
            body = await _bounded(answer, what)
    except httpx2.HTTPError as exc:
        raise unavailable(f"{what}: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise unavailable(f"{what}: HTTP {answer.status_code}")
    return _object(body, what)


async def _bounded(answer: httpx2.Response, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY:
            raise unavailable(f"{what}: answer larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise unavailable(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise unavailable(f"{what}: not a JSON object")
    return value


def _provider(issuer: str, doc: Mapping[str, Any]) -> Provider:
    """The discovery document, checked: it names the configured issuer and its endpoints."""
    if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise unavailable("discovery names another issuer")
    endpoints = {}
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = doc.get(field)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise unavailable(f"discovery has no {field}")
        endpoints[field] = value
    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    offered = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    return Provider(
        issuer=str(doc["issuer"]),
        auth_methods=tuple(str(m) for m in methods),
        algorithms=ALGORITHMS.intersection(str(a) for a in offered),
        **endpoints,
    )


async def discover(
    client: httpx2.AsyncClient, issuer: str, clock: Callable[[], float] = time.monotonic
) -> _Cached:
    """The provider's discovery document, read at most once per DISCOVERY_TTL_S."""
    cached = _cache.get(issuer)
    if cached is not None and clock() - cached.read_at < DISCOVERY_TTL_S:
        return cached
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    provider = _provider(issuer, await _get_json(client, url, "discovery"))
    cached = _Cached(provider, clock())
    _cache[issuer] = cached
    return cached


async def signing_keys(
    client: httpx2.AsyncClient,
    cached: _Cached,
    kid: str | None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The provider's JWKS: the cached one, read again when it lacks `kid` (rate-limited)."""
    now = clock()
    stale = cached.jwks is None or now - cached.jwks_read_at >= DISCOVERY_TTL_S
    unknown = kid is not None and cached.jwks is not None and not _has_kid(cached.jwks, kid)
    if stale or (unknown and now - cached.jwks_read_at >= KEYS_REFRESH_S):
        cached.jwks = await _get_json(client, cached.provider.jwks_uri, "keys")
        cached.jwks_read_at = now
    assert cached.jwks is not None
    return cached.jwks


def _has_kid(jwks: Mapping[str, Any], kid: str) -> bool:
    keys = jwks.get("keys")
    return isinstance(keys, list) and any(isinstance(k, dict) and k.get("kid") == kid for k in keys)


# --- the ID token and what it says --------------------------------------------------------------


def validate_id_token(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: frozenset[str] = ALGORITHMS,
) -> dict[str, Any]:
    """The ID token's claims, once its signature (a key of `jwks`, an allowed asymmetric
    algorithm), issuer, audience, expiry and nonce are right; `failed` otherwise."""
    import jwt

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise failed("The identity provider's ID token is not a signed token.") from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in algorithms:
        raise failed(f"The ID token's signature algorithm ({alg}) is not accepted.")
    key = _key_for(jwks, kid, alg)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=client_id,
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.InvalidAudienceError:
        raise failed("The ID token was issued for another application.") from None
    except jwt.InvalidIssuerError:
        raise failed("The ID token was issued by another identity provider.") from None
    except jwt.ExpiredSignatureError:
        raise failed("The ID token has expired: sign in again.") from None
    except jwt.InvalidSignatureError:
        raise failed("The ID token's signature does not verify.") from None
    except jwt.PyJWTError as exc:
        raise failed(f"The ID token is not valid ({type(exc).__name__}).") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise failed("The ID token was issued for another application.")
    presented = claims.get("nonce")
    if not isinstance(presented, str) or not hmac.compare_digest(
        presented.encode(), nonce.encode()
    ):
        raise failed("The ID token does not belong to this sign-in (its nonce differs).")
    return claims


def _key_for(jwks: Mapping[str, Any], kid: Any, alg: str) -> jwt.PyJWK:
    """The signing key the token's header names (or the only one, when it names none)."""
    import jwt

    try:
        keyset = jwt.PyJWKSet.from_dict(dict(jwks))
    except jwt.PyJWTError:
        raise failed("The identity provider published no usable signing key.") from None
    usable = [k for k in keyset.keys if k.public_key_use in (None, "sig")]
    if kid is not None:
        usable = [k for k in usable if k.key_id == kid]
    elif len(usable) > 1:
        usable = [k for k in usable if k.algorithm_name == alg]
    if len(usable) != 1:
        raise failed("The ID token is signed with a key the identity provider does not publish.")
    return usable[0]


def role_of(value: Any) -> Role:
    """The role claim's value: `admin` or `viewer` give that role; a list gives admin if it
    holds `admin`, else viewer if it holds `viewer`; anything else is a team member."""
    values = value if isinstance(value, list) else [value]
    if "admin" in values:
        return "admin"
    if "viewer" in values:
        return "viewer"
    return "member"


def principal_of(claims: Mapping[str, Any], settings: Settings) -> Principal:
    """Who the ID token says signed in: name, role and team from the configured claims."""
    name = next(
        (
            str(claims[c])
            for c in ("email", "preferred_username", "sub")
            if isinstance(claims.get(c), str) and claims[c]
        ),
        None,
    )
    if name is None:
        raise failed("The ID token names no user.")
    role = role_of(claims.get(settings.oidc_role_claim))
    team_claim = claims.get(settings.oidc_team_claim)
    team = str(team_claim) if isinstance(team_claim, str | int) and str(team_claim) else None
    if role == "member" and team is None:
        # A member without a team would be narrowed to a key of its own name: refuse rather
        # than let a user whose name matches a key's read that key's records.
        raise failed(
            f"Your account has no team (the `{settings.oidc_team_claim}` claim) nor the admin "
            "or viewer role: ask your identity provider's administrator."
        )
    return Principal(name, role, team if role == "member" else None)


# --- the flow -----------------------------------------------------------------------------------


def _signer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(gateway(request).console_secret, salt="mediagate.console.oidc")


def provider_client() -> httpx2.AsyncClient:
    """A client for the identity provider: bounded in time, no redirects followed; the
    environment's HTTPS_PROXY / NO_PROXY and SSL_CERT_FILE (a private CA) are honoured."""
    return httpx2.AsyncClient(timeout=TIMEOUT, follow_redirects=False, verify=_tls())


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every sign-in (making one reads the CA bundle: ~25 ms)."""
    return httpx2.create_ssl_context()


def _configured(settings: Settings) -> tuple[str, str, str]:
    if not (
        settings.oidc_enabled()
        and settings.oidc_issuer
        and settings.oidc_client_id
        and settings.oidc_client_secret
    ):
        raise NotFound("Single sign-on is not configured on this gateway.")
    return (
        settings.oidc_issuer,
        settings.oidc_client_id,
        settings.oidc_client_secret.get_secret_value(),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pages.get(PREFIX + "/oidc/login", name="console.oidc.login", include_in_schema=False)
async def login(request: Request, next: str | None = None) -> Response:
    settings = gateway(request).settings
    issuer, client_id, _ = _configured(settings)
    async with provider_client() as client:
        provider = (await discover(client, issuer)).provider
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": public_base(request) + CALLBACK,
        "scope": settings.oidc_scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    endpoint = provider.authorization_endpoint
    target = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
    response = RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
    flow = {"s": state, "n": nonce, "v": verifier, "r": params["redirect_uri"]}
    flow["next"] = safe_next(next)
    response.set_cookie(
        COOKIE,
        _signer(request).dumps(flow),
        max_age=FLOW_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=sessions.secure_cookies(request),
    )
    return response


@pages.get(CALLBACK, name="console.oidc.callback", include_in_schema=False)
async def callback(request: Request) -> Response:
    settings = gateway(request).settings
    issuer, client_id, secret = _configured(settings)
    args = request.query_params
    if "error" in args:
        raise _refused(request, args.get("error", ""), args.get("error_description", ""))
    flow = _flow(request)
    if not _same_state(args.get("state", ""), flow):
        raise failed("This sign-in did not start here, or was started again: try again.")
    code = args.get("code")
    if not code:
        raise failed("The identity provider sent no authorization code.")
    async with provider_client() as client:
        cached = await discover(client, issuer)
        token = await _exchange(
            client, cached.provider, client_id, secret, code, flow["v"], flow["r"]
        )
        kid = _kid(token)
        jwks = await signing_keys(client, cached, kid)
    claims = validate_id_token(
        token,
        jwks,
        issuer=cached.provider.issuer,
        client_id=client_id,
        nonce=flow["n"],
        algorithms=cached.provider.algorithms,
    )
    principal = principal_of(claims, settings)
    log.info(
        "console sign-in with OpenID Connect: %s as %s%s",
        principal.name,
        principal.role,
        f" of {principal.team}" if principal.team else "",
    )
    response = sign_in(request, principal, "oidc", safe_next(flow["next"]))
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=sessions.secure_cookies(request),
    )
    return response


def _same_state(presented: str, flow: Mapping[str, str]) -> bool:
    return hmac.compare_digest(presented.encode(), flow["s"].encode())


def _refused(request: Request, error: str, description: str) -> PermissionDenied:
    """The provider's refusal: its error code (an OAuth code's shape only), and its words only
    when the state shows this browser's own sign-in (so no link can put text on our page)."""
    code = error if re.fullmatch(r"[a-z_]{1,64}", error) else "error"
    try:
        own = _same_state(request.query_params.get("state", ""), _flow(request))
    except PermissionDenied:
        own = False
    detail = f": {description[:200]}" if own and description else ""
    return failed(f"The identity provider refused the sign-in ({code}){detail}.")


def _flow(request: Request) -> dict[str, str]:
    """The sign-in's state, nonce, verifier and destination, from the cookie it started with."""
    value = request.cookies.get(COOKIE)
    if not value:
        raise failed(
            "This sign-in has no record in your browser (it expired, or cookies are blocked): "
            "try again."
        )
    try:
        flow = _signer(request).loads(value, max_age=FLOW_S)
    except (BadSignature, ValueError, TypeError):
        raise failed("This sign-in expired or was tampered with: try again.") from None
    if not isinstance(flow, dict) or not all(
        isinstance(flow.get(k), str) for k in ("s", "n", "v", "r", "next")
    ):
        raise failed("This sign-in expired or was tampered with: try again.")
    return flow


def _kid(token: str) -> str | None:
    import jwt

    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        raise failed("The identity provider's ID token is not a signed token.") from None
    return kid if isinstance(kid, str) else None


async def _exchange(
    client: httpx2.AsyncClient,
    provider: Provider,
    client_id: str,
    secret: str,
    code: str,
    verifier: str,
    redirect_uri: str,
) -> str:
    """The code exchanged at the token endpoint for the ID token (client_secret_basic unless
    the provider offers only client_secret_post)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,  # the very one the authorization request named
        "code_verifier": verifier,
    }
    headers = {"accept": "application/json"}
    if "client_secret_basic" in provider.auth_methods or (
        "client_secret_post" not in provider.auth_methods
    ):
        # RFC 6749 2.3.1: each part form-encoded before the Basic encoding.
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
        headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form |= {"client_id": client_id, "client_secret": secret}
    try:
        async with client.stream(
            "POST", provider.token_endpoint, data=form, headers=headers
        ) as answer:
            body = await _bounded(answer, "token endpoint")
    except httpx2.HTTPError as exc:
        raise unavailable(f"token endpoint: {type(exc).__name__}") from None
    if answer.status_code != 200:
        error = ""
        if answer.status_code == 400:  # an OAuth error: its code only, never the body whole
            try:
                parsed = orjson.loads(body)
                error = f": {str(parsed.get('error', ''))[:80]}" if isinstance(parsed, dict) else ""
            except orjson.JSONDecodeError:
                pass
        raise failed(
            f"The identity provider refused to exchange the sign-in's code "
            f"(HTTP {answer.status_code}{error}): try again."
        )
    token = _object(body, "token endpoint").get("id_token")
    if not isinstance(token, str) or not token:
        raise failed("The identity provider's answer has no ID token (is `openid` a scope?).")
    return token

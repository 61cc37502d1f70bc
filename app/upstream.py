"""Sending requests upstream: the one place that touches the upstream's network and keys.

Every transport failure and upstream error status becomes a `GatewayError` here (like httpx's
`map_httpcore_exceptions`), with upstream keys scrubbed from whatever text is passed on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .catalog import Route
from .dialects import UpstreamRequest
from .errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    Scrubber,
    UpstreamError,
    UpstreamTimeout,
)
from .metrics import Metrics

_MAX_QUOTED = 500


class KeyRing:
    """The upstream keys of each token group, handed out in turn."""

    def __init__(self, keys: dict[str, list[str]]) -> None:
        self._keys = {group: list(group_keys) for group, group_keys in keys.items() if group_keys}
        self._cycles: dict[str, Iterator[str]] = {
            group: itertools.cycle(group_keys) for group, group_keys in keys.items() if group_keys
        }

    def has(self, group: str) -> bool:
        return group in self._cycles

    def next(self, group: str) -> str:
        try:
            return next(self._cycles[group])
        except KeyError:
            raise UpstreamError(
                f"No upstream key is configured for token group '{group}'.", code="no_upstream_key"
            ) from None

    def pick(self, group: str) -> tuple[str, str]:
        """The next key of a group and its fingerprint, for a job that must keep using it."""
        key = self.next(group)
        return key, key_fingerprint(key)

    def by_fingerprint(self, group: str, fingerprint: str) -> str:
        """The key that created a job. Upstream jobs are visible only to their creator, so no
        other key will do."""
        for key in self._keys.get(group, ()):
            if hmac.compare_digest(key_fingerprint(key), fingerprint):
                return key
        raise UpstreamError(
            f"The upstream key of token group '{group}' that created this job is no longer "
            "configured; the upstream shows a job only to the key that created it.",
            code="upstream_key_unavailable",
        )


def _upstream_message(response: httpx.Response) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an upstream error body, whatever shape it has."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:_MAX_QUOTED] or response.reason_phrase, None, None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)[:_MAX_QUOTED]
        code, param = error.get("code"), error.get("param")
        return (
            str(message)[:_MAX_QUOTED],
            str(code) if code else None,
            str(param) if isinstance(param, str) else None,
        )
    return str(error)[:_MAX_QUOTED], None, None


def map_status(response: httpx.Response, route: Route) -> GatewayError:
    status = response.status_code
    message, code, param = _upstream_message(response)
    where = f"upstream route {route.id}"
    if status in (401, 403):
        # Our key, not the client's: the client cannot fix it, the operator can.
        return UpstreamError(
            f"The {where} rejected the gateway's credentials for token group '{route.group}'.",
            code="upstream_auth_failed",
        )
    if status == 429:
        headers = (
            {"retry-after": response.headers["retry-after"]}
            if ("retry-after" in response.headers)
            else {}
        )
        return RateLimited(f"The {where} is rate limiting: {message}", headers=headers)
    if status in (408, 504):
        return UpstreamTimeout(f"The {where} timed out: {message}")
    if status in (400, 413, 422):
        return InvalidRequest(
            f"The {where} rejected the request: {message}",
            code=code or "upstream_rejected",
            param=param,
        )
    return UpstreamError(f"The {where} failed with HTTP {status}: {message}")


def key_fingerprint(key: str) -> str:
    """How a job remembers its upstream key: a SHA-256 digest, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


class Upstream:
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        keys: KeyRing,
        metrics: Metrics,
        scrub: Scrubber,
        timeout_s: float,
    ) -> None:
        self._client = client
        self._base_url = base_url
        self.keys = keys
        self._metrics = metrics
        self._scrub = scrub
        self._timeout_s = timeout_s

    def _build(self, route: Route, request: UpstreamRequest) -> httpx.Request:
        headers = {"Authorization": f"Bearer {self.keys.next(route.group)}"}
        url = self._base_url + request.path
        if request.form is None:
            return self._client.build_request("POST", url, json=request.json, headers=headers)
        # Each upstream request reads the uploads through readers of its own.
        files = [(name, (f.filename, f.open(), f.content_type)) for name, f in request.files]
        return self._client.build_request(
            "POST", url, data=request.form, files=files, headers=headers
        )

    async def _exchange(
        self,
        route: Route,
        request: httpx.Request,
        *,
        stream: bool = False,
        not_found: GatewayError | None = None,
        passthrough: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send and wait for the status line (and, unless streaming, the body). An error status
        becomes a mapped GatewayError unless it is in `passthrough`; a 404 becomes `not_found`
        when given. A streamed response is the caller's to close."""
        started = time.perf_counter()
        status = "error"
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.send(request, stream=stream)
            status = str(response.status_code)
        except (TimeoutError, httpx.TimeoutException):
            status = "timeout"
            raise UpstreamTimeout(
                f"The upstream route {route.id} did not answer within {self._timeout_s:g} s.",
                # It may still be working, and charging: a client retry could pay twice.
                headers={"x-should-retry": "false"},
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"Could not reach the upstream for route {route.id}: {type(exc).__name__}.",
                code="upstream_unreachable",
            ) from None
        finally:
            self._metrics.upstream_call(route, status, time.perf_counter() - started)
        if response.status_code < 400 or response.status_code in passthrough:
            return response
        if stream:
            await response.aread()
            await response.aclose()
        if response.status_code == 404 and not_found is not None:
            raise not_found
        error = map_status(response, route)
        error.message = self._scrub(error.message)
        raise error

    async def post(self, route: Route, request: UpstreamRequest) -> Any:
        """Send with the route's group key; the parsed JSON answer or a GatewayError."""
        return _json(await self._exchange(route, self._build(route, request)), route)

    @asynccontextmanager
    async def open_stream(
        self, route: Route, request: UpstreamRequest
    ) -> AsyncIterator[httpx.Response]:
        """A streaming answer whose status is a success (errors are raised before any byte)."""
        response = await self._exchange(route, self._build(route, request), stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def call_with_key(
        self,
        route: Route,
        key: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        not_found: GatewayError | None = None,
        passthrough: frozenset[int] = frozenset(),
        stream: bool = False,
        **content: Any,
    ) -> httpx.Response:
        """One request with a given key (a video job is served by the key that created it):
        JSON, form and files, or params in `content`."""
        request = self._client.build_request(
            method,
            self._base_url + path,
            headers={**(headers or {}), "Authorization": f"Bearer {key}"},
            **content,
        )
        return await self._exchange(
            route, request, stream=stream, not_found=not_found, passthrough=passthrough
        )

    async def json_with_key(
        self,
        route: Route,
        key: str,
        method: str,
        path: str,
        *,
        not_found: GatewayError | None = None,
        **content: Any,
    ) -> Any:
        """`call_with_key`, and the answer's JSON."""
        response = await self.call_with_key(
            route, key, method, path, not_found=not_found, **content
        )
        return _json(response, route)


def _json(response: httpx.Response, route: Route) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "unknown content type")
        raise UpstreamError(
            f"The upstream route {route.id} answered with a body that is not JSON ({kind}).",
            code="bad_upstream_response",
        ) from None

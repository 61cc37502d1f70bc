"""Sending requests upstream: the one place that touches the upstream's network and keys.

Every transport failure and upstream error status becomes a `GatewayError` here (like httpx's
`map_httpcore_exceptions`), with upstream keys scrubbed from whatever text is passed on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
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

    async def post_json(self, route: Route, request: UpstreamRequest) -> Any:
        """POST a JSON body with the route's group key; the parsed JSON answer or a GatewayError."""
        key = self.keys.next(route.group)
        started = time.perf_counter()
        status = "error"
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(
                    self._base_url + request.path,
                    json=request.json,
                    headers={"Authorization": f"Bearer {key}"},
                )
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
        if response.status_code >= 400:
            error = map_status(response, route)
            error.message = self._scrub(error.message)
            raise error
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "unknown content type")
            raise UpstreamError(
                f"The upstream route {route.id} answered with a body that is not JSON ({kind}).",
                code="bad_upstream_response",
            ) from None

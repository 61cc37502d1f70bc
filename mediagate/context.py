"""What one request did, in one typed record: who called, which model and route served, what it
cost, what the gateway tried on its behalf.

The HTTP middleware (`mediagate.http.middleware`) opens a `RequestContext` for every request and
makes it current (a context variable, so the child tasks of an n > 1 request write to the same
record); the use cases and the upstream sender fill it in; the middleware reads it back for the
access log line, the metrics and the response headers. Nothing else is kept per request.

When the gateway retried or fell back, the answer says so: `x-mediagate-retries: N`,
`x-mediagate-fallback: route=reason,...`, and `x-should-retry: false` (the gateway already
retried, so the SDK must not multiply that by its own retries).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mediagate.errors import GatewayError, no_retry_headers

if TYPE_CHECKING:
    from mediagate.catalog import Alias, Route


@dataclass
class RequestContext:
    request_id: str = field(default_factory=lambda: f"req_{secrets.token_hex(16)}")
    endpoint: str = "other"  # a bounded label: "images.generations", "videos", "health", ...
    key_name: str | None = None  # the client key's name (never the key)
    model: str | None = None  # the public model name asked for (an alias's successor)
    alias: Alias | None = None  # the retired name asked for, when its successor served
    route: Route | None = None  # the route that served (after any fallback)
    cost: float | None = None  # USD booked for this request
    normalized: dict[str, str] = field(default_factory=dict)  # what was dropped or mapped
    prompt: str | None = None  # only when the operator set MEDIAGATE_LOG_PROMPTS
    streaming: bool = False  # answered as a stream: the cost is not known at the headers
    error: GatewayError | None = None
    upstream_seconds: float = 0.0
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)  # "route=reason", in order
    # Awaited once before the request's first paid upstream call is sent (the Idempotency-Key
    # records that the call went out, so a takeover after a crash cannot pay twice).
    before_paid_send: Callable[[], Awaitable[None]] | None = None

    def attempt_headers(self) -> dict[str, str]:
        # An answer through an alias says so: x-mediagate-alias, Deprecation (RFC 9745), Link.
        aliased = self.alias.headers(self.model) if self.alias is not None else {}
        if not self.retries and not self.fallbacks:
            return aliased
        headers = {**aliased, **no_retry_headers()}
        if self.retries:
            headers["x-mediagate-retries"] = str(self.retries)
        if self.fallbacks:
            headers["x-mediagate-fallback"] = ",".join(self.fallbacks)
        return headers

    def served_by(self, model: str, route: Route) -> None:
        self.model, self.route = model, route

    def log_fields(self) -> dict[str, Any]:
        route = self.route
        return {
            "request_id": self.request_id,
            "key": self.key_name,
            "model": self.model if route is not None else None,
            "route": route.id if route is not None else None,
            "group": route.group if route is not None else None,
            "upstream_ms": round(self.upstream_seconds * 1000, 1),
            "cost_usd": self.cost,
            # The retired name asked for, when an alias's successor (`model`) served it.
            **({"alias": self.alias.name} if self.alias is not None else {}),
        }


_CURRENT: ContextVar[RequestContext | None] = ContextVar("mediagate_request", default=None)


def current() -> RequestContext:
    """The current request's record; outside a request (a background task, a test calling a
    service directly) a throwaway one, so callers never need to check."""
    ctx = _CURRENT.get()
    return ctx if ctx is not None else RequestContext()


def active() -> RequestContext | None:
    """The current request's record, or None outside a request (what a log line needs)."""
    return _CURRENT.get()


def begin(ctx: RequestContext) -> Any:
    return _CURRENT.set(ctx)


def end(token: Any) -> None:
    _CURRENT.reset(token)


def note_retry() -> None:
    current().retries += 1


def note_fallback(route_id: str, reason: str) -> None:
    current().fallbacks.append(f"{route_id}={reason}")


async def paid_send() -> None:
    """Called by the sender before it sends a paid call: runs the request's hook, once."""
    ctx = current()
    hook = ctx.before_paid_send
    if hook is not None:
        await hook()
        ctx.before_paid_send = None


def note_upstream_seconds(seconds: float) -> None:
    current().upstream_seconds += seconds

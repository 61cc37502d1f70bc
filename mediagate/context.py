"""What one request did, in one typed record: who called, which model and route served, what it
cost, what the gateway tried on its behalf.

The HTTP middleware (`mediagate.http.middleware`) opens a `RequestContext` for every request and
makes it current (a context variable, so the child tasks of an n > 1 request write to the same
record); the use cases and the upstream sender fill it in; the middleware reads it back for the
access log line, the metrics and the response headers. Nothing else is kept per request.

The record holds facts, typed; `mediagate.http.headers` renders them into the answer's headers
(`x-mediagate-route`, `-dropped`, `-mapped`, `-retries`, `-fallback`, ...), the one place that
does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mediagate.errors import GatewayError

if TYPE_CHECKING:
    from mediagate.catalog import Alias, Route


# Request ids: 128 bits from the OS's CSPRNG each, as `secrets.token_hex(16)` gives, read 256
# ids' worth at a time: a getrandom call per request released the GIL on the event loop's
# thread at every request, to whichever store worker thread was waiting for it. The bytes are
# as unpredictable, none is used twice (a forked child starts a block of its own).
_ID_HEX = 32
_IDS_PER_READ = 256
_id_lock = threading.Lock()
_id_block = ""
_id_at = 0


def new_request_id() -> str:
    global _id_block, _id_at
    with _id_lock:
        if _id_at >= len(_id_block):
            _id_block, _id_at = os.urandom(_ID_HEX // 2 * _IDS_PER_READ).hex(), 0
        start, _id_at = _id_at, _id_at + _ID_HEX
        return f"req_{_id_block[start : start + _ID_HEX]}"


def _fresh_ids_after_fork() -> None:
    global _id_block, _id_at, _id_lock
    _id_lock, _id_block, _id_at = threading.Lock(), "", 0


os.register_at_fork(after_in_child=_fresh_ids_after_fork)


class Held(Protocol):
    """Something a request holds until it ends (the room its upstream answers take,
    mediagate.upstream.room.Claim)."""

    def release(self) -> None: ...


@dataclass(slots=True)
class RequestContext:
    # Ours, always: the records (the request log, a settlement) are keyed by it, so it must be
    # unique; a client's own id for the request is kept beside it.
    request_id: str = field(default_factory=new_request_id)
    # The id the client (or its load balancer) gave the request: X-Client-Request-Id, else
    # X-Request-ID; echoed back and recorded, never a key of ours.
    client_request_id: str | None = None
    endpoint: str = "other"  # a bounded label: "images.generations", "videos", "health", ...
    key_name: str | None = None  # the client key's name (never the key)
    # Who acted with the key where that is not the key's holder: the console's signed-in user
    # (its playground sends /v1 requests with one of the team's keys).
    principal: str | None = None
    model: str | None = None  # the public model name asked for (an alias's successor)
    alias: Alias | None = None  # the retired name asked for, when its successor served
    route: Route | None = None  # the route that served (after any fallback)
    cost: float | None = None  # USD booked for this request
    # What the route's normalisation did: parameters dropped, and mapped ("size=1536x1024").
    dropped: list[str] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    upstream_calls: int = 0  # an `n` split over several upstream calls: how many
    partial: tuple[int, int] | None = None  # (calls that succeeded, calls made) when some failed
    replayed: bool = False  # the answer is an Idempotency-Key's first answer, replayed
    prompt: str | None = None  # only when the operator set MEDIAGATE_LOG_PROMPTS
    streaming: bool = False  # answered as a stream: the cost is not known at the headers
    error: GatewayError | None = None
    upstream_seconds: float = 0.0
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)  # "route=reason", in order
    # Awaited once before the request's first paid upstream call is sent (the Idempotency-Key
    # records that the call went out, so a takeover after a crash cannot pay twice).
    before_paid_send: Callable[[], Awaitable[None]] | None = None
    # What the request's upstream answers hold of the replica's room for them, made by the
    # sender on the first call and given back when the request ends (`finish`); after that
    # (`ended`), a call still running for it (a task that outlived it) holds its own.
    held: Held | None = None
    ended: bool = False
    # What the request log (mediagate.accounting.requestlog) records beyond the above, set
    # where each is known: the key's team (http.deps), what was asked (the image and video
    # services), what it made and what it reserved, the video job it made or read.
    team: str | None = None
    tier: str | None = None  # an image's size, a video's resolution tier
    quality: str | None = None
    n: int | None = None
    seconds: int | None = None  # a video's length asked
    images: int = 0  # images billed
    reserved: float | None = None  # USD reserved until a video job settles
    job_id: str | None = None
    upstream_task_id: str | None = None
    # A batch line's request: its batch and the line's custom_id (mediagate.batches.runner).
    batch_id: str | None = None
    custom_id: str | None = None

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
            **({"dropped": sorted(self.dropped)} if self.dropped else {}),
            **({"mapped": self.mapped} if self.mapped else {}),
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


def finish(ctx: RequestContext) -> None:
    """The request has ended (its answer sent, or given up on): what it held is given back."""
    ctx.ended = True
    if ctx.held is not None:
        ctx.held.release()


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

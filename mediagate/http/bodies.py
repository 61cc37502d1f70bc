"""Request bodies read bounded: every byte counted as it arrives, chunked or not, and in time.

A Content-Length over the limit is refused before a byte is read; a body without one (chunked)
or one that lies is refused as soon as the count passes the limit, with the OpenAI-shaped 413
`request_too_large`. Each endpoint caps its JSON near what its largest valid request needs. JSON
is parsed only once whole, and a structure nested deeper than any OpenAI request is a 400,
never a RecursionError. Multipart forms are parsed from a request whose receive channel does the
counting (`bounded`), so the parser never spools more than the limit to disk.

What all clients together can make the gateway hold is bounded too (`Bodies`): a body takes
its Content-Length from MEDIAGATE_MAX_INFLIGHT_BODY_BYTES before it is read (a chunked one
takes its bytes as they arrive) and gives them back when its request ends (the bookkeeping
middleware calls `Bodies.release`); past the bound, a 503 `server_overloaded` with Retry-After.
A body is due within MEDIAGATE_BODY_TIMEOUT_S of its reading starting, plus a second per
MEDIAGATE_BODY_MIN_BYTES_PER_S received: a trickle is a 408 `request_timeout` and the
connection is closed. A client that hangs up mid-body is a 499 `client_disconnected`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope

from mediagate.errors import (
    ClientGone,
    InvalidRequest,
    RequestTimeout,
    RequestTooLarge,
    ServerOverloaded,
)

# No OpenAI request nests deeper than a handful of levels; this leaves plenty of room.
MAX_JSON_DEPTH = 32


def too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is larger than the {limit} bytes the gateway accepts."
    )


def client_gone() -> ClientGone:
    return ClientGone("The client closed the connection before its request body was complete.")


# Where a request keeps the body bytes it holds of the in-flight bound (in its ASGI scope).
_HELD = "mediagate.body_bytes"


class Bodies:
    """The request bodies one replica holds, bounded, and the pace each must arrive at. One
    per app (`app.state.bodies`); `clock` is injectable for tests."""

    def __init__(
        self,
        inflight_limit: int,
        timeout_s: float,
        min_bytes_per_s: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inflight_limit = inflight_limit
        self.timeout_s = timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self.clock = clock
        self.held = 0

    def take(self, scope: Scope, size: int) -> None:
        """Hold `size` more bytes for this request, or refuse: 503 past the bound."""
        if self.inflight_limit and self.held + size > self.inflight_limit:
            raise ServerOverloaded(
                "The gateway is holding as many request bodies as it may; try again shortly.",
                headers={"retry-after": "1"},
            )
        self.held += size
        scope[_HELD] = scope.get(_HELD, 0) + size

    def release(self, scope: Scope) -> None:
        """Give back what the request held (when it ends: the bookkeeping middleware)."""
        self.held -= scope.pop(_HELD, 0)

    def deadline(self, started: float, received: int) -> float:
        return started + self.timeout_s + received / self.min_bytes_per_s


def _bodies(request: Request) -> Bodies | None:
    app = request.scope.get("app")
    bodies = getattr(getattr(app, "state", None), "bodies", None)
    return bodies if isinstance(bodies, Bodies) else None


def _timed_out(bodies: Bodies) -> RequestTimeout:
    return RequestTimeout(
        f"The request body did not arrive in time (within {bodies.timeout_s:g} s, plus a "
        f"second per {bodies.min_bytes_per_s} bytes).",
        headers={"connection": "close"},
    )


def bounded(request: Request, limit: int) -> Request:
    """The request, its body counted as the server hands it over: past `limit` bytes, reading
    it raises a 413; past the in-flight bound a 503, past its deadline a 408; a client that
    hangs up mid-body is a 499 `client_disconnected` (logged as a request, never as an
    unhandled error)."""
    return Request(request.scope, _counted(request, limit))


def _counted(request: Request, limit: int) -> Receive:
    """The request's receive channel, counting and timing its body as `bounded` says."""
    declared = request.headers.get("content-length", "")
    length = int(declared) if declared.isdigit() else None
    if length is not None and length > limit:
        raise too_large(limit)
    bodies = _bodies(request)
    scope = request.scope
    if bodies is not None and length:
        bodies.take(scope, length)  # before a byte is read
    receive = request.receive
    received = 0
    started = bodies.clock() if bodies is not None else 0.0

    async def counted() -> Message:
        nonlocal received
        if bodies is None:
            message = await receive()
        else:
            left = bodies.deadline(started, received) - bodies.clock()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise _timed_out(bodies) from None
        if message["type"] == "http.request":
            chunk = len(message.get("body", b""))
            received += chunk
            if received > limit:
                raise too_large(limit)
            if bodies is not None and length is None:
                bodies.take(scope, chunk)  # chunked: held as it arrives
        elif message["type"] == "http.disconnect":
            raise client_gone()
        return message

    return counted


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, read bounded (as `bounded` reads it, without a Request and a stream
    around its receive channel: a JSON body is usually one message)."""
    receive = _counted(request, limit)
    chunks: list[bytes] = []
    while True:
        message = await receive()  # a disconnect raises (client_gone)
        if message["type"] != "http.request":
            continue
        body: bytes = message.get("body", b"")
        if body:
            chunks.append(body)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _depth_within(value: Any, limit: int) -> bool:
    """Whether no container in `value` is nested more than `limit` deep (iteratively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return True


def parse_json(raw: bytes) -> Any:
    try:
        value = json.loads(raw)
    except RecursionError:
        value = None
        deep = True
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object.",
            code="invalid_json",
        ) from None
    else:
        deep = not _depth_within(value, MAX_JSON_DEPTH)
    if deep:
        raise InvalidRequest(
            f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.",
            code="json_too_deep",
        )
    return value

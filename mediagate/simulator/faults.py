"""Fault injection: the simulated upstream on a bad day, per request or by rate.

An ASGI middleware in front of the simulator's /v1 routes decides, for each request, whether a
fault replaces (or disturbs) the normal answer:

- prompt directives, found anywhere in the body (JSON, chat messages or multipart):
  `[sim:reset]` (connection reset before any answer), `[sim:resetbody]` (a 200 cut off
  mid-body), `[sim:slowstart=S]` (S seconds before answering), `[sim:slowbody=S]` (the answer
  trickled over S seconds), `[sim:truncated]` (a 200 with truncated JSON), `[sim:nonjson]` (a
  200 in HTML), `[sim:huge=MB]` (a 200 of MB megabytes), `[sim:burstNNN=N]` or
  `[sim:burstNNN=N:label]` (the first N requests carrying that directive get status NNN; a
  429 comes with Retry-After, `[sim:retryafter=S]` to choose it), `[sim:gzipbomb]` (a 200 of
  64 KiB in `Content-Encoding: gzip`, whatever the request's Accept-Encoding, that decodes to
  a valid image answer padded to 64 MiB; `[sim:gzipbomb=MB]` decodes to MB MiB instead, built
  once per size a piece at a time, never whole: 1024 is about 1 MiB of gzip), `[sim:padded=MB]`
  (an honest large answer: a valid image answer padded with whitespace to MB MiB, sent in
  1 MiB pieces);
- helpers of the answers given in place of the simulator (`padded`, `huge`, `gzipbomb`, the
  statuses): `[sim:chunked]` (no Content-Length: chunked), `[sim:holdbody=LABEL]` (the status
  and headers go out at once, the body only once the test calls `plan.release("LABEL")`, or
  the client hangs up);
- one-shot faults queued by a test: `plan.inject("reset", path="/v1/videos/", method="GET")`;
- faults for every request made with one upstream key: `plan.set(by_key={"sk-a": "429"})`;
- faults by rate: `plan.set(rate=0.3, kinds=["429", "reset", "timeout"], seed=7)`.

Kinds: "429", "500", "502", "503", "reset", "resetbody", "slowstart", "slowbody", "timeout"
(slowstart for `timeout_s`), "nonjson", "truncated", "huge", "gzipbomb". A fault that answers
in place of the simulator is recorded in `SimState.calls` like any request (a reset with status
0, "never answered"); a slow one lets the simulator answer, and record, as usual. Either way every
request is also in `plan.seen`, with its upstream key and whether its client (the gateway)
hung up before the answer was complete.

Waits end when the client hangs up: a slow start, a trickle, a `[sim:sleep=S]` (via `pause`)
stop there, answering nothing, so a request the gateway gave up on does not keep the simulator
busy (SimState.reset waits for every request in flight) long after it mattered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
import random
import re
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediagate.simulator.png import make_png
from mediagate.simulator.rules import ConnectionCut

KINDS = (
    "429",
    "500",
    "502",
    "503",
    "reset",
    "resetbody",
    "slowstart",
    "slowbody",
    "timeout",
    "nonjson",
    "truncated",
    "huge",
    "gzipbomb",
    "padded",
)
_DIRECTIVE = re.compile(
    rb"\[sim:(reset|resetbody|truncated|nonjson|gzipbomb(?:=[0-9]+)?|slowstart=[0-9.]+|"
    rb"slowbody=[0-9.]+|huge=[0-9.]+|padded=[0-9.]+|"
    rb"burst[45][0-9]{2}=[0-9]+(?::[A-Za-z0-9_-]+)?)\]"
)
_HOLD_BODY = re.compile(rb"\[sim:holdbody=([A-Za-z0-9_-]+)\]")
_CHUNKED = b"[sim:chunked]"
_PIECE = 1024 * 1024  # a large answer goes out in pieces of this size
_BOMB_BYTES = 64 * 1024 * 1024  # what a gzip bomb decodes to, unless its directive says
# The upstream's API prefixes: OpenAI-style, Seedance (Ark) and Wan (DashScope).
_FAULT_PATHS = ("/v1/", "/seedance/", "/wan/")
_RETRY_AFTER = re.compile(rb"\[sim:retryafter=([0-9.]+)\]")

# Where a request's scope carries the asyncio.Event set once its client has hung up.
GONE_KEY = "mediagate.sim.gone"

# Records a request answered by a fault: (method, path, bearer token, raw body, status).
Recorder = Callable[[str, str, str | None, bytes, int], None]


@dataclass(frozen=True)
class Fault:
    kind: str
    seconds: float = 0.0  # slowstart, slowbody, timeout; retry-after of a 429
    size: int = 0  # huge, padded: bytes; gzipbomb: bytes once decoded
    hold: str | None = None  # holdbody: the label the body waits for
    chunked: bool = False  # no Content-Length


@dataclass
class Seen:
    """One request as the fault layer saw it."""

    method: str
    path: str
    key: str | None
    fault: str | None
    status: int = 0
    dropped: bool = False  # the client hung up before the answer was complete


@dataclass
class FaultPlan:
    rate: float = 0.0
    kinds: tuple[str, ...] = ()
    paths: tuple[str, ...] = ("/v1/",)  # prefixes the rate applies to
    methods: frozenset[str] = frozenset({"POST"})  # methods the rate applies to
    by_key: dict[str, str] = field(default_factory=dict)
    slow_s: float = 0.5
    timeout_s: float = 5.0
    huge_mb: float = 8.0
    retry_after_s: float = 0.05
    seen: list[Seen] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    _queue: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    _bursts: Counter[bytes] = field(default_factory=Counter)
    _released: dict[str, threading.Event] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random)

    def set(
        self,
        *,
        rate: float = 0.0,
        kinds: tuple[str, ...] | list[str] = (),
        seed: int | None = None,
        paths: tuple[str, ...] = ("/v1/",),
        methods: tuple[str, ...] | frozenset[str] = frozenset({"POST"}),
        by_key: dict[str, str] | None = None,
        **options: float,
    ) -> None:
        """Faults from now on (replacing the previous plan; the records are kept).
        `options`: slow_s, timeout_s, huge_mb, retry_after_s."""
        unknown = [k for k in (*kinds, *(by_key or {}).values()) if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {KINDS}")
        self.rate, self.kinds, self.paths = rate, tuple(kinds), paths
        self.methods = frozenset(m.upper() for m in methods)
        self.by_key = dict(by_key or {})
        for name, value in options.items():
            if name not in ("slow_s", "timeout_s", "huge_mb", "retry_after_s"):
                raise TypeError(f"unknown fault option {name}")
            setattr(self, name, value)
        self._rng = random.Random(seed)  # reproducible faults, not secrets

    def inject(
        self, kind: str, *, count: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """The next `count` requests (under `path`, with `method`) get this fault."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind}")
        self._queue += [(kind, path, method.upper() if method else None)] * count

    def release(self, label: str) -> None:
        """The bodies held by `[sim:holdbody=label]` go out (those to come too)."""
        self._hold(label).set()

    def _hold(self, label: str) -> threading.Event:
        return self._released.setdefault(label, threading.Event())

    def clear(self) -> None:
        """No more faults; what was seen stays for the test to read."""
        self.set()
        self._queue.clear()

    def reset(self) -> None:
        self.clear()
        self.seen.clear()
        self.injected.clear()
        self._bursts.clear()
        self._released.clear()

    def choose(self, method: str, path: str, key: str | None, body: bytes) -> Fault | None:
        fault = self._directive(body)
        if fault is None:
            for index, (kind, prefix, only) in enumerate(self._queue):
                if (prefix is None or path.startswith(prefix)) and only in (None, method):
                    del self._queue[index]
                    fault = self._fault(kind)
                    break
        if fault is None and key in self.by_key:
            fault = self._fault(self.by_key[key or ""])
        if (
            fault is None
            and self.rate > 0
            and self.kinds
            and method in self.methods
            and path.startswith(self.paths)
            and self._rng.random() < self.rate
        ):
            fault = self._fault(self._rng.choice(self.kinds))
        if fault is not None:
            self.injected[fault.kind] += 1
            hold = _HOLD_BODY.search(body) if b"[sim:" in body else None
            if hold is not None or _CHUNKED in body:
                label = hold.group(1).decode() if hold is not None else None
                fault = replace(fault, hold=label, chunked=_CHUNKED in body)
        return fault

    def _fault(self, kind: str) -> Fault:
        if kind in ("slowstart", "slowbody"):
            return Fault(kind, seconds=self.slow_s)
        if kind == "timeout":
            return Fault("slowstart", seconds=self.timeout_s)
        if kind in ("huge", "padded"):
            return Fault(kind, size=int(self.huge_mb * 1024 * 1024))
        if kind == "gzipbomb":
            return Fault(kind, size=_BOMB_BYTES)
        return Fault(kind, seconds=self.retry_after_s)

    def _directive(self, body: bytes) -> Fault | None:
        if b"[sim:" not in body:
            return None
        match = _DIRECTIVE.search(body)
        if match is None:
            return None
        text = match.group(1).decode()
        name, _, value = text.partition("=")
        if name in ("slowstart", "slowbody"):
            return Fault(name, seconds=float(value))
        if name in ("huge", "padded"):
            return Fault(name, size=int(float(value) * 1024 * 1024))
        if name == "gzipbomb":
            return Fault(name, size=int(value) * 1024 * 1024 if value else _BOMB_BYTES)
        if name.startswith("burst"):
            self._bursts[match.group(0)] += 1
            if self._bursts[match.group(0)] > int(value.split(":")[0]):
                return None
            wait = _RETRY_AFTER.search(body)
            return Fault(name[5:], seconds=float(wait.group(1)) if wait else self.retry_after_s)
        return Fault(name)


class ClientGone(Exception):
    """The client hung up while the simulator was still working on its answer."""


async def pause(scope: Scope, seconds: float) -> None:
    """Wait `seconds`, or raise ClientGone as soon as the request's client hangs up (known for
    requests under the fault layer's paths; elsewhere this is a plain sleep)."""
    gone: asyncio.Event | None = scope.get(GONE_KEY)
    if gone is None:
        await asyncio.sleep(seconds)
        return
    if not await _outwaited(gone, seconds):
        raise ClientGone


async def _outwaited(gone: asyncio.Event, seconds: float) -> bool:
    """Whether `seconds` passed with the client still there (False as soon as it left)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await gone.wait()
    return not gone.is_set()


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class FaultInjector:
    def __init__(self, app: ASGIApp, plan: FaultPlan, record: Recorder, abort_key: str) -> None:
        self.app = app
        self.plan = plan
        self.record = record
        self.abort_key = abort_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_FAULT_PATHS):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        method, path, key = scope["method"], scope["path"], _bearer(scope)
        fault = self.plan.choose(method, path, key, body)
        seen = Seen(method, path, key, fault.kind if fault else None)
        self.plan.seen.append(seen)

        # After the body, the only message left is the disconnect: one watcher waits for it,
        # and the app's own receive calls wait on the watcher.
        gone = asyncio.Event()
        complete = False

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            seen.dropped = not complete
            gone.set()

        watcher = asyncio.create_task(watch())
        scope[GONE_KEY] = gone  # for the waits of the routes (`pause`)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracking(message: Message) -> None:
            nonlocal complete
            if gone.is_set():
                return  # nobody to answer: the status stays 0, "never answered"
            if message["type"] == "http.response.start":
                seen.status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        try:
            await self._serve(scope, replay, tracking, fault, body, key, gone)
        except ClientGone:
            pass  # the request ends unanswered (a route's `pause` found the client gone)
        finally:
            watcher.cancel()

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        fault: Fault | None,
        body: bytes,
        key: Any,
        gone: asyncio.Event,
    ) -> None:
        method, path = scope["method"], scope["path"]
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.kind == "slowstart":
            if await _outwaited(gone, fault.seconds):
                await self.app(scope, receive, send)
            return  # else the client left first: the simulator never saw the request
        if fault.kind == "slowbody":
            await self.app(scope, receive, _trickle(send, fault.seconds, gone))
            return
        if fault.kind == "reset":
            self.record(method, path, key, body, 0)
            await self._abort(scope)
            return
        status, headers, content = _answer(fault)
        self.record(method, path, key, body, status)
        if fault.kind == "resetbody":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": content[:100], "more_body": True})
            await asyncio.sleep(0.05)  # let the first bytes leave before the connection dies
            await self._abort(scope)
            return
        if fault.chunked:
            headers = [(k, v) for k, v in headers if k != b"content-length"]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if fault.hold is not None and not await _released(self.plan._hold(fault.hold), gone):
            return  # the client left while the body was held
        if fault.kind == "huge":
            chunk = b"A" * _PIECE
            left = fault.size
            try:
                while left > 0:
                    piece = chunk[: min(left, len(chunk))]
                    left -= len(piece)
                    await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
            except OSError:
                return  # the client stopped reading, as it should
            return
        try:
            for start in range(0, max(len(content), 1), _PIECE):
                more = start + _PIECE < len(content)
                piece = content[start : start + _PIECE]
                await send({"type": "http.response.body", "body": piece, "more_body": more})
        except OSError:
            return  # the client stopped reading

    async def _abort(self, scope: Scope) -> None:
        abort: Callable[[], None] | None = scope.get(self.abort_key)
        if abort is None:
            raise ConnectionCut("simulated connection reset")
        abort()
        # A turn of the loop lets the server see the connection is gone, so it does not log
        # an app that "returned without starting a response".
        await asyncio.sleep(0)


def _answer(fault: Fault) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a fault that answers in place of the simulator."""
    if fault.kind in ("429", "500", "502", "503"):
        status = int(fault.kind)
        # SimError.body's shape, written out here because a fault answers below the routes.
        body = json.dumps(
            {
                "error": {
                    "message": f"simulated upstream error {status}",
                    "type": "upstream_error",
                    "param": None,
                    "code": None,
                }
            }
        ).encode()
        headers = [(b"content-type", b"application/json")]
        if status == 429:
            headers += [
                (b"retry-after", str(max(1, math.ceil(fault.seconds))).encode()),
                (b"retry-after-ms", str(int(fault.seconds * 1000)).encode()),
            ]
        return status, [*headers, (b"content-length", str(len(body)).encode())], body
    if fault.kind == "gzipbomb":
        body = _gzip_bomb(fault.size)
        headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
        return 200, [*headers, (b"content-length", b"%d" % len(body))], body
    if fault.kind == "padded":
        body = _padded(fault.size)
        headers = [(b"content-type", b"application/json")]
        return 200, [*headers, (b"content-length", b"%d" % len(body))], body
    if fault.kind == "nonjson":
        body = b"<html><body>502 Bad Gateway (but with a 200)</body></html>"
        return 200, [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(body))], body
    if fault.kind == "huge":
        size = str(fault.size).encode()
        return 200, [(b"content-type", b"application/json"), (b"content-length", size)], b""
    # truncated, and resetbody's would-be body: JSON that stops halfway.
    body = b'{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAAA'
    if fault.kind == "resetbody":
        whole = str(len(body) * 4).encode()  # more than will ever arrive
        return 200, [(b"content-type", b"application/json"), (b"content-length", whole)], body
    return (
        200,
        [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        body,
    )


def _image_answer(name: str) -> bytes:
    image = base64.b64encode(make_png(64, 64, name)).decode()
    return json.dumps({"created": 1, "data": [{"b64_json": image}]}).encode()


@functools.cache
def _gzip_bomb(size: int) -> bytes:
    """An image answer padded with whitespace to `size` bytes (valid JSON, a real PNG in it),
    gzipped to about a thousandth of that: whoever decodes it holds `size` bytes for one small
    answer. Compressed a piece at a time, so building a 1 GiB one holds about 1 MiB."""
    head = _image_answer("bomb")
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    out = [packer.compress(head[:-1])]
    left = max(size - len(head), 0)
    blank = b" " * _PIECE
    while left > 0:
        out.append(packer.compress(blank[: min(left, _PIECE)]))
        left -= _PIECE
    out.append(packer.compress(b"}"))
    out.append(packer.flush())
    return b"".join(out)


@functools.lru_cache(maxsize=4)
def _padded(size: int) -> bytes:
    """An honest large answer: a valid image answer padded with whitespace to `size` bytes."""
    head = _image_answer("padded")
    return head[:-1] + b" " * max(size - len(head), 0) + b"}"


async def _released(event: threading.Event, gone: asyncio.Event) -> bool:
    """Whether the test released `event` before the client hung up (set from its thread)."""
    while not event.is_set():
        if not await _outwaited(gone, 0.01):
            return False
    return True


def _trickle(send: Send, seconds: float, gone: asyncio.Event) -> Send:
    """A send that spreads each body over `seconds`, in ten pieces, until the client leaves
    (the rest is not sent)."""

    async def trickling(message: Message) -> None:
        if gone.is_set():
            return
        if message["type"] != "http.response.body" or not message.get("body"):
            await send(message)
            return
        data: bytes = message["body"]
        more = message.get("more_body", False)
        step = max(1, math.ceil(len(data) / 10))
        pieces = [data[i : i + step] for i in range(0, len(data), step)]
        for index, piece in enumerate(pieces):
            if not await _outwaited(gone, seconds / 10):
                return
            last = index == len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more or not last})

    return trickling

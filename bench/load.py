"""The load generator: a closed-loop HTTP/1.1 driver on asyncio streams, in a process of its own.

Why not httpx2: on a 2-core machine the driver shares a core with the upstream, and httpx2's own
per-request work (a few hundred microseconds of pure Python) would make the driver, not the
system under test, the bottleneck. This client does the least HTTP/1.1 needs: one keep-alive
connection per worker, a request prebuilt as bytes, a response read by Content-Length (or
chunked), bodies discarded unless a scenario needs them.

It takes commands as JSON lines on stdin and answers each with one JSON line on stdout:

    {"scenario": {...}, "concurrency": 16, "duration_s": 1.0, "max_requests": 0}

A scenario is {"kind": "http", "method", "url", "headers", "body"} (one request, status 200
expected; with "loop": "httpx2" it is made through an httpx2 client and its JSON parsed, as
an application's call is, instead of by the raw driver) or {"kind": "chat_direct", ...} (the
chat call, then a GET of the first image link in its Markdown, as a client of the raw upstream
has to). With "first_event": true the answer is a server-sent event stream, and its latency
is the time to its first event (its first `data:` line ended by a blank line; comments do not
count), the whole stream's time going to "complete_ms"; a stream holding an `error` event or
no completed image is an error. {"kind": "mix", "scenarios": [...]} takes its scenarios in
turn, one per iteration across all workers (repeat one in the list to weigh it). Each worker
repeats its scenario until the duration is over (or `max_requests` are done, when given),
starting one iteration at most every "pace_ms" of the command (default 0: back to back). The
answer: every latency in milliseconds, the elapsed time, the bytes read, and errors.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_LINK = re.compile(rb"!\[[^\]]*\]\((https?://[^\s)]+)\)")
_FIRST_EVENT = re.compile(rb"(?:^|\n)data:[^\n]*\n\n")
_READ = 1024 * 1024


class HttpError(Exception):
    pass


@dataclass
class Request:
    host: str
    port: int
    raw: bytes  # the whole request, prebuilt

    @classmethod
    def build(
        cls, method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Request:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return cls(host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


@dataclass
class Connection:
    """One keep-alive connection per (host, port), reopened when the server closes it."""

    streams: dict[tuple[str, int], tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(
        default_factory=dict
    )

    async def send(
        self, request: Request, keep: bool, watch: EventWatch | None = None
    ) -> tuple[int, bytes, int]:
        """(status, body if kept else b"", bytes of body read); `watch` sees the body's chunks
        as they arrive."""
        where = (request.host, request.port)
        if where not in self.streams:
            self.streams[where] = await asyncio.open_connection(*where, limit=_READ)
        reader, writer = self.streams[where]
        try:
            writer.write(request.raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, chunked, close = _head(head)
            if chunked:
                body, size = await _chunked(reader, keep, watch)
            else:
                body, size = await _exactly(reader, length, keep)
                if watch is not None:
                    watch.feed(body)
        except BaseException:
            self.drop(where)
            raise
        if close:
            self.drop(where)
        return status, body, size

    def drop(self, where: tuple[str, int]) -> None:
        _, writer = self.streams.pop(where)
        writer.close()

    def close(self) -> None:
        for where in list(self.streams):
            self.drop(where)


def _head(head: bytes) -> tuple[int, int, bool, bool]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and value == "close":
            close = True
    return status, length, chunked, close


async def _exactly(reader: asyncio.StreamReader, length: int, keep: bool) -> tuple[bytes, int]:
    if keep:
        return await reader.readexactly(length), length
    left = length
    while left:
        left -= len(await reader.readexactly(min(left, _READ)))
    return b"", length


class EventWatch:
    """When an event stream's first event (not a comment) was complete."""

    def __init__(self) -> None:
        self.head = b""
        self.at: float | None = None

    def feed(self, data: bytes) -> None:
        if self.at is None:
            self.head += data
            if _FIRST_EVENT.search(self.head):
                self.at = time.perf_counter()


async def _chunked(
    reader: asyncio.StreamReader, keep: bool, watch: EventWatch | None = None
) -> tuple[bytes, int]:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        length = int(line.split(b";")[0].strip(), 16)
        if length == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts), size
        data, _ = await _exactly(reader, length, keep or watch is not None)
        if watch is not None:
            watch.feed(data)
        if keep:
            parts.append(data)
        size += length
        await reader.readexactly(2)


class Scenario:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind = spec["kind"]
        body = spec.get("body", "")
        self.request = Request.build(
            spec["method"],
            spec["url"],
            spec.get("headers"),
            body.encode() if isinstance(body, str) else bytes(body),
        )
        self.first_event = bool(spec.get("first_event"))
        self.keep = self.kind == "chat_direct" or self.first_event

    async def once(self, conn: Connection) -> tuple[int, float | None]:
        """One iteration: (the bytes read, when its first event came if it is a stream);
        raises HttpError on an unexpected answer."""
        watch = EventWatch() if self.first_event else None
        status, body, size = await conn.send(self.request, self.keep, watch)
        if status != 200:
            raise HttpError(f"HTTP {status}")
        if watch is not None:
            if b"event: error" in body or b'"type":"error"' in body:
                raise HttpError(f"error event: {body[-300:]!r}")
            if watch.at is None or b".completed" not in body:
                raise HttpError(f"no completed image in the stream: {body[:300]!r}")
            return size, watch.at
        if self.kind == "chat_direct":
            match = _LINK.search(body)
            if match is None:
                raise HttpError("no image link in the chat answer")
            link = Request.build("GET", match.group(1).decode())
            status, _, more = await conn.send(link, False)
            if status != 200:
                raise HttpError(f"image link: HTTP {status}")
            size += more
        return size, None


class MixScenario:
    """Several scenarios taken in turn, one per iteration, across all the workers."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.scenarios = [Scenario(one) for one in spec["scenarios"]]
        self.turn = 0

    async def once(self, conn: Connection) -> tuple[int, float | None]:
        scenario = self.scenarios[self.turn % len(self.scenarios)]
        self.turn += 1
        return await scenario.once(conn)


class ClientScenario:
    """The same request made as an application makes it: an httpx2 client's call (its pool,
    its request and response objects) and the answer's JSON parsed. Slower per request than
    the raw driver: what a client program sees, and the load loop of issue 15's own table."""

    def __init__(self, spec: dict[str, Any], concurrency: int) -> None:
        import httpx2  # only this loop needs it

        self.spec = spec
        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx2.AsyncClient(limits=limits, timeout=600)

    async def once(self, conn: Connection) -> tuple[int, float | None]:
        spec = self.spec
        response = await self.client.request(
            spec["method"], spec["url"], headers=spec.get("headers"), content=spec.get("body")
        )
        if response.status_code != 200:
            raise HttpError(f"HTTP {response.status_code}")
        response.json()
        return len(response.content), None


async def run(command: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(command["concurrency"])
    spec = command["scenario"]
    client = spec.get("loop") == "httpx2"
    scenario: Scenario | ClientScenario | MixScenario
    if client:
        scenario = ClientScenario(spec, concurrency)
    elif spec["kind"] == "mix":
        scenario = MixScenario(spec)
    else:
        scenario = Scenario(spec)
    max_requests = int(command.get("max_requests") or 0)
    duration = float(command.get("duration_s") or 3600.0)
    pace = float(command.get("pace_ms") or 0) / 1000
    latencies: list[float] = []
    complete: list[float] = []  # event streams: the whole stream's time
    errors: list[str] = []
    read = 0
    started = time.perf_counter()
    deadline = started + duration
    issued = 0

    async def worker() -> None:
        nonlocal read, issued
        conn = Connection()
        try:
            while time.perf_counter() < deadline:
                if max_requests and issued >= max_requests:
                    return
                issued += 1
                begin = time.perf_counter()
                try:
                    size, first = await scenario.once(conn)
                except Exception as exc:  # counted, whatever the loop's library raised
                    errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                end = time.perf_counter()
                read += size
                if first is not None:
                    complete.append((end - begin) * 1000)
                    end = first
                latencies.append((end - begin) * 1000)
                if pace:
                    await asyncio.sleep(max(0.0, begin + pace - time.perf_counter()))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if isinstance(scenario, ClientScenario):
        await scenario.client.aclose()
    return {
        "latencies_ms": latencies,
        "complete_ms": complete,
        "elapsed_s": time.perf_counter() - started,
        "bytes": read,
        "errors": len(errors),
        "error_sample": errors[:3],
    }


async def serve() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        result = await run(json.loads(line))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(serve())

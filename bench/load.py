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
has to). Each worker repeats it until the
duration is over (or `max_requests` are done, when given). The answer: every latency in
milliseconds, the elapsed time, the bytes read, and errors.
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

    async def send(self, request: Request, keep: bool) -> tuple[int, bytes, int]:
        """(status, body if kept else b"", bytes of body read)."""
        where = (request.host, request.port)
        if where not in self.streams:
            self.streams[where] = await asyncio.open_connection(*where, limit=_READ)
        reader, writer = self.streams[where]
        try:
            writer.write(request.raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, chunked, close = _head(head)
            if chunked:
                body, size = await _chunked(reader, keep)
            else:
                body, size = await _exactly(reader, length, keep)
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


async def _chunked(reader: asyncio.StreamReader, keep: bool) -> tuple[bytes, int]:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        length = int(line.split(b";")[0].strip(), 16)
        if length == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts), size
        data, _ = await _exactly(reader, length, keep)
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
        self.keep = self.kind == "chat_direct"

    async def once(self, conn: Connection) -> int:
        """One iteration: the bytes read; raises HttpError on an unexpected answer."""
        status, body, size = await conn.send(self.request, self.keep)
        if status != 200:
            raise HttpError(f"HTTP {status}")
        if self.kind == "chat_direct":
            match = _LINK.search(body)
            if match is None:
                raise HttpError("no image link in the chat answer")
            link = Request.build("GET", match.group(1).decode())
            status, _, more = await conn.send(link, False)
            if status != 200:
                raise HttpError(f"image link: HTTP {status}")
            size += more
        return size


class ClientScenario:
    """The same request made as an application makes it: an httpx2 client's call (its pool,
    its request and response objects) and the answer's JSON parsed. Slower per request than
    the raw driver: what a client program sees, and the load loop of issue 15's own table."""

    def __init__(self, spec: dict[str, Any], concurrency: int) -> None:
        import httpx2  # only this loop needs it

        self.spec = spec
        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx2.AsyncClient(limits=limits, timeout=600)

    async def once(self, conn: Connection) -> int:
        spec = self.spec
        response = await self.client.request(
            spec["method"], spec["url"], headers=spec.get("headers"), content=spec.get("body")
        )
        if response.status_code != 200:
            raise HttpError(f"HTTP {response.status_code}")
        response.json()
        return len(response.content)


async def run(command: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(command["concurrency"])
    spec = command["scenario"]
    client = spec.get("loop") == "httpx2"
    scenario = ClientScenario(spec, concurrency) if client else Scenario(spec)
    max_requests = int(command.get("max_requests") or 0)
    duration = float(command.get("duration_s") or 3600.0)
    latencies: list[float] = []
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
                    # Awaited first: `read += await ...` would read `read` before the await
                    # and lose what other workers added meanwhile.
                    got = await scenario.once(conn)
                    read += got
                except Exception as exc:  # counted, whatever the loop's library raised
                    errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                latencies.append((time.perf_counter() - begin) * 1000)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if isinstance(scenario, ClientScenario):
        await scenario.client.aclose()
    return {
        "latencies_ms": latencies,
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

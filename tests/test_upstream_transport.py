"""The upstream sender's network (mediagate.upstream.transport), each implementation on its own
against the simulator over loopback: aiohttp's (production's) and the adapter over an httpx2
transport (MEDIAGATE_UPSTREAM_TRANSPORT=httpx, and every transport a test hands the gateway);
aiohttp's again as the gateway holds it, deferred (built by its first call).
Both keep each failure's phase (what the sender's retry rules read), timeouts per phase, answers
streamed as they arrive, no cookies; and the sender takes one path through either."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest

from mediagate.catalog import load_catalog
from mediagate.errors import GatewayError, Scrubber
from mediagate.observability.metrics import Metrics
from mediagate.upstream.aiohttp_transport import AiohttpTransport
from mediagate.upstream.dialects import UpstreamRequest
from mediagate.upstream.retry import CONNECT, RESET, TIMEOUT, failure_kind
from mediagate.upstream.room import Claim
from mediagate.upstream.sender import KeyRing, Upstream
from mediagate.upstream.transport import (
    Call,
    Deferred,
    HttpxTransport,
    Transport,
    UpstreamResponse,
    Whole,
)

from .conftest import GROUP_KEYS, Gateway, Sim

BODY = {"model": "gpt-image-2", "prompt": "a kite"}
HEADERS = {
    "Authorization": f"Bearer {GROUP_KEYS['default']}",
    "Content-Type": "application/json",
}
KINDS = ["aiohttp", "httpx", "deferred"]

Scenario = Callable[[Transport], Awaitable[Any]]


def transport_of(kind: str, connections: int = 4) -> Transport:
    limits = httpx2.Limits(max_connections=connections)
    if kind == "aiohttp":
        return AiohttpTransport(limits)
    if kind == "deferred":  # as the gateway holds aiohttp's: built by the first call
        return Deferred(lambda: AiohttpTransport(limits))
    return HttpxTransport(httpx2.AsyncHTTPTransport(limits=limits))


def run(kind: str, scenario: Scenario) -> Any:
    async def main() -> Any:
        async with transport_of(kind) as transport:
            return await scenario(transport)

    return asyncio.run(main())


def call(url: str, body: Any = None, *, read: float = 5.0, method: str = "POST") -> Call:
    timeouts = httpx2.Timeout(5.0, read=read).as_dict()
    content = None if body is None else json.dumps(body).encode()
    return Call(method, url, HEADERS if body is not None else {}, content, timeouts)


def generate(sim: Sim, prompt: str, *, read: float = 5.0) -> Scenario:
    async def scenario(transport: Transport) -> Whole:
        url = f"{sim.url}/v1/images/generations"
        return await transport.exchange(call(url, {**BODY, "prompt": prompt}, read=read), 2**24)

    return scenario


def failure_of(kind: str, scenario: Scenario) -> str:
    with pytest.raises(httpx2.TransportError) as caught:
        run(kind, scenario)
    return failure_kind(caught.value)


@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_comes_through_whole(sim: Sim, kind: str) -> None:
    whole = run(kind, generate(sim, "a kite"))
    assert whole.status == 200 and json.loads(whole.body)["data"][0]["b64_json"]
    (sent,) = sim.sent()
    assert sent.status == 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_connection_dropped_after_sending_is_not_a_connect_failure(sim: Sim, kind: str) -> None:
    # The sender retries a CONNECT failure even for paid work: this one may have been paid.
    assert failure_of(kind, generate(sim, "[sim:reset] a kite")) == RESET
    assert failure_of(kind, generate(sim, "[sim:resetbody] a kite")) == RESET
    assert [c.status for c in sim.sent()] == [0, 200]


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_connection_is_a_connect_failure(kind: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused

    async def scenario(transport: Transport) -> Whole:
        return await transport.exchange(call(f"http://127.0.0.1:{port}/v1/models"), 2**20)

    assert failure_of(kind, scenario) == CONNECT


@pytest.mark.parametrize("kind", KINDS)
def test_a_read_that_waits_too_long_is_a_timeout(sim: Sim, kind: str) -> None:
    assert failure_of(kind, generate(sim, "[sim:slowstart=2] a kite", read=0.3)) == TIMEOUT


@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_is_streamed_as_it_arrives(sim: Sim, kind: str) -> None:
    async def scenario(transport: Transport) -> tuple[float, float, int]:
        url = f"{sim.url}/v1/images/generations"
        body = {**BODY, "prompt": "[sim:slowbody=0.6] a kite"}
        response = await transport.open(call(url, body))
        try:
            started = time.monotonic()
            chunks = [len(chunk) async for chunk in response.aiter_raw()]
            return started, time.monotonic(), len(chunks)
        finally:
            await response.aclose()

    started, done, chunks = run(kind, scenario)
    assert done - started >= 0.4 and chunks > 1  # the body trickled in, in parts


@pytest.mark.parametrize("kind", KINDS)
def test_no_cookie_is_kept_or_sent_back(kind: str) -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            seen.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=s3cret; Path=/\r\n")
            writer.write(b"Content-Length: 2\r\n\r\nok")
            await writer.drain()
            if len(seen) == 2:
                break
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # A host name: aiohttp's default jar would drop a cookie from an IP address anyway.
        async with server, transport_of(kind, connections=1) as transport:
            first = await transport.exchange(call(f"http://localhost:{port}/a", method="GET"), 99)
            assert dict(first.headers)[b"Set-Cookie"].startswith(b"session=")  # it was offered
            await transport.exchange(call(f"http://localhost:{port}/b", method="GET"), 99)

    asyncio.run(main())
    assert len(seen) == 2
    assert b"cookie" not in seen[1].lower().replace(b"set-cookie", b"")


class CountingRelay:
    """A TCP relay in front of the simulator, on a loop of its own: how many connections the
    gateway opened to its upstream."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.connections = 0
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.stopped = asyncio.Event()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(5)

    def _run(self, started: threading.Event) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            async with server:
                await self.stopped.wait()
            relays = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

        self.loop.run_until_complete(main())
        self.loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(5)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_an_idle_connection_is_not_reused_past_the_keepalive_setting(
    make_gateway: Callable[..., Gateway], sim: Sim, transport: str
) -> None:
    # Reusing a connection the upstream is closing fails a paid call with a 502 that is not
    # retried; MEDIAGATE_UPSTREAM_KEEPALIVE_S (below the upstream's idle timeout) prevents it.
    relay = CountingRelay(sim.port)
    try:
        gateway = make_gateway(
            upstream_url=f"http://127.0.0.1:{relay.port}/v1",
            upstream_keepalive_s=0.3,
            upstream_transport=transport,
        )
        assert gateway.generate("one").status_code == 200
        assert gateway.generate("two").status_code == 200
        assert relay.connections == 1  # reused while fresh
        time.sleep(0.5)  # aiohttp's and httpcore2's pools read the loop's clock: no injection
        assert gateway.generate("three").status_code == 200
        assert relay.connections == 2  # the idle one was let go, not reused
    finally:
        relay.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_a_compressed_answer_is_refused_undecoded_on_either_transport(kind: str) -> None:
    # The sender asks for identity: a 1 MiB gzip answer decoded up to 256 MiB. An answer in
    # an encoding it did not ask for is refused as it is, whole or streamed, on both transports
    # alike; a paid call's refusal is maybe paid (the upstream may have done the work).
    answer = json.dumps({"created": 1, "data": [{"b64_json": "aGk="}]}).encode()
    packed = gzip.compress(answer)
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            with contextlib.suppress(asyncio.IncompleteReadError):
                seen.append(await reader.readuntil(b"\r\n\r\n"))
            if reader.at_eof():
                break
            await reader.readexactly(int(seen[-1].lower().split(b"content-length: ")[1].split()[0]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed))
            writer.write(packed)
            await writer.drain()
        writer.close()

    async def main() -> list[GatewayError]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        keys = KeyRing({"default": [GROUP_KEYS["default"]]})
        route = load_catalog().routes["gpt-image-2.web"]
        refused: list[GatewayError] = []
        async with server, transport_of(kind, connections=1) as transport:
            upstream = Upstream(
                transport, f"http://127.0.0.1:{port}/v1", keys, Metrics(), Scrubber(), 10
            )
            request = UpstreamRequest("/images/generations", {"model": "m", "prompt": "p"})
            for paid in (True, False):
                with pytest.raises(GatewayError) as whole:
                    await upstream.send(route, request, paid=paid, parse=True)
                refused.append(whole.value)
            with pytest.raises(GatewayError) as streamed:
                async with upstream.stream(route, request, paid=True):
                    pass
            refused.append(streamed.value)
        return refused

    paid, free, streamed = asyncio.run(main())
    for error in (paid, free, streamed):
        assert (error.status, error.code) == (502, "bad_upstream_response")
        assert "'gzip'" in error.message and "not decoded" in error.message
    assert paid.paid and streamed.paid and not free.paid
    assert all(b"accept-encoding: identity" in head.lower() for head in seen)


def test_a_gzip_bomb_is_refused_through_the_gateway(gateway: Gateway, sim: Sim) -> None:
    # 64 KiB decoding to 64 MiB: refused, undecoded, not retried (a paid call: maybe paid).
    response = gateway.generate("a fox [sim:gzipbomb]", model="gpt-image-2")
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "bad_upstream_response"
    assert response.headers["x-should-retry"] == "false"
    assert len(sim.sent()) == 1
    assert sim.state.faults.injected["gzipbomb"] == 1


class Recording(Transport):
    """Which of the interface's two calls the sender makes, on whatever transport."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def exchange(self, call: Call, max_bytes: int, claim: Claim | None = None) -> Whole:
        self.calls.append("exchange")
        return await self.inner.exchange(call, max_bytes, claim)

    async def open(self, call: Call) -> UpstreamResponse:
        self.calls.append("open")
        return await self.inner.open(call)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("kind", KINDS)
def test_the_sender_takes_one_path_whatever_the_transport(sim: Sim, kind: str) -> None:
    # No branch on the transport's type: a whole answer is an `exchange`, a stream an `open`,
    # on aiohttp's transport as on the adapter every test's httpx2 transport goes through.
    route = load_catalog().routes["gpt-image-2.web"]
    request = UpstreamRequest("/images/generations", BODY)

    async def main() -> list[str]:
        async with Recording(transport_of(kind)) as recording:
            keys = KeyRing({"default": [GROUP_KEYS["default"]]})
            upstream = Upstream(recording, f"{sim.url}/v1", keys, Metrics(), Scrubber(), 10)
            answer = await upstream.send(route, request, paid=True, parse=True)
            assert answer.payload["data"][0]["b64_json"]
            async with upstream.stream(route, request, paid=True) as response:
                assert json.loads(b"".join([c async for c in response.aiter_bytes()]))["data"]
            return recording.calls

    assert asyncio.run(main()) == ["exchange", "open"]


def test_a_deferred_transport_is_built_once_then_called_directly(sim: Sim) -> None:
    """Concurrent first calls wait for one build (in a worker thread); after it, the transport's
    calls are the built one's own, no frame between; closed, the next call builds anew."""
    built: list[Transport] = []

    def build() -> Transport:
        built.append(AiohttpTransport(httpx2.Limits(max_connections=4)))
        return built[-1]

    async def main() -> None:
        deferred = Deferred(build)
        answers = await asyncio.gather(*(generate(sim, f"kite {i}")(deferred) for i in range(3)))
        assert [a.status for a in answers] == [200] * 3
        assert len(built) == 1
        assert deferred.exchange == built[0].exchange and deferred.open == built[0].open
        await deferred.aclose()
        assert (await generate(sim, "again")(deferred)).status == 200
        assert len(built) == 2
        await deferred.aclose()

    asyncio.run(main())


def test_a_streamed_answer_is_read_raw_in_chunks_of_a_size_or_as_it_comes() -> None:
    # The video content relay reads 64 KB chunks as sent; the SSE relay reads them as they come.
    packed = gzip.compress(b"x" * 10)
    parts = [packed[:3], b"", packed[3:]]

    async def chunks() -> Any:
        for part in parts:
            yield part

    async def main() -> tuple[list[bytes], bytes]:
        raw = UpstreamResponse(200, [], chunks=chunks())
        sized = [chunk async for chunk in raw.aiter_raw(4)]
        plain = UpstreamResponse(200, [], chunks=chunks())
        return sized, b"".join([chunk async for chunk in plain.aiter_bytes()])

    sized, whole = asyncio.run(main())
    assert b"".join(sized) == packed and [len(c) for c in sized[:-1]] == [4] * (len(sized) - 1)
    assert 0 < len(sized[-1]) <= 4
    assert whole == packed  # never decoded

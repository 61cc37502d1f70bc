"""The aiohttp transport under the upstream client (mediagate.upstream.aiohttp_transport), on
its own against the simulator over loopback: each failure keeps its phase (what the sender's
retry rules read), timeouts per phase, answers streamed as they arrive, no cookies kept.
Through the gateway it is the default, so the whole suite runs on it too."""

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
from mediagate.errors import Scrubber
from mediagate.gateway import no_cookies
from mediagate.observability.metrics import Metrics
from mediagate.upstream.aiohttp_transport import AiohttpTransport
from mediagate.upstream.dialects import UpstreamRequest
from mediagate.upstream.retry import CONNECT, RESET, TIMEOUT, failure_kind
from mediagate.upstream.sender import KeyRing, Upstream

from .conftest import GROUP_KEYS, Gateway, Sim

BODY = {"model": "gpt-image-2", "prompt": "a kite"}
HEADERS = {"Authorization": f"Bearer {GROUP_KEYS['default']}"}

Scenario = Callable[[httpx2.AsyncClient], Awaitable[Any]]


def run(scenario: Scenario, **client: Any) -> Any:
    async def main() -> Any:
        transport = AiohttpTransport(httpx2.Limits(max_connections=4))
        async with httpx2.AsyncClient(transport=transport, **client) as http:
            return await scenario(http)

    return asyncio.run(main())


def generate(sim: Sim, prompt: str, **extra: Any) -> Scenario:
    async def scenario(http: httpx2.AsyncClient) -> httpx2.Response:
        url = f"{sim.url}/v1/images/generations"
        return await http.post(url, json={**BODY, "prompt": prompt}, headers=HEADERS, **extra)

    return scenario


def failure_of(scenario: Scenario, **client: Any) -> str:
    with pytest.raises(httpx2.TransportError) as caught:
        run(scenario, **client)
    return failure_kind(caught.value)


def test_an_answer_comes_through_whole(sim: Sim) -> None:
    response = run(generate(sim, "a kite"))
    assert response.status_code == 200 and response.json()["data"][0]["b64_json"]
    (call,) = sim.sent()
    assert call.status == 200


def test_a_connection_dropped_after_sending_is_not_a_connect_failure(sim: Sim) -> None:
    # The sender retries a CONNECT failure even for paid work: this one may have been paid.
    assert failure_of(generate(sim, "[sim:reset] a kite")) == RESET
    assert failure_of(generate(sim, "[sim:resetbody] a kite")) == RESET
    assert [c.status for c in sim.sent()] == [0, 200]


def test_a_refused_connection_is_a_connect_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused

    async def scenario(http: httpx2.AsyncClient) -> httpx2.Response:
        return await http.get(f"http://127.0.0.1:{port}/v1/models")

    assert failure_of(scenario) == CONNECT


def test_a_read_that_waits_too_long_is_a_timeout(sim: Sim) -> None:
    timeout = httpx2.Timeout(5.0, read=0.3)
    assert failure_of(generate(sim, "[sim:slowstart=2] a kite", timeout=timeout)) == TIMEOUT


def test_an_answer_is_streamed_as_it_arrives(sim: Sim) -> None:
    async def scenario(http: httpx2.AsyncClient) -> tuple[float, float, int]:
        url = f"{sim.url}/v1/images/generations"
        body = {**BODY, "prompt": "[sim:slowbody=0.6] a kite"}
        async with http.stream("POST", url, json=body, headers=HEADERS) as response:
            started = time.monotonic()
            chunks = [len(chunk) async for chunk in response.aiter_raw()]
            return started, time.monotonic(), len(chunks)

    started, done, chunks = run(scenario)
    assert done - started >= 0.4 and chunks > 1  # the body trickled in, in parts


def test_no_cookie_is_kept_or_sent_back() -> None:
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
        transport = AiohttpTransport(httpx2.Limits(max_connections=1))
        # The gateway's client refuses cookies (no_cookies); any sent back would be aiohttp's.
        # A host name: aiohttp's default jar would drop a cookie from an IP address anyway.
        client = httpx2.AsyncClient(transport=transport, cookies=no_cookies())
        async with server, client as http:
            first = await http.get(f"http://localhost:{port}/a")
            assert first.headers["set-cookie"].startswith("session=")  # it was offered
            await http.get(f"http://localhost:{port}/b")

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


def test_a_compressed_answer_is_decoded_on_the_whole_exchange_path() -> None:
    # The sender asks for gzip and deflate; its usual call on this transport (exchange) reads
    # the answer's bytes as sent, so a compressed one must still come out as the JSON.
    answer = json.dumps({"created": 1, "data": [{"b64_json": "aGk="}]}).encode()
    packed = gzip.compress(answer)
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.readexactly(int(seen[-1].lower().split(b"content-length: ")[1].split()[0]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed))
        writer.write(packed)
        await writer.drain()
        writer.close()

    async def main() -> Any:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = AiohttpTransport(httpx2.Limits(max_connections=1))
        keys = KeyRing({"default": [GROUP_KEYS["default"]]})
        route = load_catalog().routes["gpt-image-2.web"]
        async with server, transport:
            upstream = Upstream(
                transport, f"http://127.0.0.1:{port}/v1", keys, Metrics(), Scrubber(), 10
            )
            request = UpstreamRequest("/images/generations", {"model": "m", "prompt": "p"})
            return await upstream.send(route, request, paid=True, parse=True)

    got = asyncio.run(main())
    assert got.payload == json.loads(answer)
    assert b"accept-encoding: gzip, deflate" in seen[0].lower()
    assert "content-encoding" not in got.response.headers  # decoded: the framing is gone

"""The upstream sender's network on aiohttp's client (MEDIAGATE_UPSTREAM_TRANSPORT=aiohttp, the
default): one implementation of mediagate.upstream.transport's interface, whose guarantees it
keeps (the adapter over httpx2 transports being the other).

Why: per pass-through image request the gateway spent more CPU in httpcore2 (its pure-Python
HTTP/1.1 state machine, reading a megabyte answer 64 KB at a time through anyio) than in all
of its own code; aiohttp parses in C and hands over whatever the socket has. docs/performance.md
has the numbers. A whole answer (`exchange`, the usual call) is made without any httpx2 request
or response object: about a tenth of a pass-through generation's CPU.

Written here rather than taken from a package: httpx-aiohttp (the maintained one) installs
legacy httpx beside httpx2, and its error mapping turns a connection the upstream dropped after
the request was sent into a `ConnectTimeout`, which the sender would retry as never sent (a
paid call charged twice). How aiohttp is made to keep the interface's guarantees:

- errors keep their phase (`_mapped`: aiohttp's exceptions as httpx2's, most specific first);
- timeouts per phase: connect (`sock_connect`), pool plus connect (aiohttp's `connect`, which
  includes waiting for a pooled connection: none in the gateway, whose pool has no limit and
  whose sender sets no pool timeout, mediagate.upstream.lanes), read per chunk (`sock_read`).
  aiohttp has no write timeout: a write that stalls is bounded by the sender's whole-call
  deadline (`asyncio.timeout(total)` around every attempt);
- streaming both ways: a request body that is a stream (multipart uploads) is sent as one, an
  answer is read as it arrives (never whole: a video download stays in chunks), and closing it
  early (a client that hung up) closes a connection whose answer was not read to its end
  instead of reusing it;
- no cookies (a dummy jar), no decompression, no headers of its own (the sender sets them),
  and no retries of its own (aiohttp resends an idempotent request on a closed kept-alive
  connection; turned off: retrying is the sender's decision).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp
import httpx2
from multidict import CIMultiDict

from mediagate.upstream.room import Claim
from mediagate.upstream.transport import Call, Transport, UpstreamResponse, Whole, read_whole


def _as_httpx(exc: BaseException) -> httpx2.HTTPError | None:
    """aiohttp's exception as httpx2's, by phase (most specific first); None: not aiohttp's
    or the network's (a cancellation, a fault of ours), passed on as it is."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for the pool
        return httpx2.ConnectTimeout(str(exc) or "connect timeout")
    if isinstance(exc, aiohttp.SocketTimeoutError):  # a read that waited too long
        return httpx2.ReadTimeout(str(exc) or "read timeout")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx2.ReadTimeout(str(exc) or "timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):  # no connection made: nothing was sent
        return httpx2.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ClientPayloadError):  # the answer's body was cut or malformed
        return httpx2.RemoteProtocolError(str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx2.RemoteProtocolError(str(exc) or "server disconnected")
    if isinstance(exc, aiohttp.ClientResponseError):  # an answer that is not HTTP
        return httpx2.RemoteProtocolError(str(exc))
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx2.UnsupportedProtocol(str(exc))
    if isinstance(exc, aiohttp.ClientError | OSError):  # lost after the request may be sent
        return httpx2.ReadError(str(exc) or type(exc).__name__)
    return None


class _Mapped:
    """`with _mapped():` aiohttp's exceptions raised as httpx2's (`_as_httpx`). Stateless, so
    one serves every call: no generator and context manager made per call and held for as
    long as its answer takes (a generation's minutes)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        mapped = None if exc is None else _as_httpx(exc)
        if mapped is not None:
            raise mapped from exc


_MAPPED = _Mapped()


def _mapped() -> _Mapped:
    return _MAPPED


def _timeouts(timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx2's per-phase timeouts (a request's `timeout` extension) as aiohttp's."""
    connect, pool = timeout.get("connect"), timeout.get("pool")
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if connect is None else connect + (pool or 0),
        sock_connect=connect,
        sock_read=timeout.get("read"),
    )


async def _sent(stream: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


async def _received(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """A body's bytes as the socket gave them, each piece once: `iter_any()` joins what has
    queued up since the last read into a fresh buffer (a copy of every byte of a large answer,
    which `read_whole` then joins again); `iter_chunks()` hands the queued pieces over as they
    are."""
    async for data, _ in content.iter_chunks():
        if data:  # b"" marks the end of an HTTP chunk
            yield data


async def _body(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    with _mapped():
        async for chunk in response.content.iter_any():
            yield chunk


class AiohttpTransport(Transport):
    def __init__(self, limits: httpx2.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the running loop.
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 0,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            # The sender has set every header it sends; aiohttp adds none of its own.
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # aiohttp resends an idempotent request (a status poll, a DELETE) once by itself when
        # a kept-alive connection turns out closed; httpcore2 never does. Retrying is the
        # sender's decision alone (its policy, its key and breaker bookkeeping, its retry
        # count in x-mediagate-retries): off. A private attribute, so only where it exists.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        return session

    async def _request(self, call: Call) -> aiohttp.ClientResponse:
        """The call, up to its answer's status and headers (errors still aiohttp's)."""
        if self._session is None:
            self._session = self._open()
        headers: Any = call.headers
        data: Any = call.body
        if data is not None and not isinstance(data, bytes):
            # A stream httpx2 encoded (a multipart upload): sent as it is read, framed by
            # aiohttp itself (its length, when given, else chunked).
            data = _sent(data)
            headers = CIMultiDict(
                (name, value)
                for name, value in CIMultiDict(headers).items()
                if name.lower() != "transfer-encoding"
            )
        return await self._session.request(
            call.method,
            call.url,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=_timeouts(call.timeouts),
        )

    async def exchange(self, call: Call, max_bytes: int, claim: Claim | None = None) -> Whole:
        with _mapped():
            response = await self._request(call)
            headers = list(response.raw_headers)
            try:
                body, held = await read_whole(
                    _received(response.content), headers, max_bytes, claim
                )
            finally:
                # Read to the end: back to the pool; cut short (refused): closed.
                response.release()
        return Whole(response.status, headers, body, held)

    async def open(self, call: Call) -> UpstreamResponse:
        with _mapped():
            response = await self._request(call)

        async def release() -> None:
            # Read to the end: the connection goes back to the pool; else it is closed.
            response.release()

        return UpstreamResponse(
            response.status, list(response.raw_headers), chunks=_body(response), close=release
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

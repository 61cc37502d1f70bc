"""An httpx2 transport on aiohttp's client: the upstream sender's network (MEDIAGATE_UPSTREAM_
TRANSPORT=aiohttp, the default).

Why: per pass-through image request the gateway spent more CPU in httpcore2 (its pure-Python
HTTP/1.1 state machine, reading a megabyte answer 64 KB at a time through anyio) than in all
of its own code; aiohttp parses in C and hands over whatever the socket has. docs/performance.md
has the numbers. The rest of the gateway keeps httpx2's API (requests, responses, exceptions):
only the bytes on the wire go through aiohttp.

Written here rather than taken from a package: httpx-aiohttp (the maintained one) installs
legacy httpx beside httpx2, and its error mapping turns a connection the upstream dropped after
the request was sent into a `ConnectTimeout`, which the sender would retry as never sent (a
paid call charged twice). What this transport guarantees, as httpx2's own does:

- errors keep their phase: only a failure to open a connection (or to get one from the pool in
  time) is `ConnectError`/`ConnectTimeout`; a read that times out is `ReadTimeout`; a
  connection lost after sending is `RemoteProtocolError`/`ReadError` (mediagate.upstream.retry
  reads these);
- timeouts per phase from the request's `timeout` extension: connect (`sock_connect`), pool plus
  connect (aiohttp's `connect`, which includes waiting for a pooled connection), read per chunk
  (`sock_read`). aiohttp has no write timeout: a write that stalls is bounded by the sender's
  whole-call deadline (`asyncio.timeout(total)` around every attempt);
- streaming both ways: a request body that is a stream (multipart uploads) is sent as one, an
  answer is read as it arrives (never whole: a video download stays in chunks), and closing the
  response early (a client that hung up) closes a connection whose answer was not read to its
  end instead of reusing it;
- no cookies (a dummy jar), no decompression, no headers of its own (httpx2 sets them), and
  no retries of its own (aiohttp resends an idempotent request on a closed kept-alive
  connection; turned off: retrying is the sender's decision).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
from multidict import CIMultiDict


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """aiohttp's exceptions as httpx2's, by phase (most specific first)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # connecting, or waiting for the pool
        raise httpx2.ConnectTimeout(str(exc) or "connect timeout") from exc
    except aiohttp.SocketTimeoutError as exc:  # a read that waited too long
        raise httpx2.ReadTimeout(str(exc) or "read timeout") from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx2.ReadTimeout(str(exc) or "timeout") from exc
    except aiohttp.ClientConnectorError as exc:  # no connection was made: nothing was sent
        raise httpx2.ConnectError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:  # the answer's body was cut or malformed
        raise httpx2.RemoteProtocolError(str(exc)) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx2.RemoteProtocolError(str(exc) or "server disconnected") from exc
    except aiohttp.ClientResponseError as exc:  # an answer that is not HTTP
        raise httpx2.RemoteProtocolError(str(exc)) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx2.UnsupportedProtocol(str(exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:  # lost after the request may have been sent
        raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc


class AnswerTooLarge(Exception):
    """An answer longer than the caller's limit: not read further (the connection is closed)."""


async def read_bounded(chunks: AsyncIterable[bytes], declared: int | None, limit: int) -> bytes:
    """A body read whole, refused (AnswerTooLarge) as soon as it is declared or found longer
    than `limit`, so a huge answer cannot exhaust memory."""
    if declared is not None and declared > limit:
        raise AnswerTooLarge
    read: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge
        read.append(chunk)
    return read[0] if len(read) == 1 else b"".join(read)


@dataclass
class Exchanged:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    encoded: bool  # a Content-Encoding other than identity: the body is still compressed


def _timeouts(timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx2's per-phase timeouts (a request's `timeout` extension) as aiohttp's."""
    connect, pool = timeout.get("connect"), timeout.get("pool")
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if connect is None else connect + (pool or 0),
        sock_connect=connect,
        sock_read=timeout.get("read"),
    )


class _Body(httpx2.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # Read to the end: the connection goes back to the pool; else it is closed, not reused.
        self._response.release()


async def _stream_of(request: httpx2.Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream:  # type: ignore[union-attr]
        yield chunk


class AiohttpTransport(httpx2.AsyncBaseTransport):
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
            # httpx2 has set every header it sends; aiohttp adds none of its own.
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

    async def _request(
        self, method: str, url: str, headers: Any, data: Any, timeouts: dict[str, float | None]
    ) -> aiohttp.ClientResponse:
        """The call, up to its answer's status and headers (errors still aiohttp's)."""
        if self._session is None:
            self._session = self._open()
        return await self._session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=_timeouts(timeouts),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() != "transfer-encoding"  # aiohttp frames a streamed body itself
        )
        data: Any
        try:
            data = request.content or None
        except httpx2.RequestNotRead:
            data = _stream_of(request)
        timeouts = request.extensions.get("timeout", {})
        with _mapped():
            response = await self._request(
                request.method, str(request.url), headers, data, timeouts
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx2.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        timeouts: dict[str, float | None],
        max_bytes: int,
    ) -> Exchanged:
        """One call whose body is bytes, its answer read whole (at most `max_bytes`, else
        AnswerTooLarge): the sender's usual call, made without the httpx2 request and response
        objects (and the stream around the answer) that `handle_async_request` builds and the
        sender would take apart again: about a tenth of a pass-through generation's CPU.
        Errors and timeouts are the same as there; the answer's bytes are as sent (a
        compressed one is still compressed: `Exchanged.encoded`)."""
        with _mapped():
            response = await self._request(method, url, headers, body, timeouts)
            try:
                answer = await read_bounded(
                    response.content.iter_any(), response.content_length, max_bytes
                )
            finally:
                # Read to the end: back to the pool; cut short (too large): closed.
                response.release()
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        return Exchanged(
            response.status,
            list(response.raw_headers),
            answer,
            encoded=encoding not in ("", "identity"),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

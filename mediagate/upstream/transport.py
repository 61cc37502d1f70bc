"""The upstream sender's network, as one small interface of its own: a call answered whole
(`Transport.exchange`) or as a stream (`Transport.open`), and the answer its callers get
(`UpstreamResponse`).

Two implementations, and the sender has one path through either: `AiohttpTransport`
(mediagate.upstream.aiohttp_transport, production's default) and `HttpxTransport` here, an
adapter over any httpx2 transport (MEDIAGATE_UPSTREAM_TRANSPORT=httpx, and the transports tests
hand to `create_app`). What both guarantee, so the sender's rules read the same either way:

- the bytes as sent: no headers of their own beyond framing, no cookies, no redirects followed,
  no retries, and an answer's body as it came, never decoded (the sender asks for `identity`
  and refuses an answer with any other Content-Encoding, one rule for both: a 1 MiB gzip
  answer could decode to 256 MiB);
- errors as httpx2's exceptions, by phase (what mediagate.upstream.retry reads): only a failure
  to open a connection (or to get one from the pool in time) is `ConnectError`/`ConnectTimeout`;
  a read that waits too long is `ReadTimeout`; a connection lost after sending is
  `RemoteProtocolError`/`ReadError`;
- timeouts per phase from the call's `timeouts` (httpx2's `timeout` extension: connect, read
  per chunk, write, pool);
- a whole answer read by `read_whole`, the one read path of both: not read at all when it is
  in a Content-Encoding (`Encoded`, the connection closed), at most `max_bytes` long (else
  `AnswerTooLarge`, the connection closed), its bytes taken from the request's room for
  upstream answers (mediagate.upstream.room: by Content-Length before the first body byte, else
  as read; waiting for room leaves the body unread, so the upstream's socket stalls); a
  streamed one read as it arrives, its connection reused only if it was read to its end.
"""

from __future__ import annotations

import abc
import asyncio
import codecs
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import httpx2

from mediagate.errors import GatewayError, ServerOverloaded, UpstreamError, maybe_paid
from mediagate.upstream.room import Claim, NeverFits, NoRoom

RawHeaders = list[tuple[bytes, bytes]]
Timeouts = dict[str, float | None]  # httpx2's per-phase timeouts (its `timeout` extension)


class AnswerTooLarge(Exception):
    """An answer longer than the caller's limit: not read further (the connection is closed)."""


class Encoded(Exception):
    """An answer in a Content-Encoding (the sender asks for `identity` only): not read."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


def unheld(
    refused: AnswerTooLarge | NeverFits | NoRoom, who: str, limit: int, paid: bool
) -> GatewayError:
    """What an answer `read_whole` would not or could not hold becomes (`who` answered it; a
    paid call's may have been charged for, and then has no Retry-After: a retry could pay
    twice)."""
    error: GatewayError
    if isinstance(refused, NoRoom):
        error = ServerOverloaded(
            "The gateway holds as many upstream answers as it may "
            f"(MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES); the answer of {who} waited "
            f"{refused.wait_s:g} s for room and was not read.",
            headers={} if paid else {"retry-after": "1"},
        )
    elif isinstance(refused, NeverFits):
        # Refused at once, never waited for: it would wait for room its own request holds, or
        # that does not exist.
        own = f", and this request holds {refused.own} of them already" if refused.own else ""
        error = UpstreamError(
            f"The answer of {who} was more than the gateway can hold: upstream answers may "
            f"take {refused.limit} bytes together (MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES){own}.",
            code="upstream_response_too_large",
        )
    else:
        error = UpstreamError(
            f"The answer of {who} was more than {limit} bytes.",
            code="upstream_response_too_large",
        )
    return maybe_paid(error) if paid else error


async def read_whole(
    chunks: AsyncIterable[bytes],
    headers: RawHeaders,
    limit: int,
    claim: Claim | None = None,
) -> tuple[bytes, int]:
    """A body read whole: (its bytes, what it took of `claim`'s room). Refused unread when it is
    encoded (Encoded); refused (AnswerTooLarge) as soon as it is declared or found longer than
    `limit`; its bytes taken from `claim` before they are read when declared, as read
    otherwise (a wait for room leaves the body unread; NoRoom, NeverFits). What it took is
    given back if it fails."""
    encoding = encoded(headers)
    if encoding is not None:
        raise Encoded(encoding)
    length = _header(headers, b"content-length")
    declared = int(length) if length is not None and length.strip().isdigit() else None
    if declared is not None and declared > limit:
        raise AnswerTooLarge
    taken = 0
    try:
        if claim is not None and declared:
            await claim.take(declared)  # all or nothing, before a byte of the body
            taken = declared
        read: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge
            if claim is not None and size > taken:
                await claim.take(size - taken)
                taken = size
            read.append(chunk)
    except BaseException:
        if claim is not None:
            claim.give_back(taken)
        raise
    if claim is not None and taken > size:
        claim.give_back(taken - size)
        taken = size
    return (read[0] if len(read) == 1 else b"".join(read)), taken


@dataclass(slots=True)
class Call:
    """One upstream call as it goes on the wire. `body`: bytes, none, or a stream httpx2
    encoded (a multipart upload), sent as it is read; `headers` are all there is to send
    (the transport adds only the framing of `body`)."""

    method: str
    url: str
    headers: Mapping[str, str] | Sequence[tuple[str, str]]
    body: bytes | httpx2.AsyncByteStream | None
    timeouts: Timeouts


@dataclass(slots=True)
class Whole:
    """A call's answer read whole: its bytes as sent, and what they took of the room."""

    status: int
    headers: RawHeaders
    body: bytes
    held: int = 0


def _header(headers: RawHeaders, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def encoded(headers: RawHeaders) -> str | None:
    """The Content-Encoding a body is sent with, if it is not `identity` (the only one the
    sender asks for): what the sender refuses, undecoded."""
    encoding = _header(headers, b"content-encoding")
    if encoding is None or encoding.strip().lower() in (b"", b"identity"):
        return None
    return encoding.decode("latin-1").strip()[:40]


class UpstreamResponse:
    """An upstream answer, as the sender's callers get it: whole (`content`), or a stream
    (`aiter_bytes` as it comes, `aiter_raw` in chunks of a size) that its reader closes
    (`aclose`).
    Named as httpx2's response is, for the few things callers use of one."""

    __slots__ = (
        "_after",
        "_chunks",
        "_close",
        "_headers",
        "_raw",
        "claim",
        "content",
        "status_code",
    )

    def __init__(
        self,
        status_code: int,
        headers: RawHeaders,
        content: bytes = b"",
        *,
        chunks: AsyncIterator[bytes] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.status_code = status_code
        self._raw = headers
        self._headers: httpx2.Headers | None = None  # made when first asked for
        self.content = content
        self._chunks = chunks
        self._close = close
        # The room a stream's body takes if it is read whole (`read_whole`), set by the sender.
        self.claim: Claim | None = None
        self._after: Callable[[], None] | None = None  # run once closed (the sender's slot)

    @property
    def headers(self) -> httpx2.Headers:
        if self._headers is None:
            self._headers = httpx2.Headers(self._raw)
        return self._headers

    @property
    def reason_phrase(self) -> str:
        return httpx2.codes.get_reason_phrase(self.status_code)

    @property
    def text(self) -> str:
        """The (whole) body as text, in its charset or else UTF-8, undecodable bytes replaced."""
        charset = self.headers.get("content-type", "").partition("charset=")[2].split(";")[0]
        try:
            decoder = codecs.getincrementaldecoder(charset.strip(" '\"") or "utf-8")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")
        return decoder(errors="replace").decode(self.content, final=True)

    async def _raw_chunks(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            if self.content:
                yield self.content
            return
        async for chunk in self._chunks:
            if chunk:
                yield chunk

    async def aiter_raw(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """The body as sent, in chunks of `chunk_size` (the last one shorter) or as they come."""
        if chunk_size is None:
            async for chunk in self._raw_chunks():
                yield chunk
            return
        buffer = bytearray()
        async for chunk in self._raw_chunks():
            buffer += chunk
            whole = len(buffer) - len(buffer) % chunk_size
            for start in range(0, whole, chunk_size):
                yield bytes(buffer[start : start + chunk_size])
            del buffer[:whole]
        if buffer:
            yield bytes(buffer)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, as it comes (never encoded: the sender refuses a Content-Encoding)."""
        async for chunk in self._raw_chunks():
            yield chunk

    async def read_whole(self, max_bytes: int) -> bytes:
        """A streamed body read whole after all (an upstream that answered JSON to a streaming
        request), by the one read path: at most `max_bytes`, its bytes taken from the room."""
        body, _ = await read_whole(self._raw_chunks(), self._raw, max_bytes, self.claim)
        return body

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the answer is closed (the sender gives back the call's slot)."""
        self._after = callback

    async def aclose(self) -> None:
        close, self._close = self._close, None
        after, self._after = self._after, None
        try:
            if close is not None:
                await close()
        finally:
            if after is not None:
                after()


class Transport(abc.ABC):
    """The sender's network: both calls keep the guarantees above."""

    @abc.abstractmethod
    async def exchange(self, call: Call, max_bytes: int, claim: Claim | None = None) -> Whole:
        """The call, its answer read whole by `read_whole` (at most `max_bytes`, held under
        `claim`)."""

    @abc.abstractmethod
    async def open(self, call: Call) -> UpstreamResponse:
        """The call, up to its answer's status and headers; the body is the caller's to read
        and close."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connections kept."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


class Deferred(Transport):
    """A transport built when first needed rather than when the gateway opens: aiohttp's
    (~150-250 ms to import here, most of it building two default TLS contexts at import) is not
    on the path to a cold start's first answer, which asks nothing upstream. It is built in a
    worker thread, so the import does not stall the event loop: by `ready()`, which the gateway
    calls a moment after it starts serving, or else by the first call. Once built, its
    `exchange` and `open` are the built transport's own (bound on the instance): the sender
    calls them with no frame of this class between, as it would the transport itself."""

    def __init__(self, build: Callable[[], Transport]) -> None:
        self._build = build
        self._built: Transport | None = None
        self._building: asyncio.Future[Transport] | None = None

    async def ready(self) -> Transport:
        """The transport, built once (concurrent first calls wait for the same build)."""
        if self._built is not None:
            return self._built
        if self._building is None:
            self._building = asyncio.ensure_future(asyncio.to_thread(self._build))
        try:
            built = await asyncio.shield(self._building)
        except Exception:
            self._building = None  # a failed build is tried again by the next call
            raise
        if self._built is None:
            self._built = built
            self.exchange = built.exchange  # type: ignore[method-assign]
            self.open = built.open  # type: ignore[method-assign]
        return self._built

    async def exchange(self, call: Call, max_bytes: int, claim: Claim | None = None) -> Whole:
        return await (await self.ready()).exchange(call, max_bytes, claim)

    async def open(self, call: Call) -> UpstreamResponse:
        return await (await self.ready()).open(call)

    async def aclose(self) -> None:
        building, self._building = self._building, None
        if building is not None and not building.done():
            building.cancel()
            await asyncio.gather(building, return_exceptions=True)
        built, self._built = self._built, None
        if built is not None:
            del self.exchange, self.open  # the class's again: a later call builds anew
            await built.aclose()


async def raw_chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    # Its stream, not aiter_raw(): a test's response made whole (content=, json=) has been
    # read already, and its stream still holds the bytes as given.
    async for chunk in cast(AsyncIterable[bytes], response.stream):
        yield chunk


def streamed(response: httpx2.Response) -> UpstreamResponse:
    """An httpx2 response whose body is unread, as an UpstreamResponse."""
    return UpstreamResponse(
        response.status_code,
        response.headers.raw,
        chunks=raw_chunks(response),
        close=response.aclose,
    )


class HttpxTransport(Transport):
    """The interface over any httpx2 transport: httpx2's own pool, or a test's (a mock, a
    recorder). Straight to it: an httpx2 client's send would add an auth flow, a redirect
    loop, hooks and cookies, none of which an upstream call uses."""

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self._transport = transport

    @staticmethod
    def _request(call: Call) -> httpx2.Request:
        if call.body is None or isinstance(call.body, bytes):
            request = httpx2.Request(call.method, call.url, headers=call.headers, content=call.body)
        else:
            request = httpx2.Request(call.method, call.url, headers=call.headers, stream=call.body)
        request.extensions["timeout"] = call.timeouts
        return request

    async def exchange(self, call: Call, max_bytes: int, claim: Claim | None = None) -> Whole:
        response = await self._transport.handle_async_request(self._request(call))
        headers = response.headers.raw
        try:
            body, held = await read_whole(raw_chunks(response), headers, max_bytes, claim)
        finally:
            await response.aclose()
        return Whole(response.status_code, headers, body, held)

    async def open(self, call: Call) -> UpstreamResponse:
        return streamed(await self._transport.handle_async_request(self._request(call)))

    async def aclose(self) -> None:
        await self._transport.aclose()

"""Sending requests upstream: the one place that touches the upstream's network and keys.

Every call goes through `Upstream.send`: it picks a key from the group's pool (or uses the key
a video job is bound to), applies the route's timeouts, retries what `mediagate.upstream.retry`
allows, benches keys the upstream refuses, and reports to the route's circuit breaker. Every
transport failure and upstream error status becomes a `GatewayError` here (like httpx2's
`map_httpcore_exceptions`), with upstream keys scrubbed from whatever text is passed on.

Whether a call is paid work is the caller's word (`paid=`), never inferred from the method:
paid calls are gated by the breaker, retried only where no work can have been done, and a
failure after sending is marked with `mediagate.errors.maybe_paid` (the paid rule, defined there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx2

from mediagate import context, jsonio
from mediagate.catalog import Route
from mediagate.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    Scrubber,
    UpstreamError,
    UpstreamTimeout,
    maybe_paid,
)
from mediagate.imagedata import loads_lifting
from mediagate.observability import tracing
from mediagate.observability.metrics import Metrics
from mediagate.upstream.breaker import Breakers, Permit
from mediagate.upstream.dialects import UpstreamRequest
from mediagate.upstream.keyring import KeyRing, key_fingerprint
from mediagate.upstream.lanes import Lanes, Slot
from mediagate.upstream.retry import (
    CONNECT,
    GARBAGE,
    TIMEOUT,
    Retry,
    decide,
    failure_kind,
    retry_after_s,
)
from mediagate.upstream.room import AnswerRoom, Claim, NeverFits, NoRoom
from mediagate.upstream.transport import (
    AnswerTooLarge,
    Call,
    Encoded,
    RawHeaders,
    Timeouts,
    Transport,
    UpstreamResponse,
    encoded,
    unheld,
)

__all__ = ["KeyRing", "Upstream", "key_fingerprint", "map_status"]

log = logging.getLogger("mediagate")

_MAX_QUOTED = 500
_ERROR_BODY_BYTES = 64 * 1024  # of a streamed error answer, enough for its message
_URL_CACHE = 1024  # parsed upstream URLs kept
_SMALL_BODY = 2048  # a JSON body shorter than this is copied to its size (`_json_body`)
# What every upstream call carries besides its own headers (an httpx2 client's defaults, but
# no compression: a small compressed answer can decode to any size, so an answer encoded
# otherwise is refused, never decoded; and the gateway's own name).
_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "identity",
    "Connection": "keep-alive",
    "User-Agent": "mediagate",
}


def _upstream_message(
    response: UpstreamResponse, scrub: Scrubber
) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an upstream error body, whatever shape it has, each made fit
    for a client (`Scrubber.upstream`): keys and internal addresses gone, a code that is not a
    plain token or a param that is not a field name dropped."""
    message, code, param = _raw_message(response)
    return scrub.upstream(message), scrub.upstream_code(code, ""), scrub.upstream_param(param)


def _raw_message(response: UpstreamResponse) -> tuple[str, object, object]:
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:_MAX_QUOTED] or response.reason_phrase, None, None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)[:_MAX_QUOTED]
        return str(message)[:_MAX_QUOTED], error.get("code"), error.get("param")
    return str(error)[:_MAX_QUOTED], None, None


def map_status(response: UpstreamResponse, route: Route, scrub: Scrubber) -> GatewayError:
    status = response.status_code
    message, code, param = _upstream_message(response, scrub)
    where = f"upstream route {route.id}"
    if status in (401, 403):
        # Our key, not the client's: the client cannot fix it, the operator can.
        return UpstreamError(
            f"The {where} rejected the gateway's credentials for token group '{route.group}'.",
            code="upstream_auth_failed",
        )
    if status == 429:
        headers = (
            {"retry-after": response.headers["retry-after"]}
            if ("retry-after" in response.headers)
            else {}
        )
        return RateLimited(f"The {where} is rate limiting: {message}", headers=headers)
    if status in (408, 504):
        # The upstream (or a proxy in front of it) gave up waiting: the work may go on.
        return maybe_paid(UpstreamTimeout(f"The {where} timed out: {message}"))
    if status in (400, 413, 422):
        return InvalidRequest(
            f"The {where} rejected the request: {message}",
            code=code or "upstream_rejected",
            param=param,
        )
    return UpstreamError(f"The {where} failed with HTTP {status}: {message}")


_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def _complete(status: int, headers: RawHeaders, body: bytes) -> UpstreamResponse:
    """A complete response of a decoded body, without the headers that framed the one sent."""
    kept = [(name, value) for name, value in headers if name.lower() not in _FRAMING]
    return UpstreamResponse(status, kept, body)


class _Failure(Exception):
    """An attempt that got no usable answer: its kind (mediagate.upstream.retry) and the error."""

    def __init__(self, kind: str, error: GatewayError) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error


@dataclass(slots=True)
class UpstreamAnswer:
    response: UpstreamResponse  # whole (decoded, empty when parsed) or a stream to close
    key: str  # the upstream key that got this answer
    payload: Any = None  # the parsed JSON, when asked for
    held: int = 0  # bytes its body took of the room for upstream answers (mediagate.upstream.room)

    @property
    def key_fingerprint(self) -> str:
        """Names the key without being it: what a video job stores to stay bound to it."""
        return key_fingerprint(self.key)


class Upstream:
    def __init__(
        self,
        transport: Transport,
        base_url: str,
        keys: KeyRing,
        metrics: Metrics,
        scrub: Scrubber,
        timeout_s: float,
        *,
        connect_timeout_s: float = 10.0,
        max_bytes: int = 256 * 1024 * 1024,
        breakers: Breakers | None = None,
        rng: random.Random | None = None,
        tracer: tracing.Tracer | None = None,
        room: AnswerRoom | None = None,
        lanes: Lanes | None = None,
    ) -> None:
        self._transport = transport
        # The calls in flight per route, and the queue of a bounded one (upstream/lanes.py).
        self.lanes = lanes or Lanes(metrics)
        # What all requests together may hold of upstream answers (0: no bound).
        self.room = room or AnswerRoom(0, 0.0)
        self._base_url = base_url
        self.keys = keys
        self._metrics = metrics
        self._scrub = scrub
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_bytes = max_bytes
        self.breakers = breakers or Breakers()
        self._rng = rng or random.Random()  # jitter, not secrecy
        self._tracer = tracer or tracing.NoOpTracer()  # a span per attempt
        self._urls: dict[tuple[bool, str], str] = {}

    def _url(self, request: UpstreamRequest) -> str:
        """The call's URL, checked once per path (a route's few paths, a job's status path)."""
        cache_key = (request.root, request.path)
        url = self._urls.get(cache_key)
        if url is None:
            base = self._base_url
            if request.root:
                base = base.rstrip("/").removesuffix("/v1")
            url = str(httpx2.URL(base + request.path))
            if len(self._urls) >= _URL_CACHE:  # video ids are many: keep it bounded
                self._urls.clear()
            self._urls[cache_key] = url
        return url

    @staticmethod
    def _plain(request: UpstreamRequest) -> bool:
        """A JSON body or none, no query: headers and bytes are all it takes."""
        return request.parts is None and request.form is None and request.params is None

    @staticmethod
    def _headers(request: UpstreamRequest, key: str) -> dict[str, str]:
        headers = {**_HEADERS, **(request.headers or {})}
        headers["Authorization"] = f"Bearer {key}"
        if request.json is not None and Upstream._plain(request):
            headers["Content-Type"] = "application/json"
        return headers

    @staticmethod
    def _json_body(request: UpstreamRequest) -> bytes | None:
        # orjson: the same compact UTF-8 JSON as httpx2's, in a fraction of the time.
        if request.json is None:
            return None
        body = jsonio.dumps(request.json)
        # orjson writes into a buffer of at least 4 KiB and hands it over as it is: a body of
        # 200 bytes, held for the whole call (a generation's minutes), would hold 4 KiB. A small
        # one is copied to its size (measured: 4 KiB less RSS per call in flight).
        return bytes(memoryview(body)) if len(body) < _SMALL_BODY else body

    def _call(self, request: UpstreamRequest, key: str, timeouts: Timeouts) -> Call:
        """The call as it goes on the wire. Built here rather than by an httpx2 client, which
        re-parses and re-merges its base URL and headers for every call (and would keep
        cookies). The usual one (a JSON body or none) is headers and bytes; a form, an upload
        or a query is encoded by httpx2 (a multipart body stays a stream: sent as read)."""
        if self._plain(request):
            headers, body = self._headers(request, key), self._json_body(request)
            return Call(request.method, self._url(request), headers, body, timeouts)
        encoded = self._encoded(request, key)
        try:
            content: bytes | httpx2.AsyncByteStream | None = encoded.content or None
        except httpx2.RequestNotRead:  # a multipart body: its stream, read as it is sent
            content = cast(httpx2.AsyncByteStream, encoded.stream)
        url, fields = str(encoded.url), encoded.headers.multi_items()
        return Call(encoded.method, url, fields, content, timeouts)

    def _encoded(self, request: UpstreamRequest, key: str) -> httpx2.Request:
        """A form, an upload or a query, encoded by httpx2 (headers, URL and body)."""
        headers = self._headers(request, key)
        url = self._url(request)
        content: dict[str, Any] = {"params": request.params}
        if request.parts is not None:
            content["files"] = request.parts
        elif request.form is not None:
            # Each attempt reads the uploads through readers of its own.
            files = [(n, (f.filename, f.open(), f.content_type)) for n, f in request.files]
            content.update(data=request.form, files=files)
        elif request.json is not None:
            content["json"] = request.json
        return httpx2.Request(request.method, url, headers=headers, **content)

    def _total_s(self, route: Route, paid: bool) -> float:
        if paid:
            return route.timeouts.total or self._timeout_s
        return route.timeouts.status

    async def send(
        self,
        route: Route,
        request: UpstreamRequest,
        *,
        paid: bool,
        key: str | None = None,
        stream: bool = False,
        parse: bool = False,
        not_found: GatewayError | None = None,
        passthrough: frozenset[int] = frozenset(),
    ) -> UpstreamAnswer:
        """One call, tried as often as the route's policy allows: the sender's one interface.

        `paid`: new work the upstream charges for (a generation, a video create or remix),
        gated by the breaker and retried only where no work can have been done; a free call
        (a status poll, a list, a download, a delete) is retried more freely. `key` binds the
        call to one upstream key (a video job's); otherwise keys come from the group's pool.
        `parse`: the answer's JSON is in `payload`. A successful status (or one in
        `passthrough`) is returned; any other becomes a mapped GatewayError, a 404 `not_found`
        when given. A streamed response (`stream`) is the caller's to close."""
        permit: Permit | None = None
        if paid:
            permit = self.breakers.get(route.id, route.breaker).check()
        slot: Slot | None = None
        handed = False  # a stream's slot is given back when the stream is closed
        claim, own = self._claim()
        tried: list[str] = []
        # The route's attempts spent: a key the upstream refused (401/403) did nothing, so its
        # attempt is not one of them (docs/operations.md, "Key pools").
        attempt = 0
        # The most actionable refusal seen across this call's keys: a rate limit (wait and
        # retry) says more than a key the upstream refused (the operator's to fix). With it,
        # the key that gave it and the wait it asked for.
        throttled: GatewayError | None = None
        throttled_key, throttled_wait = "", None
        try:
            # The call's slot, before anything is sent (a wait only under a bound: never
            # inside an attempt's timeouts, so never retried as a connect timeout).
            slot = await self.lanes.enter(route, self._total_s(route, paid))
            if paid:
                await context.paid_send()  # e.g. the Idempotency-Key records the call went out
            while True:
                attempt += 1
                use = key or self.keys.next(route.group, avoid=tried)
                tried.append(use)
                try:
                    with tracing.upstream_attempt(
                        self._tracer, route.id, route.group, attempt, request.method, request.path
                    ) as span:
                        answer = await self._attempt(
                            route, request, use, paid, stream, parse, claim
                        )
                        span.answered(answer.response.status_code)
                except _Failure as failure:
                    retry = decide(
                        route.retry, attempt, paid=paid, failure=failure.kind, rng=self._rng
                    )
                    if retry is None:
                        if permit is not None:
                            permit.failure()
                        raise failure.error from None
                    await self._pause(route, retry)
                    continue
                status = answer.response.status_code
                if status < 400 or status in passthrough:
                    self.keys.succeeded(use)
                    if permit is not None:
                        permit.success()
                    if stream:
                        answer.response.on_close(slot.release)
                        handed = True
                    return answer
                claim.give_back(answer.held)  # an error's body is not held for the request
                error = await self._error(route, answer.response, stream, not_found)
                wait = retry_after_s(answer.response.headers)
                self.keys.failed(route.group, use, status, wait)
                refused = status in (401, 403)
                if refused:
                    attempt -= 1  # nothing was done: not one of the route's attempts
                    if use == throttled_key:
                        throttled = None  # that key is refused now: its rate limit is moot
                retry = decide(
                    route.retry,
                    attempt,
                    paid=paid,
                    status=status,
                    retry_after_s=wait,
                    other_key=key is None and self.keys.available(route.group, avoid=tried),
                    rng=self._rng,
                )
                if status == 429:
                    throttled, throttled_key, throttled_wait = error, use, wait
                if retry is None and refused and throttled is not None:
                    # No other key to try, but a rate-limited one is left: its retry, within
                    # the route's attempts, as if the refused key had not been asked.
                    retry = decide(
                        route.retry,
                        attempt,
                        paid=paid,
                        status=429,
                        retry_after_s=throttled_wait,
                        rng=self._rng,
                    )
                if retry is None:
                    if permit is not None and status >= 500:
                        permit.failure()
                    if status in (401, 403) and throttled is not None:
                        raise throttled
                    raise error
                await self._pause(route, retry)
        finally:
            if slot is not None and not handed:
                slot.release()
            if permit is not None:
                permit.release()  # nothing to report (a client error, a cancelled call)
            if own or claim.closed:
                claim.release()  # no request holds this answer (or its request has ended)

    def _claim(self) -> tuple[Claim, bool]:
        """The claim on the room this call's answer is held under: its request's (given back
        when the request ends, mediagate.context.finish), and whether the call gives it back
        itself (outside a request, or after its request ended: when the call returns)."""
        ctx = context.active()
        if ctx is None or ctx.ended:
            return self.room.claim(), True
        held = ctx.held
        if isinstance(held, Claim) and held.room is self.room:
            return held, False
        claim = self.room.claim()
        if held is None:
            ctx.held = claim
            return claim, False
        return claim, True

    async def _pause(self, route: Route, retry: Retry) -> None:
        self._metrics.upstream_retries.labels(route.id, route.group, retry.reason).inc()
        context.note_retry()
        tracing.event("retry", route=route.id, reason=retry.reason, delay_s=retry.delay_s)
        log.info(
            "retrying upstream call",
            extra={"fields": {"route": route.id, "reason": retry.reason, "delay_s": retry.delay_s}},
        )
        await asyncio.sleep(retry.delay_s)

    async def _attempt(
        self,
        route: Route,
        call: UpstreamRequest,
        key: str,
        paid: bool,
        stream: bool,
        parse: bool,
        claim: Claim,
    ) -> UpstreamAnswer:
        """Send once and wait for the status line (and, unless streaming, the whole body, at
        most max_bytes of it). One path whatever the transport: `exchange` for a whole answer,
        `open` for a stream (mediagate.upstream.transport)."""
        total = self._total_s(route, paid)
        connect = route.timeouts.connect or self._connect_timeout_s
        # httpx2's per-phase form (what httpx2.Timeout(...).as_dict() gives, without its
        # per-call Protocol isinstance check): the read timeout is per chunk; the whole call is
        # bounded by `total` below.
        read = max(total, self._total_s(route, True))
        # No pool timeout: the transport's pool has no limit (a bound's wait was taken before
        # the attempt, mediagate.upstream.lanes), so a connect timeout is only ever connecting.
        # A whole answer is read inside `total`, which a per-chunk read timeout (never shorter)
        # cannot beat: none then, so the transport keeps no read timer for the call's whole
        # wait, nor makes it anew for every chunk of a megabyte answer (aiohttp does). A
        # stream's chunks are read after `total` ends, each within `read`.
        timeouts: Timeouts = {
            "connect": connect,
            "read": read if stream else None,
            "write": read,
            "pool": None,
        }
        started = time.perf_counter()
        label = "error"
        try:
            async with asyncio.timeout(total):
                wire = self._call(call, key, timeouts)
                if stream:
                    response = await self._transport.open(wire)
                    label = str(response.status_code)
                    encoding = encoded(response.headers.raw)
                    if encoding is not None:
                        await response.aclose()
                        raise self._encoded_answer(route, encoding, paid)
                    response.claim = claim  # relayed as read; held only if read whole
                    return UpstreamAnswer(response, key)
                whole = await self._transport.exchange(wire, self._max_bytes, claim)
                label = str(whole.status)
                body = whole.body
        except Encoded as refused:
            raise self._encoded_answer(route, refused.encoding, paid) from None
        except AnswerTooLarge as refused:
            error = unheld(refused, f"route {route.id}", self._max_bytes, paid)
            raise _Failure(GARBAGE, error) from None
        except (NeverFits, NoRoom) as refused:
            raise unheld(refused, f"route {route.id}", self._max_bytes, paid) from None
        except (TimeoutError, httpx2.TimeoutException) as exc:
            kind = failure_kind(exc)
            label = "timeout" if kind == TIMEOUT else "error"
            raise self._transport_failure(route, kind, exc, paid, total) from None
        except httpx2.HTTPError as exc:
            raise self._transport_failure(route, failure_kind(exc), exc, paid, total) from None
        finally:
            self._metrics.upstream_call(route, label, time.perf_counter() - started)
        if parse and whole.status < 400:
            try:
                payload = self._json(route, whole.headers, body, paid)
            except _Failure:
                claim.give_back(whole.held)
                raise
            # Callers of a parsed answer use its payload, status and headers: the raw bytes
            # (megabytes of base64 for an image) go now rather than when the request ends.
            complete = _complete(whole.status, whole.headers, b"")
            return UpstreamAnswer(complete, key, payload, whole.held)
        return UpstreamAnswer(_complete(whole.status, whole.headers, body), key, held=whole.held)

    def _transport_failure(
        self, route: Route, kind: str, exc: BaseException, paid: bool, total: float
    ) -> _Failure:
        name = type(exc).__name__
        if kind == CONNECT:
            return _Failure(
                kind,
                UpstreamError(
                    f"Could not reach the upstream for route {route.id}: {name}.",
                    code="upstream_unreachable",
                ),
            )
        if kind == TIMEOUT:
            error: GatewayError = UpstreamTimeout(
                f"The upstream route {route.id} did not answer within {total:g} s."
            )
        else:
            error = UpstreamError(
                f"The connection to the upstream route {route.id} broke after the request was "
                f"sent ({name}).",
                code="upstream_connection_lost",
            )
        # It may still be working, and charging: a client retry could pay twice.
        return _Failure(kind, maybe_paid(error) if paid else error)

    def _encoded_answer(self, route: Route, encoding: str, paid: bool) -> _Failure:
        """An answer in a Content-Encoding the gateway did not ask for: refused, not decoded
        (a paid call's is maybe paid, like any unusable answer)."""
        error = UpstreamError(
            f"The upstream route {route.id} answered in a Content-Encoding the gateway did not "
            f"ask for ({self._scrub.upstream(encoding)!r}); it is not decoded.",
            code="bad_upstream_response",
        )
        return _Failure(GARBAGE, maybe_paid(error) if paid else error)

    def _json(self, route: Route, headers: RawHeaders, body: bytes, paid: bool) -> Any:
        try:
            # orjson, from the bytes; an image answer's megabytes of base64 are lifted out as
            # checked bytes rather than parsed into a str (mediagate.imagedata.loads_lifting).
            return loads_lifting(body)
        except ValueError:
            kind = httpx2.Headers(headers).get("content-type", "unknown content type")
            error = UpstreamError(
                f"The upstream route {route.id} answered with a body that is not JSON ({kind}).",
                code="bad_upstream_response",
            )
            raise _Failure(GARBAGE, maybe_paid(error) if paid else error) from None

    async def _error(
        self,
        route: Route,
        response: UpstreamResponse,
        stream: bool,
        not_found: GatewayError | None,
    ) -> GatewayError:
        if stream:
            try:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= _ERROR_BODY_BYTES:
                        break
            except httpx2.HTTPError:
                body = b""
            finally:
                await response.aclose()
            response = _complete(
                response.status_code, response.headers.raw, body[:_ERROR_BODY_BYTES]
            )
        if response.status_code == 404 and not_found is not None:
            return not_found
        return map_status(response, route, self._scrub)

    @asynccontextmanager
    async def stream(
        self, route: Route, request: UpstreamRequest, *, paid: bool
    ) -> AsyncIterator[UpstreamResponse]:
        """A streaming answer whose status is a success (errors are raised before any byte),
        closed when the block ends."""
        answer = await self.send(route, request, paid=paid, stream=True)
        try:
            yield answer.response
        finally:
            await answer.response.aclose()

"""Idempotency-Key on image generations, image edits and video creation: one request's answer,
kept for 24 hours, so a repeat never pays twice.

A request with the header claims the record (client key name, Idempotency-Key) with a
fingerprint of its method, path and body (for multipart, of its fields and the bytes of its
files). Then:

- no record: this request runs, holding a lease it renews while it works, so the claim of a
  replica that crashed expires and a repeat can take over;
- a finished record with the same fingerprint: its answer is replayed, with nothing sent
  upstream and nothing charged (`x-mediagate-idempotent-replay: true`);
- one still running: the repeat waits for it (bounded by MEDIAGATE_IDEMPOTENCY_WAIT_S, then
  409 with Retry-After, which the SDK retries);
- a different fingerprint: 409 `idempotency_key_reused`, never retried;
- one whose owner stopped (its lease lapsed) after its paid upstream call was sent, which the
  owner records just before sending: 409 `idempotency_outcome_unknown`, never retried and never
  run again (the upstream may have done, and charged for, the work); a takeover happens only
  when the owner stopped before sending.

What is kept as the final answer: successes, and every failure after which the upstream may
have done paid work (a timeout, a connection lost mid-call, an unusable answer: the paid rule of
`mediagate.errors`) or that no retry can change (`GatewayError.final`), so a retry cannot pay
twice. Failures that surely cost nothing are
not kept, and a request with the same key runs again: a request refused before anything was
sent (a 400, say, so a client may fix its request and keep its key), a 429, an unreachable or
failing upstream, an open breaker, a client that left before its answer.
A stream is kept as the events it sent, once it ran to its end (a client that leaves
mid-stream releases the key). Records live in the job store's backend, so every replica sees
them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mediagate import context
from mediagate.errors import (
    GatewayError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyOutcomeUnknown,
    InvalidRequest,
)
from mediagate.http.disconnect import cancel_on_disconnect
from mediagate.http.errors import error_response
from mediagate.http.headers import facts
from mediagate.stores.idempotency import Claim, Stored

if TYPE_CHECKING:
    from mediagate.gateway import Gateway

log = logging.getLogger("mediagate")

HEADER = "idempotency-key"
_MAX_KEY_CHARS = 255
_UNKEPT_HEADERS = frozenset({"content-length", "x-request-id", "date", "server"})


def json_digest(body: Any) -> str:
    """The same JSON, however its keys were ordered, gives the same digest."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


async def form_digest(form: FormData) -> str:
    """Fields in order, files by their bytes (read from the spooled copies, not from memory)."""

    def digest() -> str:
        total = hashlib.sha256()
        for name, value in form.multi_items():
            total.update(name.encode() + b"\0")
            if isinstance(value, str):
                total.update(b"text\0" + value.encode() + b"\0")
                continue
            part = hashlib.sha256()
            value.file.seek(0)
            while chunk := value.file.read(1024 * 1024):
                part.update(chunk)
            value.file.seek(0)
            total.update(b"file\0" + part.digest())
        return total.hexdigest()

    return await asyncio.to_thread(digest)


def video_digest(fields: Mapping[str, Any], data: bytes | None, image_url: str | None) -> str:
    reference = hashlib.sha256(data).hexdigest() if data is not None else image_url
    return json_digest({"fields": dict(fields), "reference": reference})


async def _nothing() -> None:
    return None


class Slot:
    """What the body of `async with idempotency(...)` sees: a replayed answer to send as it
    is, or the place to hand in its own answer (`keep`) so a repeat can be answered with it."""

    def __init__(self) -> None:
        self.replay: Response | None = None
        self.response: Response | None = None

    def keep(self, response: Response) -> Response:
        self.response = response
        return response


@asynccontextmanager
async def idempotency(
    request: Request,
    digest: Callable[[], Awaitable[str]],
    skipped: Callable[[], Awaitable[None]] = _nothing,
) -> AsyncIterator[Slot]:
    """The Idempotency-Key around the body of an `async with`: a repeat gets the first
    request's answer in `slot.replay`; otherwise the body runs as the key's first request and
    its answer (`slot.keep`, or a final error) is kept. A scope rather than a wrapper, so the
    work runs with no frame of this module under it. `skipped` runs when the work does not
    (to close an upload, say)."""
    slot = Slot()
    given = request.headers.get(HEADER)
    if given is None:
        yield slot
        return
    gw: Gateway = request.app.state.gateway
    try:
        if not given.strip() or len(given) > _MAX_KEY_CHARS:
            raise InvalidRequest(
                f"The Idempotency-Key header must be 1 to {_MAX_KEY_CHARS} characters.",
                param="Idempotency-Key",
            )
        owner = context.current().key_name or "anonymous"
        record = hashlib.sha256(f"{owner}\n{given}".encode()).hexdigest()
        signed = f"{request.method} {request.url.path}\n{await digest()}"
        fingerprint = hashlib.sha256(signed.encode()).hexdigest()
        claim, waited = await cancel_on_disconnect(request, _claim(gw, record, fingerprint))
        if claim.state == "done" and claim.stored is not None:
            gw.metrics.idempotency.labels("waited" if waited else "replayed").inc()
            slot.replay = _replay(gw, claim.stored)
        elif claim.state == "unknown":
            gw.metrics.idempotency.labels("unknown").inc()
            raise IdempotencyOutcomeUnknown(
                "A request with this Idempotency-Key was being served by a gateway replica that "
                "stopped after sending it upstream, so it may have been completed and charged. "
                "The gateway will not run it again: check whether it was served (GET /v1/videos, "
                "GET /v1/usage) and, if not, retry with a new Idempotency-Key.",
                param="Idempotency-Key",
                retryable=False,
            )
        elif claim.state == "mismatch":
            gw.metrics.idempotency.labels("conflict").inc()
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request. Use a new "
                "key for a new request.",
                param="Idempotency-Key",
                retryable=False,
            )
        elif claim.state != "owner" or claim.token is None:
            raise IdempotencyKeyInUse(
                "A request with this Idempotency-Key is still in progress; try again shortly.",
                headers={"retry-after": "1"},
            )
    except BaseException:
        await skipped()
        raise
    if slot.replay is not None or claim.token is None:
        await skipped()
        yield slot
        return
    gw.metrics.idempotency.labels("first").inc()
    token = claim.token

    async def sent() -> None:
        await gw.idempotency.mark_sent(record, token)

    context.current().before_paid_send = sent
    keeper = asyncio.create_task(_keep_lease(gw, record, token))
    handed_off = False
    kept = False
    try:
        try:
            yield slot
        except GatewayError as error:
            error.message = gw.scrub(error.message)
            if error.final:  # the upstream may have charged: a repeat must not pay again
                answer = error_response(error)
                kept = await _finish(gw, record, token, answer, bytes(answer.body))
            raise
        response = slot.response
        if isinstance(response, StreamingResponse):
            body = response.body_iterator
            response.body_iterator = _recording(gw, record, token, response, body, keeper)
            handed_off = True
        elif response is not None and 200 <= response.status_code < 300:
            kept = await _finish(gw, record, token, response, bytes(response.body))
    finally:
        if not handed_off:
            keeper.cancel()
            if not kept:
                await _release(gw, record, token)


async def _claim(gw: Gateway, record: str, fingerprint: str) -> tuple[Claim, bool]:
    """The claim, once no other request with the key is running (or the wait is over)."""
    settings = gw.settings
    deadline = time.monotonic() + settings.idempotency_wait_s
    pause = 0.05
    waited = False
    while True:
        claim = await gw.idempotency.claim(
            record, fingerprint, settings.idempotency_lease_s, settings.idempotency_ttl_s
        )
        left = deadline - time.monotonic()
        if claim.state != "running" or left <= 0:
            return claim, waited
        waited = True
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 1.5, 1.0)


def _replay(gw: Gateway, stored: Stored) -> Response:
    ctx = context.current()
    route = gw.catalog.routes.get(stored.route or "")
    if route is not None and stored.model is not None:
        ctx.served_by(stored.model, route)
    ctx.replayed = True  # x-mediagate-idempotent-replay (mediagate.http.headers)
    return Response(stored.body, status_code=stored.status, headers=dict(stored.headers))


async def _keep_lease(gw: Gateway, record: str, token: str) -> None:
    lease_s = gw.settings.idempotency_lease_s
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            if not await gw.idempotency.renew(record, token, lease_s):
                log.warning("idempotency claim lost while the request ran")
                return
        except GatewayError as exc:
            log.warning("renewing an idempotency claim failed: %s", exc.message)


async def _recording(
    gw: Gateway,
    record: str,
    token: str,
    response: StreamingResponse,
    body: AsyncIterable[Any],
    keeper: asyncio.Task[None],
) -> AsyncIterator[Any]:
    """The stream as it goes to the client, kept once it ran to its end."""
    cap = gw.settings.idempotency_max_body_bytes
    chunks: list[bytes] = []
    size = 0
    complete = False
    try:
        async for chunk in body:
            data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
            size += len(data)
            if size <= cap:
                chunks.append(data)
            yield chunk
        complete = True
    finally:
        # Shielded: a client that left cancels the stream, but the key must still be settled.
        with anyio.CancelScope(shield=True):
            keeper.cancel()
            kept = complete and await _finish(gw, record, token, response, b"".join(chunks), size)
            if not kept:
                await _release(gw, record, token)


async def _finish(
    gw: Gateway,
    record: str,
    token: str,
    response: Response,
    body: bytes,
    size: int | None = None,
) -> bool:
    """Keep the answer; False if it could not be kept (the claim is then released)."""
    size = len(body) if size is None else size
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _UNKEPT_HEADERS]
    # What the first answer said it did (route, alias, dropped, retries...) is replayed with it.
    reported = facts(context.current())
    headers = [(k, v) for k, v in headers if k.lower() not in reported] + list(reported.items())
    if size > gw.settings.idempotency_max_body_bytes:
        # Paid for, but too large to keep: a repeat gets this, never a second charge.
        error = IdempotencyKeyInUse(
            f"The first request with this Idempotency-Key succeeded, but its answer ({size} "
            "bytes) was too large to keep for a repeat. Ask for response_format=url to get "
            "answers that can be replayed.",
            code="idempotency_answer_not_kept",
            retryable=False,
        )
        answer = error_response(error)
        headers, body = list(answer.headers.items()), bytes(answer.body)
        headers = [(k, v) for k, v in headers if k.lower() not in _UNKEPT_HEADERS]
        status = error.status
    else:
        status = response.status_code
    ctx = context.current()
    stored = Stored(
        status=status,
        headers=headers,
        body=body,
        route=ctx.route.id if ctx.route is not None else None,
        model=ctx.model,
    )
    try:
        await gw.idempotency.finish(record, token, stored, gw.settings.idempotency_ttl_s)
    except GatewayError as exc:
        log.error("keeping an idempotent answer failed: %s", exc.message)
        return False
    return True


async def _release(gw: Gateway, record: str, token: str) -> None:
    try:
        await gw.idempotency.release(record, token)
    except GatewayError as exc:
        # The claim then lapses with its lease.
        log.warning("releasing an idempotency claim failed: %s", exc.message)

"""Server-sent image events, on every route: the events themselves, no decisions.

Routes whose upstream streams have their events relayed as they arrive, one whole event at a
time (never the whole stream). For the others the gateway emulates the official stream: SSE
comments as keep-alives while the route works, so a proxy with an idle limit (a 100-second
load balancer, say) does not cut a two-minute generation, then one completed event per image.
Either way an upstream failure mid-stream becomes an `error` event, which the SDK raises, and
`settle` is told once what was delivered. Which route serves, and what that costs, is the
image service's (mediagate.images.service).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx2

from mediagate import jsonio
from mediagate.accounting.pricing import sum_usage
from mediagate.errors import GatewayError, UpstreamError, maybe_paid
from mediagate.imagedata import (
    FORMATS,
    InvalidImageData,
    LiftedB64,
    checked_image,
    image_head,
    image_size,
    invalid_image,
    loads_lifting,
    sniff_output_type,
)
from mediagate.images.plan import ImageJob, ImagesResult
from mediagate.upstream.room import NeverFits, NoRoom
from mediagate.upstream.transport import AnswerTooLarge, UpstreamResponse, unheld

log = logging.getLogger("mediagate")

# Called once a stream knows what it delivered: (images, upstream usage or None).
Settle = Callable[[int, dict[str, Any] | None], Awaitable[None]]

KEEPALIVE = b": keep-alive\n\n"


def sse(event: str, data: dict[str, Any]) -> bytes:
    # orjson: an image's base64 is spliced in as the bytes it came as (LiftedB64), not a str.
    return b"event: " + event.encode() + b"\ndata: " + jsonio.dumps(data) + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    body = error.body()
    return sse("error", {"type": "error", **body})


def completed_events(job: ImageJob, result: ImagesResult) -> list[bytes]:
    """The official completed event for each image of a finished (non-streaming) result."""
    kind = f"{'image_edit' if job.plan.spec.edit else 'image_generation'}.completed"
    created = int(time.time())
    events = []
    items = result.body["data"]
    for index, item in enumerate(items):
        b64 = item["b64_json"]
        head = image_head(b64)
        event: dict[str, Any] = {
            "type": kind,
            "b64_json": b64,
            "created_at": created,
            # As the plain answer says them (ImageService._merged): the upstream's, else the
            # image's own.
            "size": result.body.get("size") or image_size(head) or "auto",
            "quality": result.body.get("quality") or job.plan.spec.params.get("quality", "auto"),
            "background": result.body.get("background")
            or job.plan.spec.params.get("background", "auto"),
            "output_format": FORMATS.get(sniff_output_type(head) or "", "png"),
        }
        # The official events always carry usage (ImageGenCompletedEvent requires it): the
        # whole request's on the last event, zero on the others, so the events sum to it. A
        # route billed per call reports none upstream: zero tokens, truthfully.
        last = index == len(items) - 1
        usage = result.body.get("usage") if last else None
        event["usage"] = usage if isinstance(usage, dict) else _zero_usage()
        events.append(sse(kind, event))
    return events


def _zero_usage() -> dict[str, Any]:
    return {
        "total_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
    }


async def emulate(
    job: ImageJob, work: Awaitable[ImagesResult], keepalive_s: float, settle: Settle
) -> AsyncIterator[bytes]:
    """The events of `work` (the whole request, run as a non-streaming one)."""
    task = asyncio.ensure_future(work)
    try:
        # A first byte at once, so the client and any proxy see the stream has started.
        yield KEEPALIVE
        while not task.done():
            await asyncio.wait({task}, timeout=keepalive_s)
            if not task.done():
                yield KEEPALIVE
        try:
            result = task.result()
        except GatewayError as exc:
            await settle(0, None)
            yield error_event(exc)
            return
        except Exception as exc:
            log.error("stream failed: %s", type(exc).__name__)
            await settle(0, None)
            yield error_event(GatewayError("The gateway hit an internal error."))
            return
        await settle(result.count, result.body.get("usage"))
        for event in completed_events(job, result):
            yield event
    finally:
        # The client went away (or we are done): stop paying for work nobody will receive.
        task.cancel()


class EventParser:
    """Splits a byte stream into whole server-sent events, incrementally.

    Lines end in CRLF, LF or a bare CR (the SSE spec's rule), wherever the stream's chunks
    happen to split them: a CR that ends one chunk and an LF that starts the next are one line
    end, not two. Each byte is scanned once (an offset remembers how far a partial line was
    searched), so a multi-megabyte event costs linear time. An event comes out with its lines
    joined by LF and ending in a blank line: what any SSE client reads the same way.
    """

    _EOL = re.compile(rb"[\r\n]")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no line end
        self._lines: list[bytes] = []  # the current event's lines so far
        self._after_cr = False  # the last line ended in a CR: an LF next belongs to it

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by `chunk`."""
        if not chunk:
            return []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = False
        buffer = self._buffer
        buffer += chunk
        events: list[bytes] = []
        start = 0
        while True:
            match = self._EOL.search(buffer, max(start, self._scanned))
            if match is None:
                break
            end = match.start()
            line = bytes(buffer[start:end])
            start = end + 1
            if buffer[end] == 0x0D:  # CR: an LF right after it is part of the same line end
                if start < len(buffer):
                    if buffer[start] == 0x0A:
                        start += 1
                else:
                    self._after_cr = True
            if line:
                self._lines.append(line)
            elif self._lines:
                events.append(b"\n".join(self._lines) + b"\n\n")
                self._lines = []
        del buffer[:start]
        self._scanned = len(buffer)
        return events

    @property
    def pending(self) -> bool:
        """Bytes of an event that has not ended yet."""
        return bool(self._buffer or self._lines)


def _event_fields(event: bytes) -> tuple[str | None, bytes]:
    """An event's `event:` field (None without one) and its data (its data lines joined)."""
    name: str | None = None
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            lines.append(line[5:])
        elif name is None and line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, b"\n".join(lines)


def _event_json(data: bytes) -> dict[str, Any] | None:
    """An event's data as JSON, if it is a JSON object; its image lifted out as checked bytes
    (mediagate.imagedata.loads_lifting), never parsed into a str."""
    try:
        parsed = loads_lifting(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _event_type(name: str | None, data: dict[str, Any] | None) -> str:
    """An event's name: its `event:` field, else its data's `type`."""
    if name is not None:
        return name
    kind = data.get("type") if data is not None else None
    return kind if isinstance(kind, str) else ""


def _invalid_image(b64: Any) -> GatewayError | None:
    """Why a relayed event's image is not one (None: it is standard base64 of a known image
    format). The upstream made it, and may have charged: maybe paid."""
    if not isinstance(b64, str | LiftedB64):
        return maybe_paid(invalid_image(InvalidImageData("no b64_json")))
    try:
        checked_image(b64)
    except InvalidImageData as exc:
        return maybe_paid(invalid_image(exc))
    return None


def _add_usage(total: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A relayed stream's usage so far, with the next completed event's added (details and
    all: the bill reads them by token class)."""
    if usage is None:
        return total
    return sum_usage([total, usage] if total is not None else [usage])


def _has_image(kind: str) -> bool:
    return kind.endswith((".completed", ".partial_image"))


def is_event_stream(response: UpstreamResponse) -> bool:
    """Whether an answer to a streaming request is a stream (some upstreams answer JSON)."""
    kind: str = response.headers.get("content-type", "")
    return kind.split(";", 1)[0].strip().lower() == "text/event-stream"


async def read_json(response: UpstreamResponse, max_bytes: int) -> Any:
    """A JSON answer to a streaming request, read whole (at most `max_bytes`): the upstream
    made, and charged for, what it describes, so an unusable one may have been paid. Read as
    the sender's whole answers are, its bytes held in the room for upstream answers."""
    try:
        return loads_lifting(await response.read_whole(max_bytes))
    except (AnswerTooLarge, NeverFits, NoRoom) as refused:
        raise unheld(refused, "the upstream", max_bytes, paid=True) from None
    except httpx2.HTTPError as exc:
        error = UpstreamError(
            f"The upstream answer broke off: {type(exc).__name__}.",
            code="upstream_connection_lost",
        )
        raise maybe_paid(error) from None
    except ValueError:
        kind = response.headers.get("content-type", "unknown content type")
        error = UpstreamError(
            f"The upstream answered a stream with a body that is not JSON ({kind}).",
            code="bad_upstream_response",
        )
        raise maybe_paid(error) from None


async def relay(
    response: UpstreamResponse,
    exits: AsyncExitStack,
    settle: Settle,
    on_image: Callable[[str | LiftedB64], None] | None = None,
) -> AsyncIterator[bytes]:
    """The upstream's events, whole, as they arrive; each completed image's base64 handed to
    `on_image` too (the kept outputs)."""
    parser = EventParser()
    completed = 0
    usage: dict[str, Any] | None = None
    try:
        try:
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    name, raw = _event_fields(event)
                    data = _event_json(raw) if name is None or _has_image(name) else None
                    kind = _event_type(name, data)
                    if _has_image(kind):
                        # An image is checked before it is relayed, and billed.
                        data = data or {}
                        invalid = _invalid_image(data.get("b64_json"))
                        if invalid is not None:
                            yield error_event(invalid)
                            return
                        if kind.endswith(".completed"):
                            completed += 1
                            b64 = data.get("b64_json")
                            if on_image is not None and isinstance(b64, (str, LiftedB64)):
                                on_image(b64)
                            found = data.get("usage")
                            usage = _add_usage(usage, found if isinstance(found, dict) else None)
                    yield event
        except httpx2.HTTPError as exc:
            yield error_event(
                UpstreamError(f"The upstream stream broke off: {type(exc).__name__}.")
            )
            return
        if parser.pending or not completed:
            yield error_event(UpstreamError("The upstream stream ended before the image was done."))
            return
    finally:
        # Whatever was delivered was made, and paid for upstream: it is charged. The charge is
        # decided before the first await, so a cancelled stream (its client hung up) still
        # books it; the upstream response is closed however the settle ends.
        try:
            await settle(completed, usage)
        finally:
            await exits.aclose()

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
import base64
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx

from mediagate.accounting.pricing import sum_usage
from mediagate.errors import GatewayError, UpstreamError
from mediagate.imagedata import sniff_image_type
from mediagate.images.plan import ImageJob, ImagesResult

log = logging.getLogger("mediagate")

# Called once a stream knows what it delivered: (images, upstream usage or None).
Settle = Callable[[int, dict[str, Any] | None], Awaitable[None]]

KEEPALIVE = b": keep-alive\n\n"
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def error_event(error: GatewayError) -> bytes:
    body = error.body()
    return sse("error", {"type": "error", **body})


def _png_size(head: bytes) -> str | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return f"{width}x{height}"
    return None


def completed_events(job: ImageJob, result: ImagesResult) -> list[bytes]:
    """The official completed event for each image of a finished (non-streaming) result."""
    kind = f"{'image_edit' if job.plan.edit else 'image_generation'}.completed"
    created = int(time.time())
    events = []
    items = result.body["data"]
    for index, item in enumerate(items):
        b64 = item["b64_json"]
        head = base64.b64decode(b64[:32])  # enough for the PNG header
        event: dict[str, Any] = {
            "type": kind,
            "b64_json": b64,
            "created_at": created,
            "size": result.body.get("size") or _png_size(head) or "auto",
            "quality": result.body.get("quality") or job.plan.params.get("quality", "auto"),
            "background": result.body.get("background")
            or job.plan.params.get("background", "auto"),
            "output_format": _FORMATS.get(sniff_image_type(head) or "", "png"),
        }
        if index == len(items) - 1 and "usage" in result.body:
            event["usage"] = result.body["usage"]  # the usage of the whole request, once
        events.append(sse(kind, event))
    return events


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


def _completed_usage(event: bytes) -> dict[str, Any] | None:
    """The usage of a relayed completed event (its data line is JSON), if it has one."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                usage = json.loads(line[5:]).get("usage")
            except (ValueError, AttributeError):
                return None
            return usage if isinstance(usage, dict) else None
    return None


def _add_usage(total: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A relayed stream's usage so far, with the next completed event's added (details and
    all: the bill reads them by token class)."""
    if usage is None:
        return total
    return sum_usage([total, usage] if total is not None else [usage])


async def relay(
    response: httpx.Response, exits: AsyncExitStack, settle: Settle
) -> AsyncIterator[bytes]:
    """The upstream's events, whole, as they arrive."""
    buffer = b""
    completed = 0
    usage: dict[str, Any] | None = None
    try:
        try:
            async for chunk in response.aiter_bytes():
                buffer += chunk.replace(b"\r\n", b"\n")
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    if not event.strip():
                        continue
                    if b".completed" in event.split(b"\n", 1)[0]:
                        completed += 1
                        usage = _add_usage(usage, _completed_usage(event))
                    yield event + b"\n\n"
        except httpx.HTTPError as exc:
            yield error_event(
                UpstreamError(f"The upstream stream broke off: {type(exc).__name__}.")
            )
            return
        if buffer.strip() or not completed:
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

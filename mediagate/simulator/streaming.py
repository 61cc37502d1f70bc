"""Server-sent events for `stream: true` on the routes that speak the official Images API.

For each of the n images: `partial_images` partial events (smaller renders of the same image,
each twice the side of the one before), then the completed event with the full image and its
usage. Events are spaced out in time so a client can observe them arriving one at a time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from mediagate.simulator.png import make_png
from mediagate.simulator.rules import ConnectionCut, ImageJob, bad_b64, image_usage


class _QuietCuts(logging.Filter):
    """Keeps uvicorn from logging a planted `[sim:cut]` as an application crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, ConnectionCut)


QUIET_CUTS = _QuietCuts()


def event_prefix(job: ImageJob) -> str:
    return "image_edit" if job.edit else "image_generation"


async def image_events(
    job: ImageJob, *, gap_s: float, cut: bool = False, line_end: str = "lf"
) -> AsyncIterator[bytes]:
    """The SSE body; with `cut`, raises ConnectionCut after the first event. `line_end` "crlf"
    ends lines in CRLF with every CR at the end of one chunk and its LF starting the next;
    "cr" ends them in bare CRs.

    Raising inside a StreamingResponse body makes the server drop the connection without the
    terminating chunk, so the client sees a truncated stream rather than a clean end.
    """
    prefix = event_prefix(job)
    pause = gap_s / (job.partial_images + 1)
    for index in range(job.n):
        seed = job.seed(index)
        for partial in range(job.partial_images):
            await asyncio.sleep(pause)
            # Partial k of p is the final size halved p - k times: a coarser draft of the same
            # picture (same colour, same aspect: the sizes are multiples of 16).
            shift = job.partial_images - partial
            width, height = max(1, job.width >> shift), max(1, job.height >> shift)
            png = await asyncio.to_thread(make_png, width, height, seed, job.model)
            fields = _common_fields(job, png) | {"partial_image_index": partial}
            async for piece in _framed(_event(f"{prefix}.partial_image", fields), line_end):
                yield piece
            if cut:
                await _cut(pause)
        await asyncio.sleep(pause)
        png = await asyncio.to_thread(make_png, job.width, job.height, seed, job.model)
        # Each completed event bills its own image, so the events sum to the whole request's
        # output tokens (the prompt and input images are counted in every event).
        fields = _common_fields(job, png) | {"usage": image_usage(job, images=1)}
        junk = bad_b64(job.prompt)
        if junk is not None:
            fields["b64_json"] = junk
        async for piece in _framed(_event(f"{prefix}.completed", fields), line_end):
            yield piece
        if cut:
            await _cut(pause)


async def _framed(event: bytes, line_end: str) -> AsyncIterator[bytes]:
    if line_end == "cr":
        yield event.replace(b"\n", b"\r")
        return
    if line_end != "crlf":
        yield event
        return
    lines = event.split(b"\n")
    for index, line in enumerate(lines[:-1]):
        # "...\r" | "\n..." : a short pause so the two halves leave in separate chunks.
        yield (b"\n" if index else b"") + line + b"\r"
        await asyncio.sleep(0.005)
    yield b"\n"


async def _cut(pause: float) -> None:
    # Give the first event time to leave the server, so the client sees it before the drop.
    await asyncio.sleep(max(pause, 0.01))
    raise ConnectionCut("simulated connection cut mid-stream")


def _common_fields(job: ImageJob, png: bytes) -> dict[str, Any]:
    return {
        # Always standard padded base64: only the official-API routes stream.
        "b64_json": base64.b64encode(png).decode("ascii"),
        "created_at": int(time.time()),
        "size": job.size,
        "quality": job.quality,
        "background": job.background,
        "output_format": job.output_format,
    }


def _event(kind: str, fields: dict[str, Any]) -> bytes:
    data = json.dumps({"type": kind, **fields}, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()

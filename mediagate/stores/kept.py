"""Kept outputs (MEDIAGATE_KEEP_OUTPUTS): the images and videos the gateway answered, kept in
the hosted-object store's "outputs" folder and recorded in the `outputs` table, so the
console's gallery shows them and a video outlives its upstream link.

The use cases decide what to keep (mediagate.images.service after an answer,
mediagate.videos.service when a job completes); this module only keeps it, in a background
task of its own: a client's answer never waits on it, and a store or database that fails is a
log line and `mediagate_outputs_total{outcome="failed"}`, never the client's error. A video is
streamed to the store, never whole in memory, and capped at MEDIAGATE_KEEP_OUTPUTS_MAX_BYTES.

Retention (`sweep`): rows and objects older than MEDIAGATE_KEEP_OUTPUTS_DAYS go, then the
oldest while the total is past MEDIAGATE_KEEP_OUTPUTS_MAX_BYTES.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from mediagate.observability.metrics import Metrics
from mediagate.stores.hosted import HostedImages
from mediagate.stores.sql import outputs
from mediagate.stores.sql.db import Database

log = logging.getLogger(__name__)

_SWEEP_BATCH = 500

# The columns a use case fills in (the keeper adds kind, object, type, bytes and the time).
Row = dict[str, Any]


@dataclass
class Keeper:
    store: HostedImages  # the hosted-object store's "outputs" folder
    database: Database
    metrics: Metrics
    days: float
    max_bytes: int
    clock: Callable[[], float] = time.time
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    # --- in the background -------------------------------------------------------------------

    def soon(self, work: Coroutine[Any, Any, None]) -> None:
        """`work` in a task of its own (kept referenced until done); drained at shutdown."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Waits for the keeping under way (shutdown, and tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- keeping -----------------------------------------------------------------------------

    def image(self, make: Callable[[], Awaitable[tuple[bytes, str]]], row: Row) -> None:
        """One image kept in the background, its bytes and type from `make` (decoded, copied
        or fetched there); dated now, when it was answered."""
        self.soon(self._image(make, {**row, "created_at": self.clock()}))

    def video(self, chunks: AsyncIterator[bytes], row: Row) -> None:
        """A completed job's content kept in the background, streamed from `chunks`."""
        self.soon(self._video(chunks, {**row, "created_at": self.clock()}))

    async def _image(self, make: Callable[[], Awaitable[tuple[bytes, str]]], row: Row) -> None:
        try:
            data, content_type = await make()
            name = await self.store.put(data, content_type)
            await self._record("image", name, content_type, len(data), row)
        except Exception as exc:
            self._failed("image", exc)

    async def _video(self, chunks: AsyncIterator[bytes], row: Row) -> None:
        """Once per job: a job already kept is left alone, its `chunks` never started."""
        try:
            job_id = row.get("job_id")
            if job_id and await self.database.run(lambda tx: outputs.has_job(tx, job_id)):
                return
            name, size = await self.store.put_stream(chunks, "video/mp4", self.max_bytes)
            await self._record("video", name, "video/mp4", size, row)
        except Exception as exc:
            self._failed("video", exc)

    async def _record(self, kind: str, name: str, content_type: str, size: int, row: Row) -> None:
        values = {
            **row,
            "kind": kind,
            "object": name,
            "content_type": content_type,
            "bytes": size,
        }
        try:
            kept = await self.database.transaction(lambda tx: outputs.insert(tx, values))
        except BaseException:
            await self.store.delete(name)  # no row, no object
            raise
        if kept is None:
            await self.store.delete(name)  # another replica kept this job's content first
            return
        self.metrics.outputs.labels(kind, "kept").inc()

    def _failed(self, kind: str, exc: Exception) -> None:
        self.metrics.outputs.labels(kind, "failed").inc()
        log.warning(
            "keeping an output failed", extra={"fields": {"kind": kind, "error": repr(exc)}}
        )

    # --- retention ---------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Removes outputs older than the retention, then the oldest past the size cap; how
        many."""
        removed = 0
        cutoff = self.clock() - self.days * 86400
        while batch := await self.database.run(lambda tx: outputs.oldest(tx, cutoff, _SWEEP_BATCH)):
            removed += await self._remove(batch)
            if len(batch) < _SWEEP_BATCH:
                break
        total = await self.database.run(outputs.total_bytes)
        while total > self.max_bytes:
            batch = await self.database.run(lambda tx: outputs.oldest(tx, None, 50))
            if not batch:
                break
            over, chosen = total - self.max_bytes, []
            for row in batch:
                if over <= 0:
                    break
                chosen.append(row)
                over -= int(row["bytes"])
            removed += await self._remove(chosen)
            total -= sum(int(row["bytes"]) for row in chosen)
        return removed

    async def _remove(self, rows: list[dict[str, Any]]) -> int:
        ids = [int(row["id"]) for row in rows]
        # Rows first: a row is never left pointing at a missing object (an object left
        # without its row, if deleting it fails, is only space).
        await self.database.transaction(lambda tx: outputs.delete(tx, ids))
        for row in rows:
            try:
                await self.store.delete(row["object"])
            except Exception as exc:
                log.warning("removing a kept output failed: %s", type(exc).__name__)
            self.metrics.outputs.labels(row["kind"], "swept").inc()
        return len(rows)

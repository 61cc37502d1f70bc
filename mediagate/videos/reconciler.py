"""The reconciler: every job reaches its end and its bill, polled or not.

Every MEDIAGATE_RECONCILE_INTERVAL_S (the first round one interval after start), one replica
(the holder of the `reconciler` lease in the store; a dead holder's lease runs out after three
intervals and another replica takes it) refreshes every unfinished job from its upstream through
`VideoService.reconcile`: the same compare-and-set as a client's poll, so the job's final state,
its cost (0 if it failed) and the release of its reservation happen once, whoever gets there
first. Every replica reads the store's census into the job gauges each round, so they are
exact on each replica.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mediagate.errors import GatewayError
from mediagate.observability.metrics import Metrics
from mediagate.stores.jobs import STATUSES, JobStore, VideoJob
from mediagate.videos.service import VideoService

log = logging.getLogger("mediagate")

LEASE = "reconciler"
_BATCH = 500  # unfinished jobs per round, oldest first
_CONCURRENCY = 8  # upstream status calls at once


@dataclass
class Reconciler:
    videos: VideoService
    jobs: JobStore
    metrics: Metrics
    interval_s: float
    clock: Callable[[], float] = time.time
    holder: str = field(default_factory=lambda: secrets.token_hex(8))

    async def round(self) -> int:
        """One round: the gauges refreshed and, if this replica leads, every unfinished job
        refreshed. How many jobs it refreshed."""
        await self.refresh_gauges()
        if not await self.jobs.lease(LEASE, self.holder, 3 * self.interval_s):
            return 0
        jobs = await self.jobs.unfinished(_BATCH)
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(job: VideoJob) -> None:
            async with gate:
                # Renewed before each job, so a long round keeps its lease (one poller) and a
                # replica that lost it mid-round stops.
                if not await self.jobs.lease(LEASE, self.holder, 3 * self.interval_s):
                    return
                try:
                    await self.videos.reconcile(job)
                except GatewayError as exc:  # the upstream is down: the next round asks again
                    log.warning(
                        "reconciling a video failed",
                        extra={"fields": {"video_id": job.id, "error": exc.code}},
                    )

        await asyncio.gather(*(one(job) for job in jobs))
        if jobs:
            await self.refresh_gauges()
        return len(jobs)

    async def refresh_gauges(self) -> None:
        census = await self.jobs.census()
        for status in STATUSES:
            self.metrics.video_jobs.labels(status).set(census.by_status.get(status, 0))
        oldest = census.oldest_unfinished
        age = max(0.0, self.clock() - oldest) if oldest is not None else 0.0
        self.metrics.video_oldest_unfinished.set(age)

    async def run_forever(self) -> None:
        """The gauges read at once; the first round one interval after start, then one per
        interval. A job left unfinished by a restart waits at most one interval more, and a
        starting replica's first round never races the first requests it serves."""
        try:
            await self.refresh_gauges()
        except Exception as exc:  # the store is down: the rounds read them again
            log.warning("reading the video job census failed: %s", type(exc).__name__)
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.round()
            except Exception as exc:  # a failed round (the store is down) must not stop the next
                log.warning("reconciling video jobs failed: %s", type(exc).__name__)

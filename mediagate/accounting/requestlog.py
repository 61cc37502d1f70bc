"""The request log: one row per request in the records' database (`request_log`), and its
counts (`requests`, `errors`, `reads`) in `usage_rollups`, written off the request path.

The bookkeeping middleware (mediagate.http.middleware) hands every ended request's
`RequestContext` to `RequestLog.record`, which takes a tuple of its facts and appends it to a
bounded in-memory queue: no encoding, no I/O. A task of the log's own writes the queue in
batches (every MEDIAGATE_REQUEST_LOG_FLUSH_S, or as soon as 500 rows wait), each batch one
transaction (mediagate.stores.sql.requestlog.write_batch): rows inserted once by request id,
the rollups added for the rows actually inserted, rows whose settlement came first completed
from it. A successful read of a video job (retrieve, list, content) is not a row: it is counted
per key, team, model, route and hour, and added to the rollups' `reads` with the next batch; a
failed one is a row like any request.

While the database is unreachable the queue keeps at most MEDIAGATE_REQUEST_LOG_QUEUE rows (the
batch being retried included); a row past that is dropped and counted
(`mediagate_request_log_dropped_total`), and the batch is tried again, every flush interval,
until it is written. The gateway's lifespan closes the log on a graceful stop, which writes what
is queued. Rows older than MEDIAGATE_REQUEST_LOG_DAYS are swept now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from mediagate.context import RequestContext
from mediagate.errors import GatewayError, StoreUnavailable
from mediagate.observability import tracing
from mediagate.observability.metrics import Metrics
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.requestlog import RollupKey, buckets, sweep, write_batch

log = logging.getLogger("mediagate.requestlog")
T = TypeVar("T")

# Reads of video jobs: counted in the rollups, a row only when they fail.
READS = frozenset({"videos.retrieve", "videos.list", "videos.content"})
# Never logged: probes and the metrics scrape ("health"), and paths no route serves ("other":
# the access log line has them).
UNLOGGED = frozenset({"health", "other"})
# The admin API (`admin.*`: the platform team's reads and key changes) and the console's pages
# (`console.*`) are not the usage of a key: not logged, nor counted, unless they fail (a refused
# call is kept). Otherwise every read of the log would add rows to the log it reads.
ADMIN = ("admin.", "console.")
BATCH_ROWS = 500
SWEEP_EVERY_S = 3600.0
SWEEP_ROWS = 10000  # rows deleted per transaction
_FIRST_SWEEP_AFTER_S = 60.0
_MICRO = Decimal(1)


def micros(usd: float) -> int:
    """USD as integer micro-USD, rounded half-up."""
    return int((Decimal(repr(usd)) * 1_000_000).quantize(_MICRO, rounding=ROUND_HALF_UP))


class RequestLog:
    """The queue and its writer. `attach(database)` (at the gateway's start) gives it where to
    write; `start()` runs its writer; `close()` stops it and writes what is queued."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        capacity: int = 10000,
        flush_s: float = 0.5,
        days: float = 30.0,
        traced: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity = capacity
        self.flush_s = flush_s
        self.days = days
        self.traced = traced  # OTel tracing on: rows carry the trace id
        self.clock = clock
        self.dropped = metrics.request_log_dropped
        self.database: Database | None = None
        self._queue: deque[tuple[Any, ...]] = deque()
        self._batch: list[tuple[Any, ...]] = []  # encoded, being written (or retried)
        # Successful reads of jobs: (key, team, model, route, hour) -> count.
        self._reads: dict[tuple[str, str, str, str, int], int] = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._next_sweep = 0.0

    # --- The request path ----------------------------------------------------------------

    def record(self, ctx: RequestContext, status: int, latency_s: float, method: str) -> None:
        """The ended request's facts, queued (a read's, counted). A few attribute reads and
        one append: everything else happens in the writer."""
        endpoint = ctx.endpoint
        if endpoint in UNLOGGED or (status < 400 and endpoint.startswith(ADMIN)):
            return
        now = self.clock()
        route = ctx.route
        if status < 400 and endpoint in READS:
            read = (
                ctx.key_name or "",
                ctx.team or "",
                ctx.model or "",
                route.id if route is not None else "",
                int(now // 3600),
            )
            self._reads[read] = self._reads.get(read, 0) + 1
            return
        queue = self._queue
        if len(queue) + len(self._batch) >= self.capacity:
            self.dropped.inc()
            return
        error = ctx.error
        queue.append(
            (
                ctx.request_id,
                now,
                ctx.key_name,
                ctx.team,
                endpoint,
                method,
                ctx.model,
                ctx.alias,
                route,
                ctx.fallbacks,
                ctx.mapped,
                ctx.dropped,
                ctx.tier,
                ctx.quality,
                ctx.n,
                ctx.seconds,
                status,
                error.code if isinstance(error, GatewayError) else None,
                latency_s,
                ctx.upstream_seconds,
                ctx.cost,
                ctx.reserved,
                ctx.images,
                ctx.job_id,
                ctx.upstream_task_id,
                ctx.replayed,
                _trace_id() if self.traced else None,
                ctx.prompt,
                ctx.client_request_id,
                ctx.principal,
                ctx.batch_id,
                ctx.custom_id,
            )
        )
        if len(queue) >= BATCH_ROWS:
            self._wake.set()

    # --- The writer ----------------------------------------------------------------------

    def attach(self, database: Database) -> None:
        self.database = database
        self._next_sweep = self.clock() + _FIRST_SWEEP_AFTER_S

    def start(self) -> None:
        """The writer, in the running loop (until `close`)."""
        self._closed = False
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.create_task(self._write_forever())

    def blocking(self, work: Callable[[], Coroutine[Any, Any, T]], timeout_s: float = 30.0) -> T:
        """`work()` (e.g. `flush`, `sweep`) awaited in the writer's loop, from another thread
        (a test's): its result, or its exception."""
        assert self._loop is not None, "the request log's writer has not started"
        return asyncio.run_coroutine_threadsafe(work(), self._loop).result(timeout_s)

    async def _write_forever(self) -> None:
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            if self._closed:
                return
            try:
                await self.flush()
                if failing:
                    log.info("request log written again")
                failing = False
                if self.clock() >= self._next_sweep:
                    await self.sweep()
            except StoreUnavailable as exc:
                if not failing:  # once per outage; the drops are counted
                    log.warning(
                        "request log: the database is unreachable, rows wait in memory",
                        extra={"fields": {"queued": self.queued(), "error": str(exc)}},
                    )
                failing = True
            except Exception:  # never stop writing
                log.exception("request log: writing a batch failed")

    def queued(self) -> int:
        """Rows waiting to be written (the batch being written included)."""
        return len(self._queue) + len(self._batch)

    async def flush(self) -> int:
        """Write everything queued now, batch by batch; the rows inserted. Raises
        StoreUnavailable (keeping the rows, and the reads, for the next try) if the database
        fails.

        What was queued when it was called, not what keeps arriving meanwhile: under a steady
        stream of requests (polls, each a read counted while the last batch commits) a flush
        that took the newcomers too never ended, one fsync'd transaction after another instead
        of one every MEDIAGATE_REQUEST_LOG_FLUSH_S."""
        database = self.database
        if database is None:
            return 0
        written = 0
        async with self._flushing:
            left = len(self._queue)  # rows queued now (FIFO: the first `left` taken)
            take_reads = True  # the reads counted now, with the first batch
            while True:
                if not self._batch and left > 0:
                    queue = self._queue
                    take = min(len(queue), BATCH_ROWS)
                    self._batch = [_encode(queue.popleft()) for _ in range(take)]
                    left -= take
                reads: dict[tuple[str, str, str, str, int], int] = {}
                if take_reads:
                    reads, self._reads = self._reads, {}
                    take_reads = False
                if not self._batch and not reads:
                    return written
                rows, rollups = self._batch, _read_rollups(reads)
                # Shielded, its outcome settled when the transaction ends, not when this call
                # does: a flush cancelled mid-transaction must neither lose the batch nor
                # count its reads twice (rows cannot be: they are inserted once by id).
                task = asyncio.ensure_future(
                    database.transaction(functools.partial(write_batch, rows=rows, reads=rollups))
                )
                task.add_done_callback(functools.partial(self._written, rows, reads))
                written += len(await asyncio.shield(task))
                if self._batch is rows:  # (the callback has run by now; said again, plainly)
                    self._batch = []

    def _written(
        self,
        rows: list[tuple[Any, ...]],
        reads: dict[tuple[str, str, str, str, int], int],
        task: asyncio.Future[list[str]],
    ) -> None:
        """A batch's transaction ended: committed, its rows are done; failed, its reads wait
        for the next batch again (and its rows stay the batch to retry)."""
        if not task.cancelled() and task.exception() is None:
            if self._batch is rows:
                self._batch = []
            return
        for read, count in reads.items():
            self._reads[read] = self._reads.get(read, 0) + count

    async def sweep(self) -> int:
        """Rows older than the retention deleted; how many."""
        database = self.database
        if database is None:
            return 0
        before = self.clock() - self.days * 86400
        self._next_sweep = self.clock() + SWEEP_EVERY_S
        removed = 0
        while True:  # in bounded transactions: a first sweep of a long-kept log is big
            done = await database.transaction(
                functools.partial(sweep, before=before, limit=SWEEP_ROWS)
            )
            removed += done
            if done < SWEEP_ROWS:
                break
        if removed:
            log.info("request log: swept %d rows past retention", removed)
        return removed

    async def close(self) -> None:
        """Stop the writer and write what is queued (a graceful stop); what cannot be written
        is said in the log."""
        self._closed = True
        if self._writer is not None:
            self._wake.set()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.error(
                "request log: rows not written at shutdown",
                extra={"fields": {"rows": self.queued(), "error": str(exc)}},
            )


def _trace_id() -> str | None:
    ids = tracing.current_ids()
    return ids[0] if ids is not None else None


def _read_rollups(reads: dict[tuple[str, str, str, str, int], int]) -> dict[RollupKey, int]:
    rollups: dict[RollupKey, int] = {}
    for (key, team, model, route, hour), count in reads.items():
        hour_bucket, day_bucket = buckets(hour * 3600)
        for grain, bucket in (("hour", hour_bucket), ("day", day_bucket)):
            rollup = (grain, bucket, key, team, model, route)
            rollups[rollup] = rollups.get(rollup, 0) + count
    return rollups


def _json(value: list[Any] | None) -> str | None:
    return json.dumps(value, separators=(",", ":")) if value else None


def _encode(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    """A queued request's facts as the row's columns (mediagate.stores.sql.requestlog.COLUMNS)."""
    (
        request_id,
        at,
        key,
        team,
        endpoint,
        method,
        model,
        alias,
        route,
        fallbacks,
        mapped,
        dropped,
        tier,
        quality,
        n,
        seconds,
        status,
        error_code,
        latency_s,
        upstream_s,
        cost,
        reserved,
        images,
        job_id,
        task_id,
        replayed,
        trace_id,
        prompt,
        client_request_id,
        principal,
        batch_id,
        custom_id,
    ) = raw
    route_id = route.id if route is not None else None
    # Each route tried and how it went: the ones fallen back from, then the last one (when
    # anything was sent to it).
    tried = []
    for entry in fallbacks:
        tried_route, _, outcome = entry.partition("=")
        tried.append({"route": tried_route, "outcome": outcome})
    if route_id is not None and (status < 400 or upstream_s > 0 or tried):
        tried.append({"route": route_id, "outcome": "ok" if status < 400 else error_code})
    if cost is not None:
        cost_micros, cost_state = micros(cost), "booked"
    elif reserved is not None and job_id is not None and status < 400:
        cost_micros, cost_state = micros(reserved), "reserved"  # until the job settles
    else:
        cost_micros, cost_state = 0, "none"
    return (
        request_id,
        at,
        key or "",
        team or "",
        principal,  # the console's user, where one acted with the key
        endpoint,
        method,
        model,
        alias.name if alias is not None else None,
        route_id,
        _json(tried),
        route.group if route is not None else None,
        _json(mapped),
        _json(sorted(dropped)),
        tier,
        quality,
        n,
        seconds,
        status,
        error_code,
        round(latency_s * 1000, 3),
        round(upstream_s * 1000, 3),
        cost_micros,
        cost_state,
        images,
        0,  # video seconds: booked when the job settles
        job_id,
        task_id,
        batch_id,
        custom_id,
        1 if replayed else 0,
        trace_id,
        prompt,
        client_request_id,
    )

"""The batch runner: every replica runs one; together they run each line of each batch once.

Each round (every MEDIAGATE_BATCH_POLL_INTERVAL_S, or at once when a batch is created here):
1. The leases of this replica's lines in flight are renewed; lines whose holder stopped
   renewing (it died) are taken back: a `claimed` line (never sent) is pending again; a `sent`
   line (sent, its answer never recorded) is never sent again: a video line whose job was
   recorded waits for the job (the reconciler brings it to its end), anything else ends as an
   error line `outcome_unknown` (the upstream may have done, and charged for, the work).
2. Each running batch: past its window, its pending lines end `batch_expired`; otherwise up to
   its concurrency (MEDIAGATE_BATCH_CONCURRENCY, halved by each upstream 429, grown back by
   successes; and all batches within this replica's share, MEDIAGATE_BATCH_SHARE of
   MEDIAGATE_MAX_INFLIGHT) pending lines are claimed (one conditional UPDATE) and run. A line is
   recorded as `sent` before its paid call (the request's `before_paid_send`), then runs through
   its endpoint's own use case (admitted, sent with retries, fallbacks and breakers, settled,
   logged in the request log under its own request id); its output line goes to the store as it
   comes and the line ends, its batch's counts and cost moved in the same transaction. A 429
   that sent nothing puts the line back, later, instead of failing it.
3. A batch with nothing left to run or wait for is finalized by one replica (a held claim):
   its output and error files are written from the lines' stored outputs, in line order,
   streamed, and its final status (completed, expired, cancelled) is recorded with its webhook
   event (batch.completed, ...) in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from mediagate import context
from mediagate.accounting.clients import ANONYMOUS, KeyPolicy, KeyRegistry
from mediagate.accounting.requestlog import RequestLog, micros
from mediagate.batches.endpoints import Done
from mediagate.batches.lines import (
    ENDPOINT_LABELS,
    VIDEOS,
    no_answer,
    output_line,
)
from mediagate.batches.service import BatchService
from mediagate.errors import GatewayError, PermissionDenied
from mediagate.observability.metrics import Metrics
from mediagate.stores.jobs import JobStore, VideoJob
from mediagate.stores.sql import batches as sql
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.jobs import insert_event
from mediagate.videos.records import new_video_id, openai_video
from mediagate.videos.webhooks import event

log = logging.getLogger("mediagate")

# An output line this long or shorter is kept in its row; a longer one (images) in the store.
_INLINE = 8192
_STORED = "@"  # a stored output's `result`: "@" and the object's name
_PAGE = 200
_GAUGE_EVERY_S = 5.0
_MAX_BACKOFF_S = 60.0
EVENTS = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}


class LineLost(GatewayError):
    """This replica no longer holds the line (its lease lapsed and another took it): nothing
    is sent for it here."""

    status = 503
    code = "batch_line_lost"


def _retry_after(error: GatewayError, attempts: int) -> float:
    given = error.headers.get("retry-after", "")
    if given.isdigit():
        return min(_MAX_BACKOFF_S, float(given))
    return min(_MAX_BACKOFF_S, 2.0 ** min(attempts, 6))


# A line the upstream could not take (a 503 that sent nothing: every route's breaker open, the
# replica's calls all taken) is tried again this many times, then fails.
_UNAVAILABLE_TRIES = 5


def _slows_down(error: GatewayError, attempts: int) -> bool:
    """A 429 that surely sent nothing (the upstream's, after the sender's own retries, or the
    key's own rate or concurrency): the line waits and is tried again, never failed for it; a
    503 that sent nothing likewise, a few times."""
    if not error.retryable or error.paid:
        return False
    return error.status == 429 or (error.status == 503 and attempts < _UNAVAILABLE_TRIES)


@dataclass
class BatchRunner:
    service: BatchService
    clients: KeyRegistry
    jobs: JobStore
    metrics: Metrics
    webhook_for: Callable[[str], str | None]
    concurrency: int  # MEDIAGATE_BATCH_CONCURRENCY
    capacity: int  # this replica's lines in flight, all batches together
    poll_s: float
    lease_s: float
    request_log: RequestLog | None = None
    clock: Callable[[], float] = time.time
    holder: str = field(default_factory=lambda: f"replica-{secrets.token_hex(8)}")
    _running: dict[tuple[str, int], asyncio.Task[None]] = field(default_factory=dict)
    _limits: dict[str, int] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _gauges_at: float = 0.0

    @property
    def database(self) -> Database:
        return self.service.database

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        heartbeat = asyncio.create_task(self._renew_forever())
        try:
            await self._rounds()
        finally:
            heartbeat.cancel()

    async def _renew_forever(self) -> None:
        """The leases of the lines in flight here renewed every third of a lease, whatever a
        round is doing (writing a large output file takes longer than a lease)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not self._running:
                continue
            until = self.clock() + self.lease_s
            try:
                await self.database.transaction(
                    partial(sql.renew_leases, holder=self.holder, until=until)
                )
            except Exception as exc:  # the store is down: the next beat tries again
                log.warning("renewing batch line leases failed: %s", type(exc).__name__)

    async def _rounds(self) -> None:
        while True:
            # Cleared before the round: a line that ends during it wakes the next at once.
            self._wake.clear()
            try:
                await self.round()
            except Exception as exc:  # a failed round (the store is down) must not stop the next
                log.warning("running batches failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def close(self, grace_s: float) -> None:
        """Lines in flight finish (their bills and outputs recorded) before the stores close,
        within `grace_s`; any still running then are cancelled: a line not yet sent runs again
        elsewhere, one sent ends `outcome_unknown` on the replica that takes it back."""
        running = list(self._running.values())
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def round(self) -> None:
        """One pass over the work (the leases are renewed by their own heartbeat)."""
        now = self.clock()
        await self._recover(now)
        active = await self.database.run(lambda tx: sql.active_batches(tx, 100))
        for batch in active:
            await self._advance(batch, now)
        if now - self._gauges_at >= _GAUGE_EVERY_S:
            await self.refresh_gauges()
            self._gauges_at = now

    async def refresh_gauges(self) -> None:
        def read(tx: Any) -> tuple[dict[str, int], dict[str, int]]:
            return sql.batch_counts(tx), sql.line_counts(tx)

        batches, lines = await self.database.run(read)
        for status in (*sql.ACTIVE, *sql.FINAL, "validating"):
            self.metrics.batches.labels(status).set(batches.get(status, 0))
        for state in sql.LINE_STATES:
            self.metrics.batch_lines.labels(state).set(lines.get(state, 0))

    # --- Taking back what a dead replica held ----------------------------------------------

    async def _recover(self, now: float) -> None:
        lapsed = await self.database.run(lambda tx: sql.lapsed_lines(tx, now, 100))
        for line in lapsed:
            key = (line["batch_id"], line["line"])
            if key in self._running:
                continue  # ours, still running (its renewal is on its way)
            bid, number, until = line["batch_id"], line["line"], line["lease_until"]
            if line["state"] == "claimed":
                await self.database.transaction(
                    partial(sql.reclaim_line, batch_id=bid, line=number, lease_until=until)
                )
                continue
            job = await self.jobs.get(line["job_id"]) if line["job_id"] else None
            if job is not None:
                await self.database.transaction(
                    partial(sql.adopt_sent_line, batch_id=bid, line=number, lease_until=until)
                )
                continue
            result = no_answer(
                line["custom_id"],
                "outcome_unknown",
                "The gateway stopped after this line was sent and before its answer was "
                "recorded; it is not sent again (the upstream may have done the work).",
            )
            await self._end(
                bid,
                number,
                ("sent",),
                ok=False,
                status=None,
                result=result,
                cost=0,
                holder=None,
                lease_until=until,
            )

    # --- Running a batch ----------------------------------------------------------------------

    async def _advance(self, batch: dict[str, Any], now: float) -> None:
        bid = batch["id"]
        status = batch["status"]
        if status == "in_progress" and now >= batch["expires_at"]:
            await self._expire(bid, now)
            status = "expiring"
        if status in ("in_progress", "cancelling", "expiring"):
            await self._check_waiting(batch)
        if status == "cancelling":
            await self._cancel_pending(bid, now)
        counts = await self.database.run(lambda tx: sql.lines_in_flight(tx, bid))
        running = counts.get("claimed", 0) + counts.get("sent", 0)
        waiting = counts.get("waiting", 0)
        # Derived from the batch's counts (read at the round's start, so never too few): the
        # lines neither ended nor in flight.
        pending = batch["total"] - batch["completed"] - batch["failed"] - running - waiting
        if status == "in_progress" and batch["expired_at"] is None and pending > 0:
            limit = self._limits.setdefault(bid, self.concurrency)
            room = min(limit - running, self.capacity - len(self._running))
            if room > 0:
                await self._start_lines(batch, room, now)
                return
        stopping = status != "in_progress" or batch["expired_at"] is not None
        if running or waiting or (pending > 0 and not stopping):
            return
        await self._finalize(batch)

    async def _expire(self, bid: str, now: float) -> None:
        def result_of(_: int, custom_id: str) -> str:
            return no_answer(
                custom_id,
                "batch_expired",
                "The batch's completion window passed before this line ran.",
            ).decode()

        def expire(tx: Any) -> None:
            sql.move_batch(tx, bid, ("in_progress",), {"expired_at": int(now), "updated_at": now})
            sql.expire_pending(tx, bid, result_of, now)

        await self.database.transaction(expire)

    async def _cancel_pending(self, bid: str, now: float) -> None:
        """A cancelled batch's lines never sent end failed (`batch_cancelled`), as expired ones
        do, so its error file names every line that did not run."""

        def result_of(_: int, custom_id: str) -> str:
            return no_answer(
                custom_id, "batch_cancelled", "The batch was cancelled before this line ran."
            ).decode()

        await self.database.transaction(lambda tx: sql.expire_pending(tx, bid, result_of, now))

    async def _start_lines(self, batch: dict[str, Any], room: int, now: float) -> None:
        bid = batch["id"]
        lines = await self.database.transaction(
            lambda tx: sql.claim_lines(tx, bid, self.holder, now, self.lease_s, room)
        )
        for line in lines:
            key = (bid, line["line"])
            task = asyncio.create_task(self._run_line(batch, line))
            self._running[key] = task
            task.add_done_callback(self._done(key))

    def _done(self, key: tuple[str, int]) -> Callable[[asyncio.Task[None]], None]:
        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(key, None)
            self._wake.set()  # room for the next line

        return done

    def _policy(self, owner: str) -> KeyPolicy:
        if not self.clients.enabled:
            return ANONYMOUS
        policy = self.clients.policy(owner)
        if policy is None:
            raise PermissionDenied(f"The key '{owner}' that created the batch no longer exists.")
        return policy

    async def _run_line(self, batch: dict[str, Any], line: dict[str, Any]) -> None:
        bid, number, endpoint = batch["id"], line["line"], batch["endpoint"]
        ctx = context.RequestContext()
        ctx.endpoint = ENDPOINT_LABELS[endpoint]
        ctx.principal = batch["principal"]
        ctx.key_name, ctx.team = batch["owner"], batch["team"]
        ctx.batch_id, ctx.custom_id = bid, line["custom_id"]
        token = context.begin(ctx)
        job_id = new_video_id() if endpoint == VIDEOS else None

        async def sent() -> None:
            # Recorded before the paid call goes out: after a crash it is never sent again.
            ok = await self.database.transaction(
                lambda tx: sql.mark_sent(tx, bid, number, self.holder, ctx.request_id, job_id)
            )
            if not ok:
                raise LineLost("This replica lost the line's lease; another runs it.")

        ctx.before_paid_send = sent
        started = time.perf_counter()
        status = 200
        try:
            policy = self._policy(batch["owner"])
            ctx.key_name, ctx.team = policy.name, policy.team
            done = await self.service.endpoints.run(
                endpoint, policy, json.loads(line["body"]), batch["base_url"] or "", job_id
            )
        except LineLost:
            status = 503
        except GatewayError as exc:
            ctx.error, status = exc, exc.status
            if _slows_down(exc, line["attempts"]):
                await self._later(bid, number, exc, line["attempts"])
            else:
                await self._ran(bid, line, False, exc.status, exc.body(), ctx)
        except Exception as exc:  # a defect: the line fails, the batch runs on
            log.exception("a batch line failed: %s", type(exc).__name__)
            status = 500
            error = GatewayError("The gateway hit an internal error.", code="internal_error")
            await self._ran(bid, line, False, 500, error.body(), ctx)
        else:
            await self._answered(batch, line, done, ctx)
        finally:
            context.finish(ctx)
            context.end(token)
            if self.request_log is not None:
                self.request_log.record(ctx, status, time.perf_counter() - started, "POST")

    async def _answered(
        self, batch: dict[str, Any], line: dict[str, Any], done: Done, ctx: context.RequestContext
    ) -> None:
        bid, number = batch["id"], line["line"]
        limit = self._limits.get(bid, self.concurrency)
        self._limits[bid] = min(self.concurrency, limit + 1)
        if done.job_id is not None:  # a video: the line ends when its job does
            await self.database.transaction(
                lambda tx: sql.wait_for_job(tx, bid, number, self.holder)
            )
            return
        await self._ran(bid, line, True, done.status, done.body, ctx)

    async def _ran(
        self,
        bid: str,
        line: dict[str, Any],
        ok: bool,
        status: int,
        body: Any,
        ctx: context.RequestContext,
    ) -> None:
        """A line this replica ran, ended with its answer (or its error's) as its output."""
        result = output_line(line["custom_id"], ctx.request_id, status, body)
        await self._end(
            bid,
            line["line"],
            ("claimed", "sent"),
            ok=ok,
            status=status,
            result=result,
            cost=ctx.cost or 0.0,
            holder=self.holder,
        )

    async def _later(self, bid: str, number: int, error: GatewayError, attempts: int) -> None:
        """An upstream 429 (or the key's own limit) that sent nothing: the batch slows down and
        the line waits, never failed for it."""
        self._limits[bid] = max(1, self._limits.get(bid, self.concurrency) // 2)
        not_before = self.clock() + _retry_after(error, attempts)
        await self.database.transaction(
            lambda tx: sql.release_line(tx, bid, number, self.holder, not_before)
        )

    async def _check_waiting(self, batch: dict[str, Any]) -> None:
        """Video lines whose job has ended: the final Video object is their output line."""
        bid = batch["id"]
        waiting = await self.database.run(lambda tx: sql.waiting_lines(tx, bid, _PAGE))
        for line in waiting:
            job = await self.jobs.get(line["job_id"]) if line["job_id"] else None
            if job is None:
                result = no_answer(
                    line["custom_id"],
                    "outcome_unknown",
                    "The line's video job was never recorded; it is not sent again.",
                )
                await self._end(
                    bid,
                    line["line"],
                    ("waiting",),
                    ok=False,
                    status=None,
                    result=result,
                    cost=0,
                    holder=None,
                )
            elif job.final:
                await self._job_ended(bid, line, job)

    async def _job_ended(self, bid: str, line: dict[str, Any], job: VideoJob) -> None:
        ok = job.status == "completed"
        result = output_line(line["custom_id"], line["request_id"] or "", 200, openai_video(job))
        await self._end(
            bid,
            line["line"],
            ("waiting",),
            ok=ok,
            status=200,
            result=result,
            cost=job.cost or 0.0,
            holder=None,
        )

    async def _end(
        self,
        bid: str,
        number: int,
        from_states: tuple[str, ...],
        *,
        ok: bool,
        status: int | None,
        result: bytes,
        cost: float,
        holder: str | None,
        lease_until: float | None = None,
    ) -> None:
        """The line's output kept (in its row, or in the store when large) and the line ended."""
        stored = None
        if len(result) > _INLINE:
            stored = await self.service.files.store.put(result, "application/octet-stream")
            kept = _STORED + stored
        else:
            kept = result.decode()
        now = self.clock()

        def end(tx: Any) -> bool:
            return sql.end_line(
                tx,
                bid,
                number,
                from_states,
                ok=ok,
                status_code=status,
                result=kept,
                cost_micros=micros(cost),
                now=now,
                holder=holder,
                lease_until=lease_until,
            )

        if not await self.database.transaction(end) and stored is not None:
            await self.service.files.store.delete(stored)

    # --- Finalizing ---------------------------------------------------------------------------

    async def _finalize(self, batch: dict[str, Any]) -> None:
        bid = batch["id"]
        now = self.clock()
        held = await self.database.transaction(
            lambda tx: sql.hold_batch(tx, bid, self.holder, now, max(60.0, self.lease_s * 4))
        )
        if not held:
            return
        if batch["status"] != "finalizing":
            moved = await self.database.transaction(
                lambda tx: sql.move_batch(
                    tx,
                    bid,
                    ("in_progress", "cancelling"),
                    {"status": "finalizing", "finalizing_at": int(now), "updated_at": now},
                )
            )
            if moved is None:
                return
            batch = moved
        expiry = batch["output_expires_s"]
        ids: dict[str, str | None] = {}
        stored: list[str] = []  # the lines' outputs kept in the store, dropped once written
        for ok, name in ((True, "output"), (False, "error")):
            count = batch["completed"] if ok else batch["failed"]
            if not count:
                ids[name] = None
                continue
            written = await self.service.files.write(
                batch["owner"],
                batch["team"],
                f"{bid}_{name}.jsonl",
                self._outputs(bid, ok, stored),
                bid,
                expiry,
            )
            ids[name] = written["id"]
        final = (
            "cancelled"
            if batch["cancelling_at"] is not None
            else "expired"
            if batch["expired_at"] is not None
            else "completed"
        )
        stamp = {"cancelled": "cancelled_at", "expired": "expired_at", "completed": "completed_at"}
        changes = {
            "status": final,
            stamp[final]: int(self.clock()),
            "output_file_id": ids["output"],
            "error_file_id": ids["error"],
            "updated_at": self.clock(),
        }
        url = self.webhook_for(batch["owner"])

        def finish(tx: Any) -> dict[str, Any] | None:
            moved = sql.move_batch(tx, bid, ("finalizing",), changes)
            if moved is not None and url:
                insert_event(tx, event(EVENTS[final], bid, url, self.clock()))
            return moved

        if await self.database.transaction(finish) is not None:
            self._limits.pop(bid, None)
            self._gauges_at = 0.0  # the gauges read again next round, showing it ended
            for name in stored:
                await self.service.files.store.delete(name)

    async def _outputs(self, bid: str, ok: bool, stored: list[str]) -> AsyncIterator[bytes]:
        """The batch's ended lines' outputs, in line order, a page at a time from the rows and
        each stored one streamed from the store (its name noted in `stored`)."""
        after = 0
        while True:
            page = await self.database.run(
                partial(sql.ended_lines, batch_id=bid, ok=ok, after_line=after, limit=_PAGE)
            )
            if not page:
                return
            for number, kept in page:
                after = number
                if not kept.startswith(_STORED):
                    yield kept.encode()
                    continue
                stored.append(kept[len(_STORED) :])
                found = await self.service.files.store.get(stored[-1])
                if found is None:  # the store lost it: the file is short of a line, said loudly
                    log.error(
                        "a batch line's output is missing from the store",
                        extra={"fields": {"batch_id": bid, "line": number}},
                    )
                    continue
                async for chunk in found.chunks:
                    yield chunk

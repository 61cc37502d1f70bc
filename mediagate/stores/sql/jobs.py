"""The job store in the records' database (SQLite on one host, PostgreSQL for replicas).

One row of `video_jobs` per job (migration 0003), its columns named as `VideoJob`'s fields.
Compare-and-set is one `UPDATE ... WHERE id = ? AND status = ? RETURNING`, which both engines
make atomic (PostgreSQL re-checks the status of a row another transaction changed first), and
the webhook event of the call that won is inserted in the same transaction, as is the move
of the jobs-by-status counts the gauges read (`video_job_counts`). Leases and the
outbox's due times are read from `clock`; a claim of the outbox is one conditional UPDATE (only
rows still due), so two replicas claiming at once never get the same event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mediagate.stores.jobs import (
    FIELDS,
    STATUSES,
    TERMINAL,
    Census,
    Delivery,
    Order,
    UnknownCursor,
    VideoJob,
    check_changes,
    job_from_record,
)
from mediagate.stores.sql.db import Database, Row, Tx

# Column names come from VideoJob's fields (and update's from a checked set); values are
# always bound. "group" is quoted: it is a keyword.
_COLUMNS = ", ".join(f'"{name}"' for name in FIELDS)
_INSERT = (
    f"INSERT INTO video_jobs ({_COLUMNS}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in FIELDS)})"
)
_SELECT = f"SELECT {_COLUMNS} FROM video_jobs"  # noqa: S608
# The predicate of the partial index video_jobs_unfinished, written as it is there.
_OPEN = tuple(status for status in STATUSES if status not in TERMINAL)
_UNFINISHED = f"status IN ({', '.join(repr(status) for status in _OPEN)})"
_COUNT = (
    "INSERT INTO video_job_counts (status, jobs) VALUES (?, ?) "
    "ON CONFLICT (status) DO UPDATE SET jobs = video_job_counts.jobs + excluded.jobs"
)
_EVENT = (
    "INSERT INTO webhook_outbox (id, url, body, created_at, attempts, due) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _encode(name: str, value: Any) -> Any:
    if name == "error" and value is not None:
        return json.dumps(value)
    if name == "seconds" and isinstance(value, str):
        return int(value)  # a record from before `seconds` was kept as an integer
    return value


def _values(job: VideoJob) -> list[Any]:
    return [_encode(name, getattr(job, name)) for name in FIELDS]


def _decode(row: Row) -> VideoJob:
    values = {name: row[name] for name in FIELDS}
    if values["error"] is not None:
        values["error"] = json.loads(values["error"])
    return job_from_record(values)


def _count(tx: Tx, moves: dict[str, int]) -> None:
    """Jobs by status moved by `moves`, in status order: every transaction locks the count
    rows in one order, so two of them never wait on each other (PostgreSQL)."""
    for status in sorted(moves):
        tx.execute(_COUNT, (status, moves[status]))


def _event_row(event: Delivery, due: float) -> tuple[Any, ...]:
    return (event.id, event.url, event.body, event.created_at, event.attempts, due)


def insert_event(tx: Tx, event: Delivery) -> None:
    """A webhook event into the outbox, due now, in the caller's transaction (a batch's end)."""
    tx.execute(_EVENT, _event_row(event, event.created_at))


class SqlJobStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock  # leases and the outbox's due times

    async def insert(self, job: VideoJob) -> None:
        values = _values(job)

        def write(tx: Tx) -> None:
            tx.execute(_INSERT, values)
            _count(tx, {job.status: 1})

        await self._db.transaction(write)

    async def restore(self, jobs: Sequence[tuple[VideoJob, Sequence[Delivery]]]) -> list[bool]:
        """Insert jobs read from an older store, each with its webhook events still to deliver
        (due now), in one transaction: each job only if no job has its id yet (False then, and
        its events are not written either), so importing the same store twice adds nothing."""
        rows = [(job, _values(job), events) for job, events in jobs]
        now = self._clock()

        def write(tx: Tx) -> list[bool]:
            added = []
            counts: dict[str, int] = {}
            for job, values, events in rows:
                inserted = tx.execute(f"{_INSERT} ON CONFLICT (id) DO NOTHING", values).rowcount
                if inserted:
                    counts[job.status] = counts.get(job.status, 0) + 1
                    if events:
                        tx.executemany(_EVENT, [_event_row(event, now) for event in events])
                added.append(bool(inserted))
            _count(tx, counts)
            return added

        return await self._db.transaction(write)

    async def get(self, job_id: str) -> VideoJob | None:
        def read(tx: Tx) -> VideoJob | None:
            row = tx.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()
            return _decode(row) if row is not None else None

        return await self._db.run(read)

    async def update(
        self,
        job_id: str,
        expected_status: str,
        changes: Mapping[str, Any],
        *,
        event: Delivery | None = None,
    ) -> VideoJob | None:
        check_changes(changes)
        if not changes:
            return await self.get(job_id)
        assignments = ", ".join(f'"{name}" = ?' for name in changes)
        values = [_encode(name, value) for name, value in changes.items()]
        sql = (
            f"UPDATE video_jobs SET {assignments} "  # noqa: S608
            f"WHERE id = ? AND status = ? RETURNING {_COLUMNS}"
        )
        now = self._clock()
        moved = changes.get("status")

        def write(tx: Tx) -> VideoJob | None:
            rows = tx.execute(sql, (*values, job_id, expected_status)).fetchall()
            if not rows:
                return None  # another writer moved the status first (or no such job)
            if moved is not None and moved != expected_status:
                _count(tx, {expected_status: -1, moved: 1})
            if event is not None:
                tx.execute(_EVENT, _event_row(event, now))
            return _decode(rows[0])

        # One transaction: the final state and its event are written together or not at all.
        return await self._db.transaction(write)

    async def unfinished(self, limit: int) -> list[VideoJob]:
        sql = f"{_SELECT} WHERE {_UNFINISHED} ORDER BY created_at, seq LIMIT ?"

        def read(tx: Tx) -> list[VideoJob]:
            return [_decode(row) for row in tx.execute(sql, (limit,)).fetchall()]

        return await self._db.run(read)

    async def census(self) -> Census:
        def read(tx: Tx) -> Census:
            rows = tx.execute("SELECT status, jobs FROM video_job_counts").fetchall()
            counts = {status: 0 for status in STATUSES}
            counts.update({str(row[0]): int(row[1]) for row in rows})
            oldest = tx.scalar(
                f"SELECT MIN(created_at) FROM video_jobs WHERE {_UNFINISHED}"  # noqa: S608
            )
            return Census(counts, float(oldest) if oldest is not None else None)

        return await self._db.run(read)

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()

        def take(tx: Tx) -> bool:
            # One conditional upsert: taken if free, lapsed, or already this holder's.
            rows = tx.execute(
                "INSERT INTO job_leases (name, holder, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires = excluded.expires "
                "WHERE job_leases.holder = excluded.holder OR job_leases.expires <= ? "
                "RETURNING holder",
                (name, holder, now + ttl_s, now),
            ).fetchall()
            return bool(rows)

        return await self._db.transaction(take)

    async def claim_deliveries(self, hold_s: float, limit: int) -> list[Delivery]:
        now = self._clock()

        def claim(tx: Tx) -> list[Delivery]:
            # `due <= ?` is checked again on each row as it is updated: on PostgreSQL a
            # concurrent claimer that updated it first has moved `due`, so the row is skipped
            # rather than claimed twice.
            rows = tx.execute(
                "UPDATE webhook_outbox SET due = ? WHERE due <= ? AND id IN "
                "(SELECT id FROM webhook_outbox WHERE due <= ? ORDER BY due LIMIT ?) "
                "RETURNING id, url, body, created_at, attempts",
                (now + hold_s, now, now, limit),
            ).fetchall()
            found = [Delivery(row[0], row[1], row[2], float(row[3]), int(row[4])) for row in rows]
            return sorted(found, key=lambda delivery: delivery.created_at)

        return await self._db.transaction(claim)

    async def delivered(self, delivery_id: str) -> None:
        await self._db.transaction(
            lambda tx: tx.execute("DELETE FROM webhook_outbox WHERE id = ?", (delivery_id,))
        )

    async def retry_later(self, delivery_id: str, attempts: int, delay_s: float) -> None:
        due = self._clock() + delay_s
        await self._db.transaction(
            lambda tx: tx.execute(
                "UPDATE webhook_outbox SET attempts = ?, due = ? WHERE id = ?",
                (attempts, due, delivery_id),
            )
        )

    async def outbox(self) -> tuple[int, float | None]:
        def read(tx: Tx) -> tuple[int, float | None]:
            row = tx.execute("SELECT COUNT(*), MIN(created_at) FROM webhook_outbox").fetchone()
            return int(row[0]), float(row[1]) if row[1] is not None else None

        return await self._db.run(read)

    async def list(
        self, owner: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[VideoJob], bool]:
        compare, direction = (">", "ASC") if order == "asc" else ("<", "DESC")

        def read(tx: Tx) -> tuple[list[VideoJob], bool] | None:
            where = "owner = ? AND deleted_at IS NULL"
            params: list[Any] = [owner]
            if after is not None:
                cursor = tx.execute(
                    "SELECT created_at, seq FROM video_jobs WHERE id = ? AND owner = ?",
                    (after, owner),
                ).fetchone()
                if cursor is None:
                    return None
                where += f" AND (created_at, seq) {compare} (?, ?)"
                params += [cursor[0], cursor[1]]
            sql = (
                f"{_SELECT} WHERE {where} ORDER BY created_at {direction}, seq {direction} LIMIT ?"
            )
            rows = tx.execute(sql, (*params, limit + 1)).fetchall()
            return [_decode(row) for row in rows[:limit]], len(rows) > limit

        page = await self._db.run(read)
        if page is None:
            raise UnknownCursor(after)
        return page

    async def close(self) -> None:
        """Nothing of its own to close: the database is `Stores.database`'s."""

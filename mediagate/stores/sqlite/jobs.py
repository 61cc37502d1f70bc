"""The job store in one SQLite file: the default, for a gateway on one host.

WAL mode with synchronous=FULL: a job is on disk when `insert` returns, so a gateway killed
right after answering a create loses nothing. Every statement runs in a worker thread on one
connection guarded by a lock (sqlite3 connections are not safe to share between threads).
Several processes may open the same file; compare-and-set is a single UPDATE ... WHERE status,
which SQLite makes atomic across them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from mediagate.stores.jobs import (
    FIELDS,
    TERMINAL,
    Census,
    Delivery,
    Order,
    UnknownCursor,
    VideoJob,
    check_changes,
    job_from_record,
)
from mediagate.stores.sqlite.db import SqliteDb

# Column names come from VideoJob's fields (and update's from a checked set); values are
# always bound.
_COLUMNS = ", ".join(f'"{name}"' for name in FIELDS)
_MARKS = ", ".join("?" for _ in FIELDS)
_INSERT = f"INSERT INTO video_jobs ({_COLUMNS}) VALUES ({_MARKS})"  # noqa: S608
_SELECT = f"SELECT {_COLUMNS} FROM video_jobs"  # noqa: S608
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS video_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(f'"{name}"' for name in FIELDS)},
    UNIQUE ("id")
);
CREATE INDEX IF NOT EXISTS video_jobs_owner ON video_jobs ("owner", seq);
CREATE INDEX IF NOT EXISTS video_jobs_status ON video_jobs ("status", "created_at");
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    due REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (due);
"""
_UNFINISHED = " AND ".join(f"status != '{status}'" for status in sorted(TERMINAL))


def _encode(name: str, value: Any) -> Any:
    return json.dumps(value) if name == "error" and value is not None else value


def _decode(row: sqlite3.Row) -> VideoJob:
    values = {name: row[name] for name in FIELDS}
    if values["error"] is not None:
        values["error"] = json.loads(values["error"])
    return job_from_record(values)


def _add_columns(db: sqlite3.Connection) -> None:
    """A file made before a field of VideoJob existed gets its column (null in old rows)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(video_jobs)")}
    for name in FIELDS:
        if name not in columns:
            db.execute(f'ALTER TABLE video_jobs ADD COLUMN "{name}"')


class SqliteJobStore:
    def __init__(self, db: SqliteDb, clock: Callable[[], float] = time.time) -> None:
        self._sql = db
        self._clock = clock  # leases and the outbox's due times

    @classmethod
    async def open(cls, path: str, clock: Callable[[], float] = time.time) -> SqliteJobStore:
        store = cls(await SqliteDb.open(path, _SCHEMA, "job store"), clock)
        await store._sql.run(_add_columns)
        return store

    async def insert(self, job: VideoJob) -> None:
        values = [_encode(name, getattr(job, name)) for name in FIELDS]
        await self._sql.run(lambda db: db.execute(_INSERT, values))

    async def get(self, job_id: str) -> VideoJob | None:
        def read(db: sqlite3.Connection) -> VideoJob | None:
            row = db.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()
            return _decode(row) if row is not None else None

        return await self._sql.run(read)

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
        # One statement, so the compare and the set are atomic even across processes.
        sql = (
            f"UPDATE video_jobs SET {assignments} "  # noqa: S608
            f"WHERE id = ? AND status = ? RETURNING {_COLUMNS}"
        )

        now = self._clock()

        def write(db: sqlite3.Connection) -> VideoJob | None:
            rows = db.execute(sql, (*values, job_id, expected_status)).fetchall()
            row = rows[0] if rows else None
            if row is not None and event is not None:
                db.execute(
                    "INSERT INTO webhook_outbox (id, url, body, created_at, attempts, due) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (event.id, event.url, event.body, event.created_at, event.attempts, now),
                )
            return _decode(row) if row is not None else None

        # One transaction: the final state and its event are written together or not at all.
        return await self._sql.transaction(write)

    async def unfinished(self, limit: int) -> list[VideoJob]:
        sql = f"{_SELECT} WHERE {_UNFINISHED} ORDER BY created_at, seq LIMIT ?"

        def read(db: sqlite3.Connection) -> list[VideoJob]:
            return [_decode(row) for row in db.execute(sql, (limit,)).fetchall()]

        return await self._sql.run(read)

    async def census(self) -> Census:
        def read(db: sqlite3.Connection) -> Census:
            rows = db.execute("SELECT status, COUNT(*) FROM video_jobs GROUP BY status")
            counts = {str(row[0]): int(row[1]) for row in rows.fetchall()}
            oldest = db.execute(
                f"SELECT MIN(created_at) FROM video_jobs WHERE {_UNFINISHED}"  # noqa: S608
            ).fetchone()[0]
            return Census(counts, float(oldest) if oldest is not None else None)

        return await self._sql.run(read)

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()

        def take(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires = excluded.expires "
                "WHERE leases.holder = excluded.holder OR leases.expires <= ? RETURNING holder",
                (name, holder, now + ttl_s, now),
            ).fetchall()
            return bool(row)

        return await self._sql.transaction(take)

    async def claim_deliveries(self, hold_s: float, limit: int) -> list[Delivery]:
        now = self._clock()

        def claim(db: sqlite3.Connection) -> list[Delivery]:
            rows = db.execute(
                "SELECT id, url, body, created_at, attempts FROM webhook_outbox "
                "WHERE due <= ? ORDER BY due LIMIT ?",
                (now, limit),
            ).fetchall()
            for row in rows:
                db.execute("UPDATE webhook_outbox SET due = ? WHERE id = ?", (now + hold_s, row[0]))
            return [Delivery(*row) for row in rows]

        return await self._sql.transaction(claim)

    async def delivered(self, delivery_id: str) -> None:
        await self._sql.run(
            lambda db: db.execute("DELETE FROM webhook_outbox WHERE id = ?", (delivery_id,))
        )

    async def retry_later(self, delivery_id: str, attempts: int, delay_s: float) -> None:
        due = self._clock() + delay_s
        await self._sql.run(
            lambda db: db.execute(
                "UPDATE webhook_outbox SET attempts = ?, due = ? WHERE id = ?",
                (attempts, due, delivery_id),
            )
        )

    async def outbox(self) -> tuple[int, float | None]:
        def read(db: sqlite3.Connection) -> tuple[int, float | None]:
            depth, oldest = db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM webhook_outbox"
            ).fetchone()
            return int(depth), float(oldest) if oldest is not None else None

        return await self._sql.run(read)

    async def list(
        self, owner: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[VideoJob], bool]:
        compare, direction = (">", "ASC") if order == "asc" else ("<", "DESC")

        def read(db: sqlite3.Connection) -> tuple[list[VideoJob], bool] | None:
            where, params = "owner = ? AND deleted_at IS NULL", [owner]
            if after is not None:
                cursor = db.execute(
                    "SELECT seq FROM video_jobs WHERE id = ? AND owner = ?", (after, owner)
                ).fetchone()
                if cursor is None:
                    return None
                where += f" AND seq {compare} ?"
                params.append(cursor["seq"])
            sql = f"{_SELECT} WHERE {where} ORDER BY seq {direction} LIMIT ?"
            rows = db.execute(sql, (*params, limit + 1)).fetchall()
            return [_decode(row) for row in rows[:limit]], len(rows) > limit

        page = await self._sql.run(read)
        if page is None:
            raise UnknownCursor(after)
        return page

    async def close(self) -> None:
        await self._sql.close()

"""The job store in one SQLite file: the default, for a gateway on one host.

WAL mode with synchronous=FULL: a job is on disk when `insert` returns, so a gateway killed
right after answering a create loses nothing. Every statement runs in a worker thread on one
connection guarded by a lock (sqlite3 connections are not safe to share between threads).
Several processes may open the same file; compare-and-set is a single UPDATE ... WHERE status,
which SQLite makes atomic across them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .jobstore import FIELDS, Job, Order, StoreUnavailable, UnknownCursor, check_changes

T = TypeVar("T")

# Column names come from Job's fields (and update's from a checked set); values are always bound.
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
"""


def _encode(name: str, value: Any) -> Any:
    return json.dumps(value) if name == "error" and value is not None else value


def _decode(row: sqlite3.Row) -> Job:
    values = {name: row[name] for name in FIELDS}
    if values["error"] is not None:
        values["error"] = json.loads(values["error"])
    return Job(**values)


class SqliteJobStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteJobStore:
        def connect() -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            return db

        try:
            return cls(await asyncio.to_thread(connect))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"Cannot open the job store at {path}: {exc}") from None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"The job store failed: {exc}") from None

    async def insert(self, job: Job) -> None:
        values = [_encode(name, getattr(job, name)) for name in FIELDS]
        await self._run(lambda db: db.execute(_INSERT, values))

    async def get(self, job_id: str) -> Job | None:
        def read(db: sqlite3.Connection) -> Job | None:
            row = db.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()
            return _decode(row) if row is not None else None

        return await self._run(read)

    async def update(
        self, job_id: str, expected_status: str, changes: Mapping[str, Any]
    ) -> Job | None:
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

        def write(db: sqlite3.Connection) -> Job | None:
            row = db.execute(sql, (*values, job_id, expected_status)).fetchone()
            return _decode(row) if row is not None else None

        return await self._run(write)

    async def list(
        self, owner: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[Job], bool]:
        compare, direction = (">", "ASC") if order == "asc" else ("<", "DESC")

        def read(db: sqlite3.Connection) -> tuple[list[Job], bool] | None:
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

        page = await self._run(read)
        if page is None:
            raise UnknownCursor(after)
        return page

    async def close(self) -> None:
        await self._run(lambda db: db.close())

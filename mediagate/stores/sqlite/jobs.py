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
from collections.abc import Mapping
from typing import Any

from mediagate.stores.jobs import FIELDS, Order, UnknownCursor, VideoJob, check_changes
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
"""


def _encode(name: str, value: Any) -> Any:
    return json.dumps(value) if name == "error" and value is not None else value


def _decode(row: sqlite3.Row) -> VideoJob:
    values = {name: row[name] for name in FIELDS}
    if values["error"] is not None:
        values["error"] = json.loads(values["error"])
    return VideoJob(**values)


class SqliteJobStore:
    def __init__(self, db: SqliteDb) -> None:
        self._sql = db

    @classmethod
    async def open(cls, path: str) -> SqliteJobStore:
        return cls(await SqliteDb.open(path, _SCHEMA, "job store"))

    async def insert(self, job: VideoJob) -> None:
        values = [_encode(name, getattr(job, name)) for name in FIELDS]
        await self._sql.run(lambda db: db.execute(_INSERT, values))

    async def get(self, job_id: str) -> VideoJob | None:
        def read(db: sqlite3.Connection) -> VideoJob | None:
            row = db.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()
            return _decode(row) if row is not None else None

        return await self._sql.run(read)

    async def update(
        self, job_id: str, expected_status: str, changes: Mapping[str, Any]
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

        def write(db: sqlite3.Connection) -> VideoJob | None:
            row = db.execute(sql, (*values, job_id, expected_status)).fetchone()
            return _decode(row) if row is not None else None

        return await self._sql.run(write)

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

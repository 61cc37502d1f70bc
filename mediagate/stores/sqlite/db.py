"""One SQLite connection shared by a store's coroutines, used from worker threads.

sqlite3 connections are not safe to share between threads, so every use (closing included:
a task still settling at shutdown must not find the connection closed under it) holds one lock.
WAL with synchronous=FULL: what a call wrote is on disk when it returns; a store whose state may
be lost (`durable=False`: the rate windows and concurrency slots) commits with synchronous=NORMAL,
still atomic and serialised across processes (WAL keeps the file consistent), without an fsync
per commit (most of a read-limited poll's CPU). Every SQLite backend
reaches its file only through `SqliteDb`, so this is the one place a `sqlite3.Error` becomes
`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mediagate.errors import StoreUnavailable

T = TypeVar("T")


class SqliteDb:
    def __init__(self, connection: sqlite3.Connection, what: str) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self._what = what

    @classmethod
    async def open(cls, path: str, schema: str, what: str, durable: bool = True) -> SqliteDb:
        def connect() -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            db.executescript(schema)
            return db

        try:
            return cls(await asyncio.to_thread(connect), what)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"Cannot open the {what} at {path}: {exc}") from None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"The {self._what} failed: {exc}") from None

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one BEGIN IMMEDIATE transaction: serialised across every process that
        uses the file, so a check and the change it allows are one step."""

        def atomic(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self.run(atomic)

    async def close(self) -> None:
        await self.run(lambda db: db.close())

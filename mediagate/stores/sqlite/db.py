"""One SQLite connection shared by a store's coroutines, used from worker threads.

sqlite3 connections are not safe to share between threads, so every use (closing included:
a task still settling at shutdown must not find the connection closed under it) holds one lock.
WAL with synchronous=FULL: what a call wrote is on disk when it returns; a store whose state may
be lost (`durable=False`: the rate windows and concurrency slots) commits with synchronous=NORMAL,
still atomic and serialised across processes (WAL keeps the file consistent), without an fsync
per commit. Such a store's transactions are tried first on the calling thread (the event
loop's), on a second connection that never waits for the write lock and never checkpoints: a
few statements in page cache instead of two thread switches; when another connection holds the
lock they go to the worker thread as before. Every SQLite backend reaches its file only through
`SqliteDb`, so this is the one place a `sqlite3.Error` becomes `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mediagate.errors import StoreUnavailable

T = TypeVar("T")


# One transaction in this many goes to the worker thread's connection even when the lock is
# free: its commit checkpoints the WAL once past SQLite's 1,000 pages (the loop's connection
# never does), so the WAL stays a few MB however long only takes are written.
_CHECKPOINTED_EVERY = 256


class _Busy:
    """Another connection holds the write lock."""


BUSY = _Busy()


class SqliteDb:
    def __init__(
        self, connection: sqlite3.Connection, what: str, quick: sqlite3.Connection | None = None
    ) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self._what = what
        # A non-durable store's second connection, for `transaction` on the caller's thread.
        self._quick = quick
        self._quick_lock = threading.Lock()
        self._quick_runs = 0

    @classmethod
    async def open(cls, path: str, schema: str, what: str, durable: bool = True) -> SqliteDb:
        def connect(timeout: float) -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=timeout
            )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            return db

        def connections() -> tuple[sqlite3.Connection, sqlite3.Connection | None]:
            db = connect(10)
            db.executescript(schema)
            if durable:
                return db, None
            # Never waits for the write lock (busy timeout 0: the thread's connection takes
            # over), never checkpoints (a checkpoint syncs the files: the thread's connection
            # does it, one transaction in _CHECKPOINTED_EVERY).
            quick = connect(0)
            quick.execute("PRAGMA wal_autocheckpoint=0")
            return db, quick

        try:
            db, quick = await asyncio.to_thread(connections)
            return cls(db, what, quick)
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
        uses the file, so a check and the change it allows are one step.

        A non-durable store (no fsync at commit) first tries it on the caller's thread, the
        event loop's, where it costs a few statements instead of a hop to a worker thread and
        back (a read-limited poll's largest cost after the job's own read): only when the write
        lock is free at once (no other connection, in this process or another, is writing),
        else in a worker thread, waiting for the lock as any transaction does."""
        self._quick_runs += 1
        if (
            self._quick is not None
            and self._quick_runs % _CHECKPOINTED_EVERY
            and self._quick_lock.acquire(blocking=False)
        ):
            try:
                result = self._now(self._quick, work)
            finally:
                self._quick_lock.release()
            if not isinstance(result, _Busy):
                return result

        return await self.run(lambda db: _atomic(db, work))

    def _now(self, db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T | _Busy:
        """`work` in a transaction on `db` now, if the write lock is free: its result, else
        BUSY with nothing done."""
        try:
            return _atomic(db, work)
        except sqlite3.OperationalError as exc:
            # BEGIN IMMEDIATE is where the lock is taken, so a busy one has done nothing (the
            # primary code: SQLITE_BUSY_RECOVERY and the like are busy too).
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return BUSY
            raise StoreUnavailable(f"The {self._what} failed: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"The {self._what} failed: {exc}") from None

    async def close(self) -> None:
        if self._quick is not None:
            with self._quick_lock:
                self._quick.close()
        await self.run(lambda db: db.close())


def _atomic(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work` in one BEGIN IMMEDIATE transaction on `db`: committed, or rolled back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return result

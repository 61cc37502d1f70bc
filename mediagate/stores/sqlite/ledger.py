"""The ledger's coordination in SQLite, for a gateway on one host (the default): rate windows
and concurrency slots, in the records' SQLite file (the money is in its SQL tables:
mediagate.stores.sql.ledger).

Each check-and-change is one `BEGIN IMMEDIATE` transaction, which SQLite serialises across
every process using the file, so two gateways on one host also share one limit. Buckets and
leases are read from `clock` (the wall clock, unless a test hands in its own). What is here may
be lost (the Coordination protocol's terms): its connection commits without an fsync
(synchronous=NORMAL), so a power cut may forget the last moments of windows and slots, never
the records' money or jobs (their connection keeps synchronous=FULL).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from mediagate.stores.sqlite.db import SqliteDb

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_buckets (name TEXT PRIMARY KEY, tokens REAL, at REAL);
CREATE TABLE IF NOT EXISTS ledger_leases (id TEXT PRIMARY KEY, owner TEXT, expires REAL);
CREATE INDEX IF NOT EXISTS ledger_leases_owner ON ledger_leases (owner);
"""


class SqliteCoordination:
    def __init__(self, db: SqliteDb, clock: Callable[[], float] = time.time) -> None:
        self._sql = db
        self._clock = clock

    @classmethod
    async def open(cls, path: str, clock: Callable[[], float] = time.time) -> SqliteCoordination:
        return cls(await SqliteDb.open(path, _SCHEMA, "accounting store", durable=False), clock)

    async def _tx(self, work: Callable[[sqlite3.Connection, float], T]) -> T:
        """`work(db, now)` in one transaction, `now` read from the clock inside it."""
        return await self._sql.transaction(lambda db: work(db, self._clock()))

    async def take_rate(self, key: str, rpm: int | None, ipm: int | None, images: int) -> float:
        buckets = [(f"{key}:rpm", rpm, 1), (f"{key}:ipm", ipm, images)]
        buckets = [(name, rate, need) for name, rate, need in buckets if rate]

        def work(db: sqlite3.Connection, now: float) -> float:
            levels = []
            wait = 0.0
            for name, rate, need in buckets:
                assert rate is not None
                row = db.execute(
                    "SELECT tokens, at FROM ledger_buckets WHERE name = ?", (name,)
                ).fetchone()
                tokens = rate if row is None else min(rate, row[0] + (now - row[1]) * rate / 60)
                if tokens < need:
                    wait = max(wait, (need - tokens) * 60 / rate)
                levels.append((name, tokens - need))
            if wait > 0:
                return wait
            db.executemany(
                "INSERT OR REPLACE INTO ledger_buckets VALUES (?, ?, ?)",
                [(name, level, now) for name, level in levels],
            )
            return 0.0

        return await self._tx(work)

    async def acquire(self, key: str, lease: str, limit: int, ttl_s: float) -> bool:
        def work(db: sqlite3.Connection, now: float) -> bool:
            db.execute("DELETE FROM ledger_leases WHERE owner = ? AND expires < ?", (key, now))
            (held,) = db.execute(
                "SELECT COUNT(*) FROM ledger_leases WHERE owner = ?", (key,)
            ).fetchone()
            if held >= limit:
                return False
            db.execute("INSERT INTO ledger_leases VALUES (?, ?, ?)", (lease, key, now + ttl_s))
            return True

        return await self._tx(work)

    async def release(self, key: str, lease: str) -> None:
        await self._tx(lambda db, _: db.execute("DELETE FROM ledger_leases WHERE id = ?", (lease,)))

    async def ping(self) -> None:
        await self._tx(lambda db, _: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._sql.close()

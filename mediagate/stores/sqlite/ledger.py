"""The ledger in SQLite, for a gateway on one host (the default).

Each check-and-change is one `BEGIN IMMEDIATE` transaction, which SQLite serialises across
every process using the file, so two gateways on one host also share one limit. Buckets,
leases, reservations and days are read from `clock` (the wall clock, unless a test hands in its
own).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from mediagate.stores.ledger import UNSETTLED, Charge, Spend, UsageRow, day_of, month_of
from mediagate.stores.sqlite.db import SqliteDb

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_buckets (name TEXT PRIMARY KEY, tokens REAL, at REAL);
CREATE TABLE IF NOT EXISTS ledger_leases (id TEXT PRIMARY KEY, owner TEXT, expires REAL);
CREATE INDEX IF NOT EXISTS ledger_leases_owner ON ledger_leases (owner);
CREATE TABLE IF NOT EXISTS ledger_reservations (
    id TEXT PRIMARY KEY, owner TEXT, amount REAL, expires REAL);
CREATE INDEX IF NOT EXISTS ledger_reservations_owner ON ledger_reservations (owner);
CREATE TABLE IF NOT EXISTS ledger_settled (id TEXT PRIMARY KEY, at REAL);
-- Every settle prunes ids older than _SETTLED_KEEP_S by `at`: without this index that prune
-- scanned the whole table (three days of request ids) on every request.
CREATE INDEX IF NOT EXISTS ledger_settled_at ON ledger_settled (at);
CREATE TABLE IF NOT EXISTS ledger_spend (
    owner TEXT, period TEXT, amount REAL, PRIMARY KEY (owner, period));
CREATE TABLE IF NOT EXISTS ledger_usage (
    owner TEXT, day TEXT, model TEXT, requests INTEGER, images INTEGER,
    video_seconds INTEGER, cost REAL, PRIMARY KEY (owner, day, model));
"""
_SETTLED_KEEP_S = 3 * 86_400  # long enough to see any late second settle of the same id


class SqliteLedger:
    def __init__(self, db: SqliteDb, clock: Callable[[], float] = time.time) -> None:
        self._sql = db
        self._clock = clock

    @classmethod
    async def open(cls, path: str, clock: Callable[[], float] = time.time) -> SqliteLedger:
        return cls(await SqliteDb.open(path, _SCHEMA, "accounting store"), clock)

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

    def _spend(self, db: sqlite3.Connection, key: str, now: float) -> Spend:
        # A reservation that outlived its request was never settled (its replica died, or its
        # booking failed): it is booked at its amount, the request's upper bound, never dropped.
        expired = db.execute(
            "SELECT id, amount FROM ledger_reservations WHERE owner = ? AND expires < ?",
            (key, now),
        ).fetchall()
        for reservation, amount in expired:
            self._book(db, key, reservation, Charge(UNSETTLED, amount), now)
        (reserved,) = db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger_reservations WHERE owner = ?", (key,)
        ).fetchone()
        totals = dict(
            db.execute(
                "SELECT period, amount FROM ledger_spend WHERE owner = ? AND period IN (?, ?)",
                (key, day_of(now), month_of(now)),
            ).fetchall()
        )
        return Spend(totals.get(day_of(now), 0.0), totals.get(month_of(now), 0.0), reserved)

    async def reserve(
        self,
        key: str,
        reservation: str,
        amount: float,
        day_limit: float | None,
        month_limit: float | None,
        ttl_s: float,
    ) -> Spend | None:
        def work(db: sqlite3.Connection, now: float) -> Spend | None:
            spend = self._spend(db, key, now)
            if day_limit is not None and spend.day + spend.reserved + amount > day_limit + 1e-9:
                return None
            if (
                month_limit is not None
                and spend.month + spend.reserved + amount > month_limit + 1e-9
            ):
                return None
            db.execute(
                "INSERT OR REPLACE INTO ledger_reservations VALUES (?, ?, ?, ?)",
                (reservation, key, amount, now + ttl_s),
            )
            return spend

        return await self._tx(work)

    async def settle(self, key: str, reservation: str, charge: Charge) -> bool:
        def work(db: sqlite3.Connection, now: float) -> bool:
            db.execute("DELETE FROM ledger_settled WHERE at < ?", (now - _SETTLED_KEEP_S,))
            return self._book(db, key, reservation, charge, now)

        return await self._tx(work)

    async def settle_many(self, charges: list[tuple[str, str, Charge]]) -> list[bool]:
        # One transaction, so one fsync (synchronous=FULL) for the whole batch.
        def work(db: sqlite3.Connection, now: float) -> list[bool]:
            db.execute("DELETE FROM ledger_settled WHERE at < ?", (now - _SETTLED_KEEP_S,))
            return [self._book(db, key, res, charge, now) for key, res, charge in charges]

        return await self._tx(work)

    @staticmethod
    def _book(
        db: sqlite3.Connection, key: str, reservation: str, charge: Charge, now: float
    ) -> bool:
        """Drop the reservation and book `charge`, once per reservation id."""
        db.execute("DELETE FROM ledger_reservations WHERE id = ?", (reservation,))
        inserted = db.execute(
            "INSERT OR IGNORE INTO ledger_settled VALUES (?, ?)", (reservation, now)
        ).rowcount
        if not inserted:
            return False
        for period in (day_of(now), month_of(now)):
            db.execute(
                "INSERT INTO ledger_spend VALUES (?, ?, ?) ON CONFLICT (owner, period) "
                "DO UPDATE SET amount = amount + excluded.amount",
                (key, period, charge.cost),
            )
        db.execute(
            "INSERT INTO ledger_usage VALUES (?, ?, ?, 1, ?, ?, ?) "
            "ON CONFLICT (owner, day, model) DO UPDATE SET requests = requests + 1, "
            "images = images + excluded.images, "
            "video_seconds = video_seconds + excluded.video_seconds, "
            "cost = cost + excluded.cost",
            (key, day_of(now), charge.model, charge.images, charge.video_seconds, charge.cost),
        )
        return True

    async def spend(self, key: str) -> Spend:
        return await self._tx(lambda db, now: self._spend(db, key, now))

    async def usage(self, key: str, days: list[str]) -> list[UsageRow]:
        query = (
            "SELECT owner, day, model, requests, images, video_seconds, cost FROM ledger_usage "
            "WHERE owner = ? AND day BETWEEN ? AND ? ORDER BY day, model"
        )
        span = (key, min(days), max(days))
        rows = await self._tx(lambda db, _: db.execute(query, span).fetchall())
        return [UsageRow(*row) for row in rows if row[1] in days]

    async def ping(self) -> None:
        await self._tx(lambda db, _: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._sql.close()

"""Idempotency-Key records in SQLite: a table of their own in the store's file.

The records sit on a connection of their own; a claim is one `BEGIN IMMEDIATE` transaction,
which SQLite makes atomic across processes. A record holds its state (running with a lease, or
done with the answer) and the fingerprint of the request that claimed it. Leases and expiry are
read from `clock` (the wall clock, unless a test hands in its own).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable

from mediagate.stores.idempotency import Claim, Stored, decode_stored, encode_stored
from mediagate.stores.sqlite.db import SqliteDb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT,
    lease_until REAL NOT NULL,
    expires_at REAL NOT NULL,
    response TEXT,
    body BLOB,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
"""
_SWEEP_EVERY_S = 60.0


class SqliteIdempotency:
    def __init__(self, db: SqliteDb, clock: Callable[[], float] = time.time) -> None:
        self._sql = db
        self._clock = clock
        self._swept = 0.0

    @classmethod
    async def open(cls, path: str, clock: Callable[[], float] = time.time) -> SqliteIdempotency:
        store = cls(await SqliteDb.open(path, _SCHEMA, "idempotency store"), clock)
        await store._sql.run(_add_sent_column)
        return store

    async def claim(self, key: str, fingerprint: str, lease_s: float, ttl_s: float) -> Claim:
        def claim(db: sqlite3.Connection) -> Claim:
            now = self._clock()
            if now - self._swept > _SWEEP_EVERY_S:
                db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
                self._swept = now
            row = db.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
            token = secrets.token_hex(16)
            if row is None or row["expires_at"] <= now:
                db.execute(
                    "INSERT OR REPLACE INTO idempotency "
                    "(key, fingerprint, state, token, lease_until, expires_at) "
                    "VALUES (?, ?, 'running', ?, ?, ?)",
                    (key, fingerprint, token, now + lease_s, now + ttl_s),
                )
                return Claim("owner", token)
            if row["fingerprint"] != fingerprint:
                return Claim("mismatch")
            if row["state"] == "done":
                return Claim("done", stored=decode_stored(row["response"], row["body"]))
            if row["lease_until"] <= now and row["sent"]:
                return Claim("unknown")  # it stopped after sending: it may have been paid
            if row["lease_until"] <= now:
                # The replica that claimed it stopped renewing (it crashed): take over.
                db.execute(
                    "UPDATE idempotency SET token = ?, lease_until = ? WHERE key = ?",
                    (token, now + lease_s, key),
                )
                return Claim("owner", token)
            return Claim("running")

        return await self._sql.transaction(claim)

    async def renew(self, key: str, token: str, lease_s: float) -> bool:
        def renew(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE idempotency SET lease_until = ? "
                "WHERE key = ? AND token = ? AND state = 'running'",
                (self._clock() + lease_s, key, token),
            )
            return cursor.rowcount == 1

        return await self._sql.run(renew)

    async def mark_sent(self, key: str, token: str) -> None:
        await self._sql.run(
            lambda db: db.execute(
                "UPDATE idempotency SET sent = 1 WHERE key = ? AND token = ? AND state = 'running'",
                (key, token),
            )
        )

    async def finish(self, key: str, token: str, stored: Stored, ttl_s: float) -> None:
        await self._sql.run(
            lambda db: db.execute(
                "UPDATE idempotency SET state = 'done', response = ?, body = ?, expires_at = ? "
                "WHERE key = ? AND token = ?",
                (encode_stored(stored), stored.body, self._clock() + ttl_s, key, token),
            )
        )

    async def release(self, key: str, token: str) -> None:
        await self._sql.run(
            lambda db: db.execute(
                "DELETE FROM idempotency WHERE key = ? AND token = ? AND state = 'running'",
                (key, token),
            )
        )

    async def close(self) -> None:
        await self._sql.close()


def _add_sent_column(db: sqlite3.Connection) -> None:
    """A file made before `sent` existed gets the column (its records were never sent)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(idempotency)")}
    if "sent" not in columns:
        db.execute("ALTER TABLE idempotency ADD COLUMN sent INTEGER NOT NULL DEFAULT 0")

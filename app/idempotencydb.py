"""Where Idempotency-Key records live: the job store's backend (MEDIAGATE_STORE_URL).

SQLite: a table of its own in the job store's file, on a connection of its own; a claim is
one `BEGIN IMMEDIATE` transaction, which SQLite makes atomic across processes. Redis: a hash
per record under `{prefix}:idem:`, claimed by a Lua script (Redis runs a script alone) that
reads the time from Redis itself, so replicas with skewed clocks agree on leases; the record
expires with PEXPIRE. Both hold the record's state (running with a lease, or done with the
answer) and the fingerprint of the request that claimed it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .idempotency import Claim, Stored
from .jobstore import StoreUnavailable
from .redisdb import connect
from .sqlitedb import SqliteDb

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT,
    lease_until REAL NOT NULL,
    expires_at REAL NOT NULL,
    response TEXT,
    body BLOB
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
"""
_SWEEP_EVERY_S = 60.0


def _encode(stored: Stored) -> str:
    return json.dumps(
        {
            "status": stored.status,
            "headers": stored.headers,
            "route": stored.route,
            "model": stored.model,
        }
    )


def _decode(meta: str | bytes, body: bytes) -> Stored:
    fields = json.loads(meta)
    return Stored(
        status=fields["status"],
        headers=[(str(k), str(v)) for k, v in fields["headers"]],
        body=body,
        route=fields.get("route"),
        model=fields.get("model"),
    )


class SqliteIdempotency:
    def __init__(self, db: SqliteDb) -> None:
        self._sql = db
        self._swept = 0.0

    @classmethod
    async def open(cls, path: str) -> SqliteIdempotency:
        return cls(await SqliteDb.open(path, _SCHEMA, "idempotency store"))

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._sql.run(work)

    async def claim(self, key: str, fingerprint: str, lease_s: float, ttl_s: float) -> Claim:
        def claim(db: sqlite3.Connection) -> Claim:
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
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
                    result = Claim("owner", token)
                elif row["fingerprint"] != fingerprint:
                    result = Claim("mismatch")
                elif row["state"] == "done":
                    result = Claim("done", stored=_decode(row["response"], row["body"]))
                elif row["lease_until"] <= now:
                    # The replica that claimed it stopped renewing (it crashed): take over.
                    db.execute(
                        "UPDATE idempotency SET token = ?, lease_until = ? WHERE key = ?",
                        (token, now + lease_s, key),
                    )
                    result = Claim("owner", token)
                else:
                    result = Claim("running")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return result

        return await self._run(claim)

    async def renew(self, key: str, token: str, lease_s: float) -> bool:
        def renew(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE idempotency SET lease_until = ? "
                "WHERE key = ? AND token = ? AND state = 'running'",
                (time.time() + lease_s, key, token),
            )
            return cursor.rowcount == 1

        return await self._run(renew)

    async def finish(self, key: str, token: str, stored: Stored, ttl_s: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE idempotency SET state = 'done', response = ?, body = ?, expires_at = ? "
                "WHERE key = ? AND token = ?",
                (_encode(stored), stored.body, time.time() + ttl_s, key, token),
            )
        )

    async def release(self, key: str, token: str) -> None:
        await self._run(
            lambda db: db.execute(
                "DELETE FROM idempotency WHERE key = ? AND token = ? AND state = 'running'",
                (key, token),
            )
        )

    async def close(self) -> None:
        await self._sql.close()


# KEYS: the record. ARGV: fingerprint, token, lease ms, ttl ms.
# Returns {state} or {'done', response, body}.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'running', 'token', ARGV[2],
             'lease', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'owner'}
end
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then
  return {'mismatch'}
end
if state == 'done' then
  return {'done', redis.call('HGET', KEYS[1], 'response'), redis.call('HGET', KEYS[1], 'body')}
end
if tonumber(redis.call('HGET', KEYS[1], 'lease')) <= now then
  redis.call('HSET', KEYS[1], 'token', ARGV[2], 'lease', now + tonumber(ARGV[3]))
  return {'owner'}
end
return {'running'}
"""

# KEYS: the record. ARGV: token, lease ms.
_RENEW = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1]
   or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
return 1
"""

# KEYS: the record. ARGV: token, response, body, ttl ms.
_FINISH = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: the record. ARGV: token.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'state') == 'running' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisIdempotency:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    @classmethod
    async def open(cls, url: str, prefix: str) -> RedisIdempotency:
        # Bytes in and out: a stored answer's body is kept as it was sent.
        return cls(await connect(url, "idempotency store", decode_responses=False), prefix)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:idem:{key}"

    async def _call(self, script: Any, key: str, args: list[Any]) -> Any:
        try:
            return await script(keys=[self._key(key)], args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"The Redis idempotency store failed: {exc}") from None

    async def claim(self, key: str, fingerprint: str, lease_s: float, ttl_s: float) -> Claim:
        token = secrets.token_hex(16)
        reply = await self._call(
            self._claim, key, [fingerprint, token, int(lease_s * 1000), int(ttl_s * 1000)]
        )
        state = reply[0].decode()
        if state == "owner":
            return Claim("owner", token)
        if state == "done":
            return Claim("done", stored=_decode(reply[1], reply[2] or b""))
        return Claim(state)

    async def renew(self, key: str, token: str, lease_s: float) -> bool:
        return bool(await self._call(self._renew, key, [token, int(lease_s * 1000)]))

    async def finish(self, key: str, token: str, stored: Stored, ttl_s: float) -> None:
        await self._call(
            self._finish, key, [token, _encode(stored), stored.body, int(ttl_s * 1000)]
        )

    async def release(self, key: str, token: str) -> None:
        await self._call(self._release, key, [token])

    async def close(self) -> None:
        await self._redis.aclose()

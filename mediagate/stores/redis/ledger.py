"""The ledger's coordination in Redis, for replicas that must share one rate limit and one
concurrency limit (the money is in the records' database: mediagate.stores.sql.ledger).

Every check-and-change is a Lua script (Redis runs a script alone, so there is no
read-modify-write race between replicas) and reads the clock with TIME, so replicas whose
clocks differ still agree. Keys live under `{prefix}:ledger:`; key names are restricted to
[A-Za-z0-9._-] by the keys file, so they are safe inside key names.
"""

from __future__ import annotations

from typing import Any

from mediagate.stores.redis.db import RedisDb

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: one bucket per limit. ARGV: per bucket rate then need. Returns the wait (as a string).
_TAKE = (
    _NOW
    + """
local wait = 0
local levels = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local need = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = rate
  if state[1] then
    tokens = math.min(rate, tonumber(state[1]) + (now - tonumber(state[2])) * rate / 60)
  end
  if tokens < need then wait = math.max(wait, (need - tokens) * 60 / rate) end
  levels[i] = tokens - need
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', tostring(levels[i]), 'at', tostring(now))
  redis.call('EXPIRE', key, 120)
end
return '0'
"""
)

# KEYS: lease zset. ARGV: lease id, limit, ttl. 1 if acquired.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return 1
"""
)


class RedisCoordination:
    def __init__(self, db: RedisDb, prefix: str) -> None:
        self._db = db
        self._p = f"{prefix}:ledger"
        self._take = db.script(_TAKE)
        self._acquire = db.script(_ACQUIRE)

    @classmethod
    async def open(cls, url: str, prefix: str) -> RedisCoordination:
        return cls(await RedisDb.open(url, "accounting store", decode_responses=False), prefix)

    async def take_rate(self, key: str, rpm: int | None, ipm: int | None, images: int) -> float:
        limits = [(f"{self._p}:rpm:{key}", rpm, 1), (f"{self._p}:ipm:{key}", ipm, images)]
        limits = [item for item in limits if item[1]]
        if not limits:
            return 0.0
        args: list[Any] = []
        for _, rate, need in limits:
            args += [rate, need]
        wait = await self._take([name for name, _, _ in limits], args)
        return float(wait)

    async def acquire(self, key: str, lease: str, limit: int, ttl_s: float) -> bool:
        taken = await self._acquire([f"{self._p}:leases:{key}"], [lease, limit, ttl_s])
        return bool(taken)

    async def release(self, key: str, lease: str) -> None:
        await self._db.run(lambda r: r.zrem(f"{self._p}:leases:{key}", lease))

    async def ping(self) -> None:
        await self._db.run(lambda r: r.ping())

    async def close(self) -> None:
        await self._db.close()

"""The ledger in Redis, for replicas that must share one limit and one budget.

Every check-and-change is a Lua script (Redis runs a script alone, so there is no
read-modify-write race between replicas) and reads the clock with TIME, so replicas whose
clocks differ still agree. Keys live under `{prefix}:ledger:`; key names are restricted to
[A-Za-z0-9._-] by the keys file, so they are safe inside key names.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis.asyncio as aioredis

from mediagate.stores.ledger import UNSETTLED, Charge, Spend, UsageRow, day_of, month_of
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

# Current spend; expects KEYS[1] reservation expiries (zset), KEYS[2] amounts (hash),
# KEYS[3] day total, KEYS[4] month total, KEYS[5] today's usage hash, KEYS[6] the prefix of
# settled markers. A reservation that expired unsettled is booked at its amount (under the
# model UNSETTLED), never dropped.
_SPEND = (
    """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(expired) do
  local held = redis.call('HGET', KEYS[2], id)
  redis.call('HDEL', KEYS[2], id)
  if held and redis.call('SET', KEYS[6] .. id, '1', 'NX', 'EX', 259200) then
    redis.call('INCRBYFLOAT', KEYS[3], held)
    redis.call('EXPIRE', KEYS[3], 3 * 86400)
    redis.call('INCRBYFLOAT', KEYS[4], held)
    redis.call('EXPIRE', KEYS[4], 40 * 86400)
    local model = '"""
    + UNSETTLED
    + """'
    redis.call('HINCRBY', KEYS[5], model .. '|requests', 1)
    redis.call('HINCRBYFLOAT', KEYS[5], model .. '|cost', held)
    redis.call('EXPIRE', KEYS[5], 400 * 86400)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local reserved = 0
for _, amount in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(amount) end
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
local month = tonumber(redis.call('GET', KEYS[4]) or '0')
"""
)

_GET_SPEND = _NOW + _SPEND + "return {tostring(day), tostring(month), tostring(reserved)}"

# ARGV: id, amount, day limit ('' for none), month limit, ttl. Nil if a limit would be passed.
_RESERVE = (
    _NOW
    + _SPEND
    + """
local amount = tonumber(ARGV[2])
if ARGV[3] ~= '' and day + reserved + amount > tonumber(ARGV[3]) + 1e-9 then return nil end
if ARGV[4] ~= '' and month + reserved + amount > tonumber(ARGV[4]) + 1e-9 then return nil end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5])) + 60)
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[5])) + 60)
return {tostring(day), tostring(month), tostring(reserved)}
"""
)

# KEYS: settled marker, reservation zset, amounts hash, day total, month total, usage hash.
# ARGV: id, cost, model, images, video seconds. 1 if this call booked the charge.
_SETTLE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 259200) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('INCRBYFLOAT', KEYS[4], ARGV[2])
redis.call('EXPIRE', KEYS[4], 3 * 86400)
redis.call('INCRBYFLOAT', KEYS[5], ARGV[2])
redis.call('EXPIRE', KEYS[5], 40 * 86400)
local model = ARGV[3]
redis.call('HINCRBY', KEYS[6], model .. '|requests', 1)
redis.call('HINCRBY', KEYS[6], model .. '|images', ARGV[4])
redis.call('HINCRBY', KEYS[6], model .. '|video_seconds', ARGV[5])
redis.call('HINCRBYFLOAT', KEYS[6], model .. '|cost', ARGV[2])
redis.call('EXPIRE', KEYS[6], 400 * 86400)
return 1
"""


class RedisLedger:
    def __init__(self, db: RedisDb, prefix: str) -> None:
        self._db = db
        self._p = f"{prefix}:ledger"
        self._take = db.script(_TAKE)
        self._acquire = db.script(_ACQUIRE)
        self._get_spend = db.script(_GET_SPEND)
        self._reserve = db.script(_RESERVE)
        self._settle = db.script(_SETTLE)

    @classmethod
    async def open(cls, url: str, prefix: str) -> RedisLedger:
        return cls(await RedisDb.open(url, "accounting store", decode_responses=False), prefix)

    def _spend_keys(self, key: str) -> list[str]:
        # A script must be told its keys up front, so the day and month totals are named from
        # this replica's UTC date; amounts and expiries inside the scripts use Redis's clock.
        now = time.time()
        return [
            f"{self._p}:resv:{key}",
            f"{self._p}:resvamt:{key}",
            f"{self._p}:spend:{key}:{day_of(now)}",
            f"{self._p}:spend:{key}:{month_of(now)}",
            f"{self._p}:usage:{key}:{day_of(now)}",
            f"{self._p}:settled:",
        ]

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

    async def reserve(
        self,
        key: str,
        reservation: str,
        amount: float,
        day_limit: float | None,
        month_limit: float | None,
        ttl_s: float,
    ) -> Spend | None:
        limits = ["" if limit is None else repr(limit) for limit in (day_limit, month_limit)]
        result = await self._reserve(
            self._spend_keys(key), [reservation, repr(amount), *limits, ttl_s]
        )
        return None if result is None else Spend(*(float(v) for v in result))

    async def settle(self, key: str, reservation: str, charge: Charge) -> bool:
        spend = self._spend_keys(key)
        keys = [f"{self._p}:settled:{reservation}", *spend[:5]]
        args = [reservation, repr(charge.cost), charge.model, charge.images, charge.video_seconds]
        return bool(await self._settle(keys, args))

    async def settle_many(self, charges: list[tuple[str, str, Charge]]) -> list[bool]:
        # Each settle is one atomic script; a batch is as many round trips (Redis is fast at
        # them, and a script per key keeps each booking atomic on a cluster too).
        return [await self.settle(key, res, charge) for key, res, charge in charges]

    async def spend(self, key: str) -> Spend:
        result = await self._get_spend(self._spend_keys(key), [])
        return Spend(*(float(v) for v in result))

    async def usage(self, key: str, days: list[str]) -> list[UsageRow]:
        async def read(r: aioredis.Redis) -> list[dict[bytes, bytes]]:
            async with r.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(f"{self._p}:usage:{key}:{day}")
                return cast(list[dict[bytes, bytes]], await pipe.execute())

        rows: list[UsageRow] = []
        for day, raw in zip(days, await self._db.run(read), strict=True):
            models: dict[str, dict[str, float]] = {}
            for field, value in raw.items():
                model, _, name = field.decode().rpartition("|")
                models.setdefault(model, {})[name] = float(value)
            for model, totals in sorted(models.items()):
                rows.append(
                    UsageRow(
                        key,
                        day,
                        model,
                        int(totals.get("requests", 0)),
                        int(totals.get("images", 0)),
                        int(totals.get("video_seconds", 0)),
                        totals.get("cost", 0.0),
                    )
                )
        return rows

    async def ping(self) -> None:
        await self._db.run(lambda r: r.ping())

    async def close(self) -> None:
        await self._db.close()

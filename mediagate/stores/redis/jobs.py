"""The job store in Redis, for several replicas that must see the same jobs.

A job is a hash `{prefix}:video:{id}` (every value JSON-encoded, so null survives), an owner's
jobs are a sorted set `{prefix}:videos:{owner}` scored by a global sequence number, and every
write that must be atomic is a Lua script: Redis runs a script alone, so compare-and-set needs
no WATCH/retry loop. Durability across a Redis restart is Redis's own setting (appendonly);
across a gateway crash a job is safe once `insert` returns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from mediagate.stores.jobs import (
    FIELDS,
    STATUSES,
    Census,
    Delivery,
    Order,
    UnknownCursor,
    VideoJob,
    check_changes,
    job_from_record,
)
from mediagate.stores.redis.db import RedisDb

# Besides each job's hash and its owner's index, the store keeps what the gauges and the
# reconciler read without scanning: `{prefix}:video-counts` (jobs by status) and
# `{prefix}:videos-unfinished` (ids of jobs not yet final, scored by creation time). The
# webhook outbox is `{prefix}:outbox` (id -> event JSON), `{prefix}:outbox-due` (scored by when
# it is next tried) and `{prefix}:outbox-age` (scored by creation time).

# KEYS: job hash, owner index, sequence counter, counts, unfinished.
# ARGV: job id, status, created_at, then field/value pairs.
_INSERT = """
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'seq', seq, unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
if ARGV[2] ~= 'completed' and ARGV[2] ~= 'failed' then
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
end
return seq
"""

# KEYS: job hash, counts, unfinished, outbox, outbox-due, outbox-age.
# ARGV: expected status (JSON), owner-index prefix, "1" to drop the job from its owner's index
# (it was deleted), event id ("" for none), event JSON, event created_at, then field/value
# pairs. Nil when the status has moved on. The job's change and its event are one step.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then
  return nil
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
local id = cjson.decode(redis.call('HGET', KEYS[1], 'id'))
if ARGV[3] == '1' then
  local owner = cjson.decode(redis.call('HGET', KEYS[1], 'owner'))
  redis.call('ZREM', ARGV[2] .. owner, id)
end
local before = cjson.decode(ARGV[1])
local after = cjson.decode(redis.call('HGET', KEYS[1], 'status'))
if after ~= before then
  redis.call('HINCRBY', KEYS[2], before, -1)
  redis.call('HINCRBY', KEYS[2], after, 1)
  if after == 'completed' or after == 'failed' then
    redis.call('ZREM', KEYS[3], id)
  end
end
if ARGV[4] ~= '' then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
  redis.call('ZADD', KEYS[5], now[1] + now[2] / 1e6, ARGV[4])
  redis.call('ZADD', KEYS[6], ARGV[6], ARGV[4])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: the lease. ARGV: holder, ttl in ms. 1 if the holder holds it now.
_LEASE = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: outbox, outbox-due. ARGV: hold seconds, limit. The events due now, held back.
_CLAIM = """
local t = redis.call('TIME')
local now = t[1] + t[2] / 1e6
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local found = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), id)
  local body = redis.call('HGET', KEYS[1], id)
  if body then
    table.insert(found, body)
  end
end
return found
"""

# KEYS: outbox, outbox-due. ARGV: id, event JSON, delay seconds. Only if still in the outbox.
_RETRY = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], t[1] + t[2] / 1e6 + tonumber(ARGV[3]), ARGV[1])
return 1
"""


def _pairs(values: Mapping[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in values.items():
        flat += [name, json.dumps(value)]
    return flat


def _event(event: Delivery) -> str:
    return json.dumps(dataclasses.asdict(event))


def _decode(raw: Mapping[str, str] | list[str]) -> VideoJob:
    if isinstance(raw, list):  # HGETALL from a script is a flat field/value list
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    # A record written before a field existed lacks it: the field's default (None).
    return job_from_record({name: json.loads(raw[name]) for name in FIELDS if name in raw})


class RedisJobStore:
    def __init__(self, db: RedisDb, prefix: str) -> None:
        self._db = db
        self._prefix = prefix
        self._insert = db.script(_INSERT)
        self._update = db.script(_UPDATE)
        self._lease = db.script(_LEASE)
        self._claim = db.script(_CLAIM)
        self._retry = db.script(_RETRY)
        self._counts = f"{prefix}:video-counts"
        self._unfinished = f"{prefix}:videos-unfinished"
        self._outbox = f"{prefix}:outbox"
        self._outbox_due = f"{prefix}:outbox-due"
        self._outbox_age = f"{prefix}:outbox-age"

    @classmethod
    async def open(cls, url: str, prefix: str) -> RedisJobStore:
        return cls(await RedisDb.open(url, "job store", decode_responses=True), prefix)

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:video:{job_id}"

    def _owner_prefix(self) -> str:
        return f"{self._prefix}:videos:"

    async def insert(self, job: VideoJob) -> None:
        values = {name: getattr(job, name) for name in FIELDS}
        keys = [
            self._job_key(job.id),
            self._owner_prefix() + job.owner,
            f"{self._prefix}:seq",
            self._counts,
            self._unfinished,
        ]
        await self._insert(keys, [job.id, job.status, job.created_at, *_pairs(values)])

    async def get(self, job_id: str) -> VideoJob | None:
        raw = cast(dict[str, str], await self._db.run(lambda r: r.hgetall(self._job_key(job_id))))
        return _decode(raw) if raw else None

    async def update(
        self,
        job_id: str,
        expected_status: str,
        changes: Mapping[str, Any],
        *,
        event: Delivery | None = None,
    ) -> VideoJob | None:
        check_changes(changes)
        if not changes:
            return await self.get(job_id)
        deleting = "1" if changes.get("deleted_at") is not None else "0"
        keys = [
            self._job_key(job_id),
            self._counts,
            self._unfinished,
            self._outbox,
            self._outbox_due,
            self._outbox_age,
        ]
        event_args = ["", "", "0"] if event is None else [event.id, _event(event), event.created_at]
        args = [json.dumps(expected_status), self._owner_prefix(), deleting, *event_args]
        raw = await self._update(keys, [*args, *_pairs(changes)])
        return _decode(raw) if raw else None

    async def unfinished(self, limit: int) -> list[VideoJob]:
        async def read(r: aioredis.Redis) -> list[Any]:
            ids = cast(list[str], await r.zrange(self._unfinished, 0, limit - 1))
            async with r.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self._job_key(job_id))
                rows: list[Any] = await pipe.execute()
                return rows

        return [_decode(row) for row in await self._db.run(read) if row]

    async def census(self) -> Census:
        async def read(r: aioredis.Redis) -> tuple[dict[str, str], list[tuple[str, float]]]:
            counts = cast(dict[str, str], await r.hgetall(self._counts))
            oldest = cast(
                list[tuple[str, float]], await r.zrange(self._unfinished, 0, 0, withscores=True)
            )
            return counts, oldest

        counts, oldest = await self._db.run(read)
        # (A job recorded before the counts existed would drive its old status below 0.)
        by_status = {status: max(0, int(counts.get(status, 0))) for status in STATUSES}
        return Census(by_status, oldest[0][1] if oldest else None)

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        key = f"{self._prefix}:lease:{name}"
        return bool(await self._lease([key], [holder, max(1, int(ttl_s * 1000))]))

    async def claim_deliveries(self, hold_s: float, limit: int) -> list[Delivery]:
        found = await self._claim([self._outbox, self._outbox_due], [hold_s, limit])
        return [Delivery(**json.loads(raw)) for raw in cast(list[str], found)]

    async def delivered(self, delivery_id: str) -> None:
        async def drop(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hdel(self._outbox, delivery_id)
                pipe.zrem(self._outbox_due, delivery_id)
                pipe.zrem(self._outbox_age, delivery_id)
                await pipe.execute()

        await self._db.run(drop)

    async def retry_later(self, delivery_id: str, attempts: int, delay_s: float) -> None:
        raw = await self._db.run(lambda r: r.hget(self._outbox, delivery_id))
        if raw is None:
            return
        event = Delivery(**{**json.loads(cast(str, raw)), "attempts": attempts})
        await self._retry([self._outbox, self._outbox_due], [delivery_id, _event(event), delay_s])

    async def outbox(self) -> tuple[int, float | None]:
        async def read(r: aioredis.Redis) -> tuple[int, list[tuple[str, float]]]:
            depth: int = await r.zcard(self._outbox_age)
            oldest = cast(
                list[tuple[str, float]], await r.zrange(self._outbox_age, 0, 0, withscores=True)
            )
            return depth, oldest

        depth, oldest = await self._db.run(read)
        return depth, oldest[0][1] if oldest else None

    async def list(
        self, owner: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[VideoJob], bool]:
        index = self._owner_prefix() + owner

        async def page(r: aioredis.Redis) -> tuple[list[Any], bool]:
            low, high = "-inf", "+inf"
            if after is not None:
                seq, cursor_owner = cast(
                    list[str | None], await r.hmget(self._job_key(after), ["seq", "owner"])
                )
                if seq is None or cursor_owner is None or json.loads(cursor_owner) != owner:
                    raise UnknownCursor(after)
                low = high = f"({seq}"  # exclusive: the page starts after the cursor
            if order == "asc":
                found = await r.zrangebyscore(index, low, "+inf", start=0, num=limit + 1)
            else:
                found = await r.zrevrangebyscore(index, high, "-inf", start=0, num=limit + 1)
            ids = cast(list[str], found)
            async with r.pipeline(transaction=False) as pipe:
                for job_id in ids[:limit]:
                    pipe.hgetall(self._job_key(job_id))
                rows = await pipe.execute()
            return rows, len(ids) > limit

        rows, more = await self._db.run(page)
        return [_decode(row) for row in rows if row], more

    async def close(self) -> None:
        await self._db.close()

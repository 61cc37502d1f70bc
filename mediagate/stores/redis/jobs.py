"""The job store in Redis, for several replicas that must see the same jobs.

A job is a hash `{prefix}:video:{id}` (every value JSON-encoded, so null survives), an owner's
jobs are a sorted set `{prefix}:videos:{owner}` scored by a global sequence number, and every
write that must be atomic is a Lua script: Redis runs a script alone, so compare-and-set needs
no WATCH/retry loop. Durability across a Redis restart is Redis's own setting (appendonly);
across a gateway crash a job is safe once `insert` returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from mediagate.stores.jobs import FIELDS, Order, UnknownCursor, VideoJob, check_changes
from mediagate.stores.redis.db import RedisDb

# KEYS: job hash, owner index, sequence counter. ARGV: job id, then field/value pairs.
_INSERT = """
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'seq', seq, unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], seq, ARGV[1])
return seq
"""

# KEYS: job hash. ARGV: expected status (JSON), owner-index prefix, "1" to drop the job from
# its owner's index (it was deleted), then field/value pairs. Nil when the status has moved on.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then
  return nil
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if ARGV[3] == '1' then
  local owner = cjson.decode(redis.call('HGET', KEYS[1], 'owner'))
  redis.call('ZREM', ARGV[2] .. owner, cjson.decode(redis.call('HGET', KEYS[1], 'id')))
end
return redis.call('HGETALL', KEYS[1])
"""


def _pairs(values: Mapping[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in values.items():
        flat += [name, json.dumps(value)]
    return flat


def _decode(raw: Mapping[str, str] | list[str]) -> VideoJob:
    if isinstance(raw, list):  # HGETALL from a script is a flat field/value list
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    return VideoJob(**{name: json.loads(raw[name]) for name in FIELDS})


class RedisJobStore:
    def __init__(self, db: RedisDb, prefix: str) -> None:
        self._db = db
        self._prefix = prefix
        self._insert = db.script(_INSERT)
        self._update = db.script(_UPDATE)

    @classmethod
    async def open(cls, url: str, prefix: str) -> RedisJobStore:
        return cls(await RedisDb.open(url, "job store", decode_responses=True), prefix)

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:video:{job_id}"

    def _owner_prefix(self) -> str:
        return f"{self._prefix}:videos:"

    async def insert(self, job: VideoJob) -> None:
        values = {name: getattr(job, name) for name in FIELDS}
        keys = [self._job_key(job.id), self._owner_prefix() + job.owner, f"{self._prefix}:seq"]
        await self._insert(keys, [job.id, *_pairs(values)])

    async def get(self, job_id: str) -> VideoJob | None:
        raw = cast(dict[str, str], await self._db.run(lambda r: r.hgetall(self._job_key(job_id))))
        return _decode(raw) if raw else None

    async def update(
        self, job_id: str, expected_status: str, changes: Mapping[str, Any]
    ) -> VideoJob | None:
        check_changes(changes)
        if not changes:
            return await self.get(job_id)
        deleting = "1" if changes.get("deleted_at") is not None else "0"
        args = [json.dumps(expected_status), self._owner_prefix(), deleting, *_pairs(changes)]
        raw = await self._update([self._job_key(job_id)], args)
        return _decode(raw) if raw else None

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

"""Idempotency-Key records in Redis: a hash per record under `{prefix}:idem:`.

A claim is a Lua script (Redis runs a script alone) that reads the time from Redis itself, so
replicas with skewed clocks agree on leases; the record expires with PEXPIRE. A record holds its
state (running with a lease, or done with the answer) and the fingerprint of the request that
claimed it.
"""

from __future__ import annotations

import secrets
from typing import Any

from mediagate.stores.idempotency import Claim, Stored, decode_stored, encode_stored
from mediagate.stores.redis.db import RedisDb

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
  if redis.call('HGET', KEYS[1], 'sent') then return {'unknown'} end
  redis.call('HSET', KEYS[1], 'token', ARGV[2], 'lease', now + tonumber(ARGV[3]))
  return {'owner'}
end
return {'running'}
"""

# KEYS: the record. ARGV: token.
_MARK_SENT = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'state') == 'running' then
  redis.call('HSET', KEYS[1], 'sent', '1')
end
return 0
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
    def __init__(self, db: RedisDb, prefix: str) -> None:
        self._db = db
        self._prefix = prefix
        self._claim = db.script(_CLAIM)
        self._renew = db.script(_RENEW)
        self._finish = db.script(_FINISH)
        self._release = db.script(_RELEASE)
        self._mark_sent = db.script(_MARK_SENT)

    @classmethod
    async def open(cls, url: str, prefix: str) -> RedisIdempotency:
        # Bytes in and out: a stored answer's body is kept as it was sent.
        return cls(await RedisDb.open(url, "idempotency store", decode_responses=False), prefix)

    def _key(self, key: str) -> list[str]:
        return [f"{self._prefix}:idem:{key}"]

    async def claim(self, key: str, fingerprint: str, lease_s: float, ttl_s: float) -> Claim:
        token = secrets.token_hex(16)
        args: list[Any] = [fingerprint, token, int(lease_s * 1000), int(ttl_s * 1000)]
        reply = await self._claim(self._key(key), args)
        state = reply[0].decode()
        if state == "owner":
            return Claim("owner", token)
        if state == "done":
            return Claim("done", stored=decode_stored(reply[1], reply[2] or b""))
        return Claim(state)

    async def renew(self, key: str, token: str, lease_s: float) -> bool:
        return bool(await self._renew(self._key(key), [token, int(lease_s * 1000)]))

    async def mark_sent(self, key: str, token: str) -> None:
        await self._mark_sent(self._key(key), [token])

    async def finish(self, key: str, token: str, stored: Stored, ttl_s: float) -> None:
        args = [token, encode_stored(stored), stored.body, int(ttl_s * 1000)]
        await self._finish(self._key(key), args)

    async def release(self, key: str, token: str) -> None:
        await self._release(self._key(key), [token])

    async def close(self) -> None:
        await self._db.close()

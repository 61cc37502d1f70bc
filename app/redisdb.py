"""Opening a store's Redis connection: checked at start, so a wrong URL fails the start."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .jobstore import StoreUnavailable


async def connect(url: str, what: str, *, decode_responses: bool) -> aioredis.Redis:
    client = aioredis.Redis.from_url(url, decode_responses=decode_responses, socket_timeout=10)
    try:
        await client.ping()
    except RedisError as exc:
        await client.aclose()
        raise StoreUnavailable(f"Cannot reach the Redis {what}: {exc}") from None
    return client

"""One store's Redis connection: checked at start, so a wrong URL fails the start.

Every Redis backend reaches Redis only through `RedisDb` (`run` for commands, `script` for Lua
scripts), so this is the one place a `RedisError` becomes `StoreUnavailable`. At start the
message carries Redis's own words, for the operator; afterwards only the error's kind, since it
is what a client is answered with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mediagate.errors import StoreUnavailable

T = TypeVar("T")

Script = Callable[[Sequence[str], Sequence[Any]], Awaitable[Any]]


class RedisDb:
    def __init__(self, client: aioredis.Redis, what: str) -> None:
        self._redis = client
        self._what = what

    @classmethod
    async def open(cls, url: str, what: str, *, decode_responses: bool) -> RedisDb:
        client = aioredis.Redis.from_url(url, decode_responses=decode_responses, socket_timeout=10)
        try:
            await client.ping()
        except RedisError as exc:
            await client.aclose()
            raise StoreUnavailable(f"Cannot reach the Redis {what}: {exc}") from None
        return cls(client, what)

    def _failed(self, exc: RedisError) -> StoreUnavailable:
        return StoreUnavailable(f"The Redis {self._what} failed: {type(exc).__name__}.")

    async def run(self, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """`work(client)`: any number of commands (a pipeline included)."""
        try:
            return await work(self._redis)
        except RedisError as exc:
            raise self._failed(exc) from None

    def script(self, source: str) -> Script:
        """A Lua script, registered once, called as `await script(keys, args)` (Redis runs a
        script alone: it is one atomic step)."""
        registered = self._redis.register_script(source)

        async def call(keys: Sequence[str], args: Sequence[Any]) -> Any:
            try:
                return await registered(keys=keys, args=args)
            except RedisError as exc:
                raise self._failed(exc) from None

        return call

    async def close(self) -> None:
        await self._redis.aclose()

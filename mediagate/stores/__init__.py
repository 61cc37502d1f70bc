"""The gateway's shared state: one interface module per concept, two backends behind each.

- interfaces and their records: `jobs` (video jobs), `ledger` (limits, budgets, usage),
  `idempotency` (Idempotency-Key records);
- backends: `sqlite/` (one host, the default) and `redis/` (several replicas), each holding
  `db` (its connection and its one error mapping) and `jobs`, `ledger`, `idempotency`;
- `hosted`: the images the gateway hosts at its own links (a directory or S3), which is not
  part of the three above and has its own configuration.

`open_stores` opens the three on the backend MEDIAGATE_STORE_URL names. Only this package
module imports the backends; the interface modules never do.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from mediagate.stores.idempotency import IdempotencyStore
from mediagate.stores.jobs import JobStore
from mediagate.stores.ledger import Ledger
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.migrate import upgrade

__all__ = ["StoreConfigError", "Stores", "check_store_url", "open_stores"]


class _Closes(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=_Closes)


class StoreConfigError(ValueError):
    """A MEDIAGATE_STORE_URL no backend can use."""


@dataclass(frozen=True)
class Stores:
    jobs: JobStore  # video jobs
    ledger: Ledger  # rate limits, concurrency, budgets, usage
    idempotency: IdempotencyStore  # Idempotency-Key records
    database: Database  # the records (MEDIAGATE_DATABASE_URL), migrated to the newest version


def check_store_url(url: str) -> Literal["sqlite", "redis"]:
    """The backend ("sqlite" or "redis") for a MEDIAGATE_STORE_URL, or a clear error."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite" and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return "sqlite"
    if scheme in ("redis", "rediss", "unix"):
        return "redis"
    raise StoreConfigError(
        "MEDIAGATE_STORE_URL must be sqlite:///path/to/jobs.sqlite3 or redis://host:port/db, "
        f"got {url.split('://')[0]}://..."
    )


@asynccontextmanager
async def open_stores(
    url: str,
    prefix: str,
    *,
    database_url: str | None = None,
    pool_size: int = 10,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Stores]:
    """The job store, ledger and Idempotency-Key store on the backend `url` names, each on a
    connection of its own; closed (in reverse order) when the block ends.

    `prefix` names the Redis keys (SQLite has a file of its own and ignores it). `clock` is what
    the SQLite backends read leases, expiry and days from; Redis reads its own (TIME, PEXPIRE)
    so that replicas with skewed clocks agree, and so ignores it.
    """
    kind = check_store_url(url)
    if database_url is None:
        if kind != "sqlite":
            raise StoreConfigError("a Redis store needs a records database (database_url)")
        database_url = url  # the records in the same SQLite file
    async with AsyncExitStack() as stack:
        database = await Database.open(database_url, pool_size=pool_size, what="database")
        stack.push_async_callback(database.close)
        await upgrade(database)  # under a lock; one read when nothing is pending

        async def held(opening: Awaitable[S]) -> S:
            store = await opening
            stack.push_async_callback(store.close)
            return store

        jobs: JobStore
        ledger: Ledger
        idempotency: IdempotencyStore
        # Each backend is imported when the URL names it: a SQLite gateway never loads the
        # Redis client (~45 ms of a cold start), nor a Redis one sqlite3's backends.
        if kind == "sqlite":
            from mediagate.stores.sqlite.idempotency import SqliteIdempotency
            from mediagate.stores.sqlite.jobs import SqliteJobStore
            from mediagate.stores.sqlite.ledger import SqliteLedger

            path = url.removeprefix("sqlite:///")
            jobs = await held(SqliteJobStore.open(path, clock))
            ledger = await held(SqliteLedger.open(path, clock))
            idempotency = await held(SqliteIdempotency.open(path, clock))
        else:
            from mediagate.stores.redis.idempotency import RedisIdempotency
            from mediagate.stores.redis.jobs import RedisJobStore
            from mediagate.stores.redis.ledger import RedisLedger

            jobs = await held(RedisJobStore.open(url, prefix))
            ledger = await held(RedisLedger.open(url, prefix))
            idempotency = await held(RedisIdempotency.open(url, prefix))
        yield Stores(jobs=jobs, ledger=ledger, idempotency=idempotency, database=database)

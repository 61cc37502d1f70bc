"""The gateway's shared state: one interface module per concept, two backends behind each.

- interfaces and their records: `jobs` (video jobs), `ledger` (limits, budgets, usage),
  `idempotency` (Idempotency-Key records);
- `sql/`: the records' database (SQLite or PostgreSQL), its migrations, and the job store;
- backends: `sqlite/` (one host, the default) and `redis/` (several replicas), each holding
  `db` (its connection and its one error mapping) and `ledger`, `idempotency`;
- `importing`: `mediagate db import`, from a store of the old MEDIAGATE_STORE_URL;
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
from mediagate.stores.ledger import Coordination, Ledger
from mediagate.stores.sql.db import Database, check_database_url
from mediagate.stores.sql.jobs import SqlJobStore
from mediagate.stores.sql.ledger import SqlLedger
from mediagate.stores.sql.migrate import upgrade

__all__ = ["StoreConfigError", "Stores", "check_coordination", "check_store_url", "open_stores"]


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
    """The backend ("sqlite" or "redis") of a store URL, or a clear error (what
    `mediagate db import` reads: today's MEDIAGATE_STORE_URL)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite" and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return "sqlite"
    if scheme in ("redis", "rediss", "unix"):
        return "redis"
    raise StoreConfigError(
        "MEDIAGATE_STORE_URL must be sqlite:///path/to/jobs.sqlite3 or redis://host:port/db, "
        f"got {url.split('://')[0]}://..."
    )


def check_coordination(database_url: str, redis_url: str | None) -> Literal["sqlite", "redis"]:
    """Where replicas coordinate: Redis when MEDIAGATE_REDIS_URL is set, else the SQLite
    database itself (one host). PostgreSQL means replicas, so it needs Redis."""
    if redis_url:
        if check_store_url(redis_url) != "redis":
            raise StoreConfigError("MEDIAGATE_REDIS_URL must be redis://host:port/db")
        return "redis"
    if check_database_url(database_url) != "sqlite":
        raise StoreConfigError(
            "MEDIAGATE_DATABASE_URL names PostgreSQL (several replicas): set MEDIAGATE_REDIS_URL "
            "too, where the replicas share rate windows, concurrency slots and Idempotency-Keys"
        )
    return "sqlite"


@asynccontextmanager
async def open_stores(
    database_url: str,
    prefix: str,
    *,
    redis_url: str | None = None,
    pool_size: int = 10,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Stores]:
    """The records' database (migrated) and the job store, ledger and Idempotency-Key store
    over it and the coordination backend; closed (in reverse order) when the block ends.

    `prefix` names the Redis keys. `clock` is what the SQL and SQLite stores read leases,
    expiry and days from; Redis reads its own (TIME, PEXPIRE) so that replicas with skewed
    clocks agree, and so ignores it.
    """
    kind = check_coordination(database_url, redis_url)
    async with AsyncExitStack() as stack:
        database = await Database.open(database_url, pool_size=pool_size, what="database")
        stack.push_async_callback(database.close)
        await upgrade(database)  # under a lock; one read when nothing is pending

        async def held(opening: Awaitable[S]) -> S:
            store = await opening
            stack.push_async_callback(store.close)
            return store

        jobs: JobStore = SqlJobStore(database, clock)  # video jobs and their outbox: records
        ledger: Ledger
        coordination: Coordination
        idempotency: IdempotencyStore
        # Each backend is imported when the configuration names it: a SQLite gateway never
        # loads the Redis client (~45 ms of a cold start).
        if kind == "sqlite":
            from mediagate.stores.sqlite.idempotency import SqliteIdempotency
            from mediagate.stores.sqlite.ledger import SqliteCoordination

            path = database_url.removeprefix("sqlite:///")
            coordination = await held(SqliteCoordination.open(path, clock))
            idempotency = await held(SqliteIdempotency.open(path, clock))
        else:
            from mediagate.stores.redis.idempotency import RedisIdempotency
            from mediagate.stores.redis.ledger import RedisCoordination

            assert redis_url is not None
            coordination = await held(RedisCoordination.open(redis_url, prefix))
            idempotency = await held(RedisIdempotency.open(redis_url, prefix))
        # Money in the records' database; rate windows and slots in the coordination backend.
        ledger = SqlLedger(database, coordination, clock)
        yield Stores(jobs=jobs, ledger=ledger, idempotency=idempotency, database=database)

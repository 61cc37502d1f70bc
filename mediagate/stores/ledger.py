"""Shared accounting state: rate limits, concurrency, budget reservations and usage totals.

Every replica must enforce the same limits, so all of it lives in the store (SQLite on one
host, Redis for several replicas), and every check-and-change is one atomic step there (a Lua
script, or one SQLite transaction): two replicas can never both take the last slot or the last
dollar. Budgets work by reservation: a request reserves its estimated (upper-bound) cost before
it goes upstream and settles to its actual cost when done, exactly once, by id.

This module is the interface (`Ledger`) and its records; the backends are
`mediagate.stores.sqlite.ledger` and `mediagate.stores.redis.ledger`, opened by
`mediagate.stores.open_stores`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("mediagate")

DAY_S = 86_400
# The model a reservation is booked under when it expired unsettled (at its reserved amount).
UNSETTLED = "(unsettled)"


def day_of(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def month_of(now: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(now))


@dataclass(frozen=True)
class Spend:
    day: float  # settled USD today (UTC)
    month: float  # settled USD this month (UTC)
    reserved: float  # USD held by requests still running


@dataclass(frozen=True)
class Charge:
    """What one settled request adds to its key's totals."""

    model: str
    cost: float
    images: int = 0
    video_seconds: int = 0

    def __post_init__(self) -> None:
        # The ledger's boundary: pricing never makes a negative or non-finite amount (usage
        # it does not believe is booked at the estimate), and if a bug ever did, it would book
        # nothing rather than a credit, and no metric's inc() would raise on it.
        for name in ("cost", "images", "video_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                log.error(
                    "refused a negative or non-finite charge: booked 0",
                    extra={"fields": {"model": self.model, name: str(value)[:40]}},
                )
                object.__setattr__(self, name, 0 if name != "cost" else 0.0)


@dataclass(frozen=True)
class UsageRow:
    key: str
    day: str
    model: str
    requests: int
    images: int
    video_seconds: int
    cost: float


class Ledger(Protocol):
    """Implemented by the SQLite and the Redis backend (stores/sqlite/, stores/redis/), which
    repeat these signatures on purpose: a duplicates report pairing them is expected."""

    async def take_rate(self, key: str, rpm: int | None, ipm: int | None, images: int) -> float:
        """Take one request and `images` images from the key's per-minute buckets, both or
        neither; 0 if taken, else the seconds until they would be."""

    async def acquire(self, key: str, lease: str, limit: int, ttl_s: float) -> bool:
        """Hold one of the key's `limit` concurrent slots until `release` (or `ttl_s`, in case
        the replica holding it dies)."""

    async def release(self, key: str, lease: str) -> None: ...

    async def reserve(
        self,
        key: str,
        reservation: str,
        amount: float,
        day_limit: float | None,
        month_limit: float | None,
        ttl_s: float,
    ) -> Spend | None:
        """Hold `amount` USD against the budgets; None if settled spend plus what others hold
        plus this would pass a limit. The spend as it was before this reservation otherwise."""

    async def settle(self, key: str, reservation: str, charge: Charge) -> bool:
        """Drop the reservation and book the actual charge: once per reservation id (False if
        it was booked before). A reservation that expires unsettled is booked at its amount,
        under the model UNSETTLED, the next time the key's spend is read; a settle after that
        is a no-op (the amount was the request's upper bound)."""

    async def settle_many(self, charges: list[tuple[str, str, Charge]]) -> list[bool]:
        """`settle` for each (key, reservation, charge), in one store round trip where the
        backend can: the usage of requests that held nothing, booked in batches off their
        request path (mediagate.accounting.metering)."""

    async def spend(self, key: str) -> Spend: ...

    async def usage(self, key: str, days: list[str]) -> list[UsageRow]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

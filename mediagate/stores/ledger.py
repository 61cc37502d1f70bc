"""Shared accounting state: rate limits, concurrency, budget reservations and usage totals.

Every replica must enforce the same limits, so all of it is shared, and every check-and-change
is one atomic step: two replicas can never both take the last slot or the last dollar.

- Money (budgets, reservations, settlements, usage) is in the records' database
  (`mediagate.stores.sql.ledger.SqlLedger`, SQLite or PostgreSQL): a reservation is one
  conditional UPDATE per budget row it holds (the key's, and its team's), a settlement one
  transaction keyed by the request's (or job's) id, with its rollup rows.
- Coordination that must be fast and may be lost (rate windows, concurrency slots) is a
  `Coordination`: the SQLite file on one host (`mediagate.stores.sqlite.ledger`), Redis for
  replicas (`mediagate.stores.redis.ledger`).

This module is the interface (`Ledger`) and its records; `mediagate.stores.open_stores` opens
the implementation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal, Protocol

log = logging.getLogger("mediagate")

DAY_S = 86_400
# The model a reservation is booked under when it expired unsettled (at its reserved amount).
UNSETTLED = "(unsettled)"


def day_of(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def month_of(now: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(now))


def hour_of(now: float) -> str:
    """The hour rollups' bucket: `YYYY-MM-DDTHH` (UTC)."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(now))


# Whose budget a reservation was refused on: the key's own, or its team's (shared by its keys).
OwnerKind = Literal["key", "team"]


@dataclass(frozen=True)
class Budgets:
    """The limits (USD) a reservation must fit: the key's and its team's, each per UTC day and
    month; None is no limit."""

    day: float | None = None
    month: float | None = None
    team_day: float | None = None
    team_month: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.day, self.month, self.team_day, self.team_month))


@dataclass(frozen=True)
class Spend:
    day: float  # settled USD today (UTC)
    month: float  # settled USD this month (UTC)
    reserved: float  # USD held by requests still running


@dataclass(frozen=True)
class Charge:
    """What one settled request adds to its key's (and team's) totals, and under which route
    its rollups count it."""

    model: str
    cost: float
    images: int = 0
    video_seconds: int = 0
    team: str = ""  # the key's team ("" none)
    route: str = ""  # the route that served ("" none: refused, or never sent)

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


class Coordination(Protocol):
    """What replicas share that must be fast and may be lost: rate windows and concurrency
    slots (the SQLite file on one host, Redis for replicas)."""

    async def take_rate(self, key: str, rpm: int | None, ipm: int | None, images: int) -> float:
        """Take one request and `images` images from the key's per-minute buckets, both or
        neither; 0 if taken, else the seconds until they would be."""

    async def acquire(self, key: str, lease: str, limit: int, ttl_s: float) -> bool:
        """Hold one of the key's `limit` concurrent slots until `release` (or `ttl_s`, in case
        the replica holding it dies)."""

    async def release(self, key: str, lease: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Ledger(Coordination, Protocol):
    """Money in the records' database, coordination delegated (mediagate.stores.sql.ledger)."""

    async def reserve(
        self,
        key: str,
        reservation: str,
        amount: float,
        budgets: Budgets,
        ttl_s: float,
        team: str = "",
    ) -> OwnerKind | None:
        """Hold `amount` USD against each budget of the key and of its `team` that has a limit,
        all or none: None if held, else whose budget ("key" or "team") it does not fit."""

    async def settle(self, key: str, reservation: str, charge: Charge) -> bool:
        """Drop the reservation and book the actual charge: once per reservation id (False if
        it was booked before). A reservation that expires unsettled is booked at its amount,
        under the model UNSETTLED, the next time the key's (or its team's) spend is read; a
        settle after that is a no-op (the amount was the request's upper bound)."""

    async def settle_many(self, charges: list[tuple[str, str, Charge]]) -> list[bool]:
        """`settle` for each (key, reservation, charge), in one transaction: the usage of
        requests that held nothing, booked in batches off their request path
        (mediagate.accounting.metering)."""

    async def spend(self, owner: str, kind: OwnerKind = "key") -> Spend:
        """A key's (or a team's) settled spend today and this month, and what its running
        requests hold."""

    async def usage(self, key: str, days: list[str]) -> list[UsageRow]: ...

    # `mediagate db import` (mediagate.stores.importing): an old store's budget state moved
    # into this one, each once (a second run moves nothing).

    async def import_spend(self, owner: str, period: str, amount_usd: float) -> None:
        """A key's settled spend of a period (YYYY-MM-DD or YYYY-MM)."""

    async def import_reservation(
        self, key: str, reservation: str, amount_usd: float, expires_at: float
    ) -> None:
        """A key's running reservation, held against its budgets of today."""

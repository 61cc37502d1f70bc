"""The ledger's money in the records' database (SQLite or PostgreSQL), exactly once by
construction; its rate windows and concurrency slots delegated to a `Coordination` (the SQLite
file on one host, Redis for replicas).

- A reservation is ONE conditional write per budget row it holds (the key's day and month, its
  team's day and month: each that has a limit), all in one transaction:
  `UPDATE budgets SET reserved_micros = reserved_micros + ? WHERE ... AND spent_micros +
  reserved_micros + ? <= ?`. A row without room changes nothing and rolls the whole
  transaction back: nothing is held. There is no read before the write, so there is no race to
  lose: on PostgreSQL (READ COMMITTED) the row lock serialises two replicas' UPDATEs, and the
  second one's WHERE sees the first one's hold; SQLite serialises writers.
- A settlement is one transaction keyed by its id (the request's, or the video job's):
  `INSERT INTO settlements ... ON CONFLICT (id) DO NOTHING`, and only if that inserted a row,
  the spend (key and team, day and month), the usage rollups (hour and day) and the request
  log's row. The reservation of that id, if any, ends with it (deleted, what it held given
  back). A retry, a second replica or the expiry sweep therefore books a charge once.
- A reservation that expires unsettled (its replica died, its booking failed) is booked at its
  amount, under the model UNSETTLED, by the same settlement, the next time its key's or team's
  spend is read or a reservation made.

Every statement is written once for both engines; rows any transaction locks are locked in one
order (sorted), so two settlements never deadlock each other. Amounts come in as USD floats,
are kept as integer micro-USD (rounded half-up), and go out as USD floats.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from mediagate.stores.ledger import (
    UNSETTLED,
    Budgets,
    Charge,
    Coordination,
    OwnerKind,
    Spend,
    UsageRow,
    day_of,
    hour_of,
    month_of,
)
from mediagate.stores.sql.db import Database, Tx
from mediagate.stores.sql.requestlog import complete_rows

__all__ = ["SqlLedger", "to_micros", "to_usd"]


def to_micros(usd: float) -> int:
    """USD as integer micro-USD, rounded half-up (the shortest decimal the float prints as)."""
    return int((Decimal(str(usd)) * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_usd(micros: Any) -> float:
    return int(micros or 0) / 1_000_000


class _Short(Exception):
    """A budget row without room: the reservation's transaction is rolled back."""

    def __init__(self, kind: OwnerKind) -> None:
        self.kind = kind


class _Expired(Exception):
    """The key or team has reservations that expired unsettled: booked before a new one."""


@dataclass(frozen=True)
class _Item:
    """One settlement to book. `cost_micros` None: the amount its reservation held (an
    expired reservation's booking; nothing is booked if another settlement took it first)."""

    id: str
    key: str
    model: str
    cost_micros: int | None
    images: int = 0
    video_seconds: int = 0
    team: str = ""
    route: str = ""


def _item(key: str, reservation: str, charge: Charge) -> _Item:
    return _Item(
        reservation,
        key,
        charge.model,
        to_micros(charge.cost),
        charge.images,
        charge.video_seconds,
        charge.team,
        charge.route,
    )


_HELD = (
    "DELETE FROM reservations WHERE id = ? "
    "RETURNING key, team, amount_micros, key_day, key_month, team_day, team_month"
)
_SETTLED = (
    "INSERT INTO settlements "
    "(id, at, key, team, model, route, cost_micros, images, video_seconds) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_BUDGET = (
    "INSERT INTO budgets (owner_kind, owner, period, spent_micros, reserved_micros) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner_kind, owner, period) DO UPDATE SET "
    "spent_micros = budgets.spent_micros + excluded.spent_micros, "
    "reserved_micros = budgets.reserved_micros + excluded.reserved_micros"
)
_ROLLUP = (
    "INSERT INTO usage_rollups "
    "(grain, bucket, key, team, model, route, images, video_seconds, cost_micros) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (grain, bucket, key, team, model, route) DO UPDATE SET "
    "images = usage_rollups.images + excluded.images, "
    "video_seconds = usage_rollups.video_seconds + excluded.video_seconds, "
    "cost_micros = usage_rollups.cost_micros + excluded.cost_micros"
)
# The one write that holds an amount on a budget row: with a limit, conditional on the room
# left ("AND spent_micros + reserved_micros + ? <= ?").
_HOLD = (
    "UPDATE budgets SET reserved_micros = reserved_micros + ? "
    "WHERE owner_kind = ? AND owner = ? AND period = ?"
)
_RESERVED = {
    "key": "SELECT COALESCE(SUM(amount_micros), 0) FROM reservations WHERE key = ?",
    "team": "SELECT COALESCE(SUM(amount_micros), 0) FROM reservations WHERE team = ?",
}
_EXPIRED = "SELECT id FROM reservations WHERE {owner} = ? AND expires < ? ORDER BY id"


def _book(tx: Tx, items: Sequence[_Item], now: float) -> list[bool]:
    """Book each item once by its id (True where this call booked it), in one transaction."""
    booked = [False] * len(items)
    budgets: dict[tuple[str, str, str], list[int]] = {}  # row -> [spent, reserved] deltas
    rollups: dict[tuple[str, str, str, str, str, str], list[int]] = {}
    logged: list[tuple[int, int, int, str]] = []
    day, month, hour = day_of(now), month_of(now), hour_of(now)
    # Settlement rows first, in id order: two batches sharing an id wait for each other
    # before either locks anything else.
    for index in sorted(range(len(items)), key=lambda i: items[i].id):
        item = items[index]
        held = tx.execute(_HELD, (item.id,)).fetchone()
        # A reservation ends with its id's settlement: what it held is given back (once: one
        # transaction deletes the row).
        team = item.team
        if held is not None:
            team = team or held["team"]
            for kind, owner, column in (
                ("key", held["key"], "key_day"),
                ("key", held["key"], "key_month"),
                ("team", held["team"], "team_day"),
                ("team", held["team"], "team_month"),
            ):
                if held[column] is not None:
                    budgets.setdefault((kind, owner, held[column]), [0, 0])[1] -= int(
                        held["amount_micros"]
                    )
        key, cost = item.key, item.cost_micros
        if cost is None:  # an expired reservation's booking, under the key that made it
            if held is None:
                continue  # settled (or booked) by someone else first
            key, cost = held["key"], int(held["amount_micros"])
        inserted = tx.execute(
            _SETTLED,
            (
                item.id,
                now,
                key,
                team,
                item.model,
                item.route,
                cost,
                item.images,
                item.video_seconds,
            ),
        ).rowcount
        if not inserted:
            continue
        booked[index] = True
        owners = [("key", key)] + ([("team", team)] if team else [])
        for kind, owner in owners:
            for period in (day, month):
                budgets.setdefault((kind, owner, period), [0, 0])[0] += cost
        # Written for a settlement of nothing too (a failure): its rows show it was settled.
        for grain, bucket in (("hour", hour), ("day", day)):
            row = rollups.setdefault((grain, bucket, key, team, item.model, item.route), [0, 0, 0])
            row[0] += item.images
            row[1] += item.video_seconds
            row[2] += cost
        logged.append((cost, item.images, item.video_seconds, item.id))
    # Then every other row, each table in one sorted order (no two transactions lock the same
    # rows in opposite orders).
    tx.executemany(
        _BUDGET,
        [
            (*row, spent, reserved)
            for row, (spent, reserved) in sorted(budgets.items())
            if spent or reserved
        ],
    )
    tx.executemany(_ROLLUP, [(*row, *sums) for row, sums in sorted(rollups.items())])
    # The request log's rows, when its writer has written them already; when not, the writer
    # completes them from `settlements` (the contract between the two).
    for cost, images, seconds, settled in sorted(logged, key=lambda r: r[3]):
        complete_rows(tx, settled, cost, images, seconds)
    return booked


class SqlLedger:
    """The `Ledger` (mediagate.stores.ledger): money on `db`, coordination on `coordination`."""

    def __init__(
        self,
        db: Database,
        coordination: Coordination,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._coordination = coordination
        self._clock = clock

    # --- Coordination, delegated ------------------------------------------------------------

    async def take_rate(self, key: str, rpm: int | None, ipm: int | None, images: int) -> float:
        return await self._coordination.take_rate(key, rpm, ipm, images)

    async def acquire(self, key: str, lease: str, limit: int, ttl_s: float) -> bool:
        return await self._coordination.acquire(key, lease, limit, ttl_s)

    async def release(self, key: str, lease: str) -> None:
        await self._coordination.release(key, lease)

    async def ping(self) -> None:
        """The coordination store (/readyz checks the database on its own)."""
        await self._coordination.ping()

    async def close(self) -> None:
        """Nothing of its own: the database and the coordination are closed by their opener
        (mediagate.stores.open_stores)."""

    # --- Money ------------------------------------------------------------------------------

    async def reserve(
        self,
        key: str,
        reservation: str,
        amount: float,
        budgets: Budgets,
        ttl_s: float,
        team: str = "",
    ) -> OwnerKind | None:
        now = self._clock()
        micros = to_micros(amount)
        day, month = day_of(now), month_of(now)
        # An owner (the key, its team) with a limit is held on its day AND month rows (a limit
        # added to the other period later sees what is running); one without, on neither.
        holds: dict[str, str | None] = {}
        rows: list[tuple[OwnerKind, str, str, int | None]] = []
        owners: list[tuple[OwnerKind, str, float | None, float | None]] = [
            ("key", key, budgets.day, budgets.month),
            ("team", team, budgets.team_day, budgets.team_month),
        ]
        for kind, owner, day_limit, month_limit in owners:
            held = bool(owner) and (day_limit is not None or month_limit is not None)
            for period, limit, column in ((day, day_limit, "day"), (month, month_limit, "month")):
                holds[f"{kind}_{column}"] = period if held else None
                if held:
                    rows.append((kind, owner, period, None if limit is None else to_micros(limit)))
        if not rows:
            return None  # no limit to hold anything against

        def work(tx: Tx, sweep: bool) -> None:
            if sweep and self._expired(tx, key, team, now):
                raise _Expired
            for kind, owner, period, limit in sorted(rows):
                tx.execute(
                    "INSERT INTO budgets (owner_kind, owner, period) VALUES (?, ?, ?) "
                    "ON CONFLICT (owner_kind, owner, period) DO NOTHING",
                    (kind, owner, period),
                )
                if limit is None:
                    fits = tx.execute(_HOLD, (micros, kind, owner, period)).rowcount
                else:
                    fits = tx.execute(
                        _HOLD + " AND spent_micros + reserved_micros + ? <= ?",
                        (micros, kind, owner, period, micros, limit),
                    ).rowcount
                if not fits:
                    raise _Short(kind)  # rolls back every hold this transaction took
            tx.execute(
                "INSERT INTO reservations (id, key, team, amount_micros, expires, key_day, "
                "key_month, team_day, team_month) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (reservation, key, team, micros, now + ttl_s, *holds.values()),
            )

        try:
            try:
                await self._db.transaction(lambda tx: work(tx, sweep=True))
            except _Expired:
                await self._sweep(key, team)
                await self._db.transaction(lambda tx: work(tx, sweep=False))
        except _Short as short:
            return short.kind
        return None

    @staticmethod
    def _expired(tx: Tx, key: str, team: str, now: float) -> list[str]:
        found = [r[0] for r in tx.execute(_EXPIRED.format(owner="key"), (key, now)).fetchall()]
        if team:
            found += [
                r[0] for r in tx.execute(_EXPIRED.format(owner="team"), (team, now)).fetchall()
            ]
        return sorted(set(found))

    async def _sweep(self, key: str, team: str) -> None:
        """Book the key's and team's reservations that expired unsettled, at their amounts."""

        def work(tx: Tx) -> None:
            now = self._clock()
            expired = self._expired(tx, key, team, now)
            _book(tx, [_Item(rid, "", UNSETTLED, None) for rid in expired], now)

        await self._db.transaction(work)

    async def settle(self, key: str, reservation: str, charge: Charge) -> bool:
        (booked,) = await self.settle_many([(key, reservation, charge)])
        return booked

    async def settle_many(self, charges: list[tuple[str, str, Charge]]) -> list[bool]:
        if not charges:
            return []
        items = [_item(key, reservation, charge) for key, reservation, charge in charges]
        return await self._db.transaction(lambda tx: _book(tx, items, self._clock()))

    async def spend(self, owner: str, kind: OwnerKind = "key") -> Spend:
        column = "key" if kind == "key" else "team"

        def read(tx: Tx) -> tuple[bool, Spend]:
            now = self._clock()
            expired = tx.execute(_EXPIRED.format(owner=column), (owner, now)).fetchall()
            totals = {
                row[0]: to_usd(row[1])
                for row in tx.execute(
                    "SELECT period, spent_micros FROM budgets "
                    "WHERE owner_kind = ? AND owner = ? AND period IN (?, ?)",
                    (kind, owner, day_of(now), month_of(now)),
                ).fetchall()
            }
            reserved = tx.scalar(_RESERVED[kind], (owner,))
            day, month = totals.get(day_of(now), 0.0), totals.get(month_of(now), 0.0)
            return bool(expired), Spend(day, month, to_usd(reserved))

        expired, spend = await self._db.run(read)
        if expired:
            # A reservation that outlived its request was never settled: booked at its amount
            # (the request's upper bound), never dropped; then read again.
            if kind == "key":
                await self._sweep(owner, "")
            else:
                await self._sweep("", owner)
            _, spend = await self._db.run(read)
        return spend

    async def usage(self, key: str, days: list[str]) -> list[UsageRow]:
        """The key's day rollups, summed over its team and routes, per (day, model); requests
        that named no model (a read of the usage itself, of the models) are not usage."""
        if not days:
            return []

        def read(tx: Tx) -> list[Any]:
            return tx.execute(
                "SELECT bucket, model, SUM(requests), SUM(images), SUM(video_seconds), "
                "SUM(cost_micros) FROM usage_rollups "
                "WHERE grain = 'day' AND key = ? AND bucket >= ? AND bucket <= ? AND model <> '' "
                "GROUP BY bucket, model ORDER BY bucket, model",
                (key, min(days), max(days)),
            ).fetchall()

        wanted = set(days)
        return [
            UsageRow(key, row[0], row[1], int(row[2]), int(row[3]), int(row[4]), to_usd(row[5]))
            for row in await self._db.run(read)
            if row[0] in wanted
        ]

    # --- `mediagate db import`: an old store's budget state, moved once ----------------------

    async def import_spend(self, owner: str, period: str, amount_usd: float) -> None:
        await import_spend(self._db, owner, period, amount_usd, self._clock())

    async def import_reservation(
        self, key: str, reservation: str, amount_usd: float, expires_at: float
    ) -> None:
        await import_reservation(self._db, key, reservation, amount_usd, expires_at, self._clock())


async def _import_once(db: Database, marker: str, now: float, work: Callable[[Tx], object]) -> bool:
    """`work` in a transaction, unless an import with this marker ran before: True if it ran."""

    def once(tx: Tx) -> bool:
        if not tx.execute(
            "INSERT INTO ledger_imports (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            (marker, now),
        ).rowcount:
            return False
        work(tx)
        return True

    return await db.transaction(once)


async def import_spend(
    db: Database, owner: str, period: str, amount_usd: float, now: float
) -> bool:
    """Add a key's settled spend of a period (YYYY-MM-DD or YYYY-MM) to its budget row, once
    (True if this call added it)."""
    row = ("key", owner, period, to_micros(amount_usd), 0)
    return await _import_once(
        db, f"spend:{owner}:{period}", now, lambda tx: tx.execute(_BUDGET, row)
    )


async def import_reservation(
    db: Database, key: str, reservation: str, amount_usd: float, expires_at: float, now: float
) -> bool:
    """Hold a key's running reservation against its budgets of today, once (True if this call
    held it); it settles, or expires and is booked, as any other."""

    def work(tx: Tx) -> None:
        if tx.scalar("SELECT COUNT(*) FROM settlements WHERE id = ?", (reservation,)):
            return  # settled here already
        micros = to_micros(amount_usd)
        day, month = day_of(now), month_of(now)
        if not tx.execute(
            "INSERT INTO reservations (id, key, team, amount_micros, expires, key_day, "
            "key_month) VALUES (?, ?, '', ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (reservation, key, micros, expires_at, day, month),
        ).rowcount:
            return
        for period in sorted((day, month)):
            tx.execute(_BUDGET, ("key", key, period, 0, micros))

    return await _import_once(db, f"reservation:{reservation}", now, work)

"""The ledger's atomic steps, on both deployments: money in SQLite with coordination in the
same file, and money in PostgreSQL with coordination in Redis (both for real).

Time moves by `store_clock.advance`: on SQLite a fake clock, on PostgreSQL + Redis (Redis reads
its own clock in its scripts) a real wait, so the TTLs here are a fraction of a second."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mediagate.accounting.clients import KeyPolicy, TeamPolicy
from mediagate.accounting.metering import Metering
from mediagate.context import RequestContext, begin, end
from mediagate.errors import QuotaExceeded
from mediagate.observability.metrics import Metrics
from mediagate.stores.ledger import UNSETTLED, Budgets, Charge, Ledger, day_of, hour_of
from mediagate.stores.sql.db import Database, Tx
from mediagate.stores.sql.ledger import SqlLedger

from .conftest import StoreClock, StoreUrl

Scenario = Callable[[Ledger], Awaitable[None]]
DbScenario = Callable[[Ledger, Database], Awaitable[None]]


@pytest.fixture
def run(store_url: StoreUrl, store_clock: StoreClock) -> Callable[[Scenario], None]:
    def go(scenario: Scenario) -> None:
        async def main() -> None:
            async with store_url.open(store_clock) as stores:
                await scenario(stores.ledger)

        asyncio.run(main())

    return go


@pytest.fixture
def run_db(store_url: StoreUrl, store_clock: StoreClock) -> Callable[[DbScenario], None]:
    """A scenario that reads the records' tables too."""

    def go(scenario: DbScenario) -> None:
        async def main() -> None:
            async with store_url.open(store_clock) as stores:
                await scenario(stores.ledger, stores.database)

        asyncio.run(main())

    return go


async def rows(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    def read(tx: Tx) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in tx.execute(sql, params).fetchall()]

    return await db.run(read)


def day(limit: float) -> Budgets:
    return Budgets(day=limit)


def test_settle_books_once(run: Callable[[Scenario], None], store_clock: StoreClock) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.reserve("k", "r1", 0.5, day(1.0), ttl_s=60) is None  # held
        assert (await ledger.spend("k")).reserved == pytest.approx(0.5)
        assert await ledger.settle("k", "r1", Charge("m", 0.4, images=1))
        assert not await ledger.settle("k", "r1", Charge("m", 0.4, images=1))  # once only
        spend = await ledger.spend("k")
        assert (spend.day, spend.month, spend.reserved) == pytest.approx((0.4, 0.4, 0))
        (row,) = await ledger.usage("k", [day_of(store_clock())])
        # Requests are counted by the request log's writer, not by the settlement.
        assert (row.model, row.requests, row.images) == ("m", 0, 1)
        assert row.cost == pytest.approx(0.4)

    run(scenario)


def test_a_reservation_that_expires_unsettled_is_booked_not_dropped(
    run: Callable[[Scenario], None], store_clock: StoreClock
) -> None:
    # Issue 14, item 1: a request whose settle never reached the ledger (its replica died,
    # its booking failed) must not be free: its reservation, the request's upper bound, is
    # booked when it expires, and a late settle cannot book it again.
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.reserve("k", "r1", 0.5, day(1.0), ttl_s=0.2) is None
        await store_clock.advance(0.3)
        spend = await ledger.spend("k")
        assert (spend.day, spend.month, spend.reserved) == pytest.approx((0.5, 0.5, 0))
        assert not await ledger.settle("k", "r1", Charge("m", 0.4, images=1))
        assert (await ledger.spend("k")).day == pytest.approx(0.5)
        (row,) = await ledger.usage("k", [day_of(store_clock())])
        assert row.model == UNSETTLED
        assert row.cost == pytest.approx(0.5)

    run(scenario)


def test_reservations_count_against_the_budget(run: Callable[[Scenario], None]) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.reserve("k", "a", 0.6, day(1.0), ttl_s=60) is None
        assert await ledger.reserve("k", "b", 0.6, day(1.0), ttl_s=60) == "key"
        assert await ledger.reserve("k", "c", 0.6, Budgets(month=1.0), ttl_s=60) == "key"
        assert await ledger.settle("k", "a", Charge("m", 0.1))
        assert await ledger.reserve("k", "b", 0.6, day(1.0), ttl_s=60) is None
        assert await ledger.reserve("other", "x", 0.9, day(1.0), ttl_s=60) is None

    run(scenario)


def test_concurrent_reservations_never_overspend(run: Callable[[Scenario], None]) -> None:
    async def scenario(ledger: Ledger) -> None:
        results = await asyncio.gather(
            *(ledger.reserve("k", uuid.uuid4().hex, 0.3, day(1.0), 60) for _ in range(10))
        )
        assert results.count(None) == 3 and results.count("key") == 7

    run(scenario)


def test_token_buckets_take_both_or_neither_and_refill(
    run: Callable[[Scenario], None], store_clock: StoreClock
) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.take_rate("k", 120, 3, images=2) == 0
        wait = await ledger.take_rate("k", 120, 3, images=2)  # 1 image left: refused...
        assert 0 < wait <= 20
        assert await ledger.take_rate("k", 120, 3, images=1) == 0  # ...and nothing was taken
        assert await ledger.take_rate("k", None, None, images=50) == 0  # no limits, no wait
        await store_clock.advance(0.55)  # 120 per minute: one request back every 0.5 s
        assert await ledger.take_rate("k", 120, None, images=0) == 0

    run(scenario)


def test_leases_are_limited_released_and_expire(
    run: Callable[[Scenario], None], store_clock: StoreClock
) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.acquire("k", "a", 2, ttl_s=60)
        assert await ledger.acquire("k", "b", 2, ttl_s=0.2)
        assert not await ledger.acquire("k", "c", 2, ttl_s=60)
        await ledger.release("k", "a")
        assert await ledger.acquire("k", "c", 2, ttl_s=60)
        await store_clock.advance(0.3)  # "b"'s holder died: its slot comes back
        assert await ledger.acquire("k", "d", 2, ttl_s=60)

    run(scenario)


def test_a_team_budget_is_shared_by_its_keys(run: Callable[[Scenario], None]) -> None:
    team = Budgets(team_day=1.0)

    async def scenario(ledger: Ledger) -> None:
        assert await ledger.reserve("a", "ra", 0.6, team, ttl_s=60, team="t") is None
        assert await ledger.reserve("b", "rb", 0.6, team, ttl_s=60, team="t") == "team"
        assert await ledger.settle("a", "ra", Charge("m", 0.3, team="t"))
        assert await ledger.reserve("b", "rb", 0.6, team, ttl_s=60, team="t") is None
        assert await ledger.settle("b", "rb", Charge("m", 0.6, team="t"))
        spend = await ledger.spend("t", "team")
        assert (spend.day, spend.month, spend.reserved) == pytest.approx((0.9, 0.9, 0))
        assert (await ledger.spend("a")).day == pytest.approx(0.3)
        assert (await ledger.spend("b")).day == pytest.approx(0.6)
        # Another team's budget is its own.
        assert await ledger.reserve("c", "rc", 0.6, team, ttl_s=60, team="u") is None

    run(scenario)


def test_a_reservation_that_fits_the_key_but_not_the_team_holds_nothing(
    run_db: Callable[[DbScenario], None],
) -> None:
    async def scenario(ledger: Ledger, db: Database) -> None:
        both = Budgets(day=5.0, month=50.0, team_day=1.0, team_month=10.0)
        assert await ledger.reserve("a", "r1", 0.8, both, ttl_s=60, team="t") is None
        assert await ledger.reserve("b", "r2", 0.8, both, ttl_s=60, team="t") == "team"
        # The key's rows it fitted were rolled back with the team's: b holds nothing.
        assert (await ledger.spend("b")).reserved == 0
        held = await rows(
            db, "SELECT owner_kind, owner, reserved_micros FROM budgets ORDER BY 1, 2, 3"
        )
        assert set(held) == {("key", "a", 800_000), ("team", "t", 800_000)}
        assert await rows(db, "SELECT id FROM reservations") == [("r1",)]
        # The key's own budget short is named as the key's.
        small = Budgets(day=0.5, team_day=10.0)
        assert await ledger.reserve("c", "r3", 0.8, small, ttl_s=60, team="t") == "key"

    run_db(scenario)


def test_a_settlement_writes_its_rollups_and_the_request_log_row_once(
    run_db: Callable[[DbScenario], None], store_clock: StoreClock
) -> None:
    async def scenario(ledger: Ledger, db: Database) -> None:
        now = store_clock()

        def logged(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO request_log (request_id, at, key, endpoint, status, cost_state) "
                "VALUES (?, ?, 'k', 'images.generations', 200, 'reserved')",
                ("req_1", now),
            )

        await db.transaction(logged)
        assert await ledger.reserve("k", "req_1", 0.5, day(1.0), ttl_s=60, team="t") is None
        charge = Charge("m", 0.0425, images=2, team="t", route="r-a")
        assert await ledger.settle("k", "req_1", charge)
        assert not await ledger.settle("k", "req_1", charge)  # a retry, or another replica
        # A video's settlement completes the row that names its job.
        video = Charge("v", 1.25, video_seconds=8, team="t", route="r-v")
        assert await ledger.settle("k", "video_1", video)
        assert await rows(
            db,
            "SELECT grain, bucket, key, team, model, route, requests, images, video_seconds, "
            "cost_micros FROM usage_rollups ORDER BY model, grain",
        ) == [
            ("day", day_of(now), "k", "t", "m", "r-a", 0, 2, 0, 42_500),
            ("hour", hour_of(now), "k", "t", "m", "r-a", 0, 2, 0, 42_500),
            ("day", day_of(now), "k", "t", "v", "r-v", 0, 0, 8, 1_250_000),
            ("hour", hour_of(now), "k", "t", "v", "r-v", 0, 0, 8, 1_250_000),
        ]
        assert await rows(db, "SELECT id, cost_micros FROM settlements ORDER BY id") == [
            ("req_1", 42_500),
            ("video_1", 1_250_000),
        ]
        assert await rows(
            db,
            "SELECT cost_micros, cost_state, images FROM request_log WHERE request_id = ?",
            ("req_1",),
        ) == [(42_500, "booked", 2)]
        team = await ledger.spend("t", "team")
        assert (team.day, team.reserved) == pytest.approx((1.2925, 0))
        (row,) = [r for r in await ledger.usage("k", [day_of(now)]) if r.model == "m"]
        assert (row.images, row.cost) == (2, pytest.approx(0.0425))

    run_db(scenario)


def test_settle_many_books_each_once_in_one_batch(
    run_db: Callable[[DbScenario], None],
) -> None:
    async def scenario(ledger: Ledger, db: Database) -> None:
        assert await ledger.settle("k", "b", Charge("m", 0.1))
        booked = await ledger.settle_many(
            [
                ("k", "a", Charge("m", 0.2, images=1)),
                ("k", "b", Charge("m", 0.1, images=1)),  # settled before: not again
                ("j", "c", Charge("n", 0.3, images=3)),
                ("k", "a", Charge("m", 0.2, images=1)),  # the same id twice in a batch
            ]
        )
        assert booked == [True, False, True, False]
        assert (await ledger.spend("k")).day == pytest.approx(0.3)
        assert (await ledger.spend("j")).day == pytest.approx(0.3)
        (total,) = await rows(db, "SELECT SUM(cost_micros) FROM settlements")
        (rolled,) = await rows(db, "SELECT SUM(cost_micros) FROM usage_rollups WHERE grain = 'day'")
        assert int(total[0]) == int(rolled[0]) == 600_000
        assert await ledger.settle_many([]) == []

    run_db(scenario)


def test_amounts_are_whole_micro_dollars_rounded_half_up(run: Callable[[Scenario], None]) -> None:
    async def scenario(ledger: Ledger) -> None:
        for i in range(10):  # ten times $0.1 is $1 exactly, not 0.9999999999999999
            assert await ledger.settle("k", f"r{i}", Charge("m", 0.1))
        assert (await ledger.spend("k")).day == 1.0
        assert await ledger.settle("h", "half", Charge("m", 0.0000005))  # half a micro-dollar
        assert (await ledger.spend("h")).day == 0.000001

    run(scenario)


def test_the_import_moves_an_old_store_once(
    run_db: Callable[[DbScenario], None], store_clock: StoreClock
) -> None:
    async def scenario(ledger: Ledger, db: Database) -> None:
        assert isinstance(ledger, SqlLedger)
        today = day_of(store_clock())
        for _ in range(2):  # run twice: moved once
            await ledger.import_spend("k", today, 0.25)
            await ledger.import_reservation("k", "old_r", 0.5, store_clock() + 60)
        spend = await ledger.spend("k")
        assert (spend.day, spend.reserved) == pytest.approx((0.25, 0.5))
        # The moved reservation settles as any other, and gives back what it held.
        assert await ledger.settle("k", "old_r", Charge("m", 0.4))
        spend = await ledger.spend("k")
        assert (spend.day, spend.reserved) == pytest.approx((0.65, 0))
        assert await rows(db, "SELECT SUM(reserved_micros) FROM budgets") in ([(0,)], [(0.0,)])

    run_db(scenario)


def test_a_teams_expired_reservation_is_booked_under_the_key_that_made_it(
    run_db: Callable[[DbScenario], None], store_clock: StoreClock
) -> None:
    async def scenario(ledger: Ledger, db: Database) -> None:
        team = Budgets(team_day=1.0)
        assert await ledger.reserve("a", "ra", 0.4, team, ttl_s=0.2, team="t") is None
        await store_clock.advance(0.3)
        # Read through the team (or by another key of it reserving): booked once, as a's.
        spend = await ledger.spend("t", "team")
        assert (spend.day, spend.reserved) == pytest.approx((0.4, 0))
        assert await ledger.reserve("b", "rb", 0.6, team, ttl_s=60, team="t") is None
        assert (await ledger.spend("a")).day == pytest.approx(0.4)
        assert (await ledger.spend("b")).day == 0
        assert await rows(db, "SELECT id, key, team, model, cost_micros FROM settlements") == [
            ("ra", "a", "t", UNSETTLED, 400_000)
        ]

    run_db(scenario)


def test_the_metering_holds_and_checks_the_team_budget_beside_the_keys(
    run: Callable[[Scenario], None],
) -> None:
    # The metering on the real ledger: two keys of one team, the team's budget the shorter.
    teams = {"t": TeamPolicy(name="t", budget_usd_per_day=1.0)}
    a = KeyPolicy(name="a", sha256="a" * 64, team="t", budget_usd_per_day=5.0)
    b = KeyPolicy(name="b", sha256="b" * 64, team="t")

    async def scenario(ledger: Ledger) -> None:
        metering = Metering(ledger, Metrics(), teams=lambda name: teams.get(name or ""))
        token = begin(RequestContext(request_id="req_a"))
        try:
            ticket = await metering.admit(a, "m", images=1, estimate=0.7)
        finally:
            end(token)
        assert ticket.reservation == "req_a"  # settled under the request's id
        with pytest.raises(QuotaExceeded, match="the team 't'"):
            await metering.admit(b, "m", images=1, estimate=0.7)  # b has no budget of its own
        await ticket.settle(Charge("m", 0.7, images=1))
        assert (await ledger.spend("t", "team")).day == pytest.approx(0.7)
        gate = await metering.gate(b)  # 0.3 left: the gate lets it in
        await gate.release()
        await (await metering.admit(b, "m", images=1, estimate=0.3)).settle(Charge("m", 0.3))
        with pytest.raises(QuotaExceeded, match="the team 't'"):
            await metering.gate(a)  # the team's day is spent, whatever a's own budget says
        await metering.drain()

    run(scenario)


def test_a_sqlite_take_waits_for_another_writer_without_stalling_the_loop(
    tmp_path: Path,
) -> None:
    """The SQLite coordination takes from a window on the event loop's thread when the file's
    write lock is free, and in a worker thread (waiting for it) when another connection, in
    this process or another gateway's, is writing: the loop keeps running meanwhile, and the
    take is neither lost nor counted twice."""
    from mediagate.stores.sqlite.ledger import SqliteCoordination

    path = str(tmp_path / "coordination.sqlite3")

    async def main() -> tuple[float, int, float]:
        coordination = await SqliteCoordination.open(path)
        try:
            assert await coordination.take_rate("k", 2, None, 0) == 0  # the lock free: at once
            other = sqlite3.connect(path, isolation_level=None)  # another gateway, writing
            other.execute("BEGIN IMMEDIATE")
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            taking = asyncio.create_task(coordination.take_rate("k", 2, None, 0))
            await asyncio.sleep(0.3)
            assert not taking.done()  # waiting for the lock, in a worker thread
            other.execute("COMMIT")
            other.close()
            second = await taking
            ticker.cancel()
            third = await coordination.take_rate("k", 2, None, 0)  # 2 a minute: the third waits
            return second, ticks, third
        finally:
            await coordination.close()

    second, ticks, third = asyncio.run(main())
    assert second == 0.0  # taken once the other writer committed
    assert ticks >= 10  # the loop ran while the take waited
    assert 0 < third <= 30


def test_the_sqlite_coordination_keeps_its_wal_small(tmp_path: Path) -> None:
    """Takes written on the event loop's thread never checkpoint there (a checkpoint syncs the
    files): the worker thread's connection does it, so a file that only takes are written to
    (a gateway answering polls, say) keeps a WAL of a few MB, not one that grows for ever."""
    from mediagate.stores.sqlite.ledger import SqliteCoordination

    path = tmp_path / "coordination.sqlite3"

    wal = path.with_name(path.name + "-wal")

    async def main() -> int:
        coordination = await SqliteCoordination.open(str(path))
        try:
            for i in range(3000):  # ~8 KB of WAL each, ~24 MB without a checkpoint
                assert await coordination.take_rate(f"k{i % 50}", 10**9, None, 0) == 0
            return wal.stat().st_size  # (before the close, which checkpoints and removes it)
        finally:
            await coordination.close()

    assert asyncio.run(main()) < 8 * 1024 * 1024

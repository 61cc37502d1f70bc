"""The ledger's atomic steps, on both backends (SQLite on disk, Redis for real).

Time moves by `store_clock.advance`: on SQLite a fake clock, on Redis (which reads its own
clock in its scripts) a real wait, so the TTLs here are a fraction of a second."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from mediagate.stores.ledger import UNSETTLED, Charge, Ledger, day_of

from .conftest import StoreClock, StoreUrl

Scenario = Callable[[Ledger], Awaitable[None]]


@pytest.fixture
def run(store_url: StoreUrl, store_clock: StoreClock) -> Callable[[Scenario], None]:
    def go(scenario: Scenario) -> None:
        async def main() -> None:
            async with store_url.open(store_clock) as stores:
                await scenario(stores.ledger)

        asyncio.run(main())

    return go


def test_settle_books_once(run: Callable[[Scenario], None], store_clock: StoreClock) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.reserve("k", "r1", 0.5, 1.0, None, ttl_s=60) is not None
        assert (await ledger.spend("k")).reserved == pytest.approx(0.5)
        assert await ledger.settle("k", "r1", Charge("m", 0.4, images=1))
        assert not await ledger.settle("k", "r1", Charge("m", 0.4, images=1))  # once only
        spend = await ledger.spend("k")
        assert (spend.day, spend.month, spend.reserved) == pytest.approx((0.4, 0.4, 0))
        (row,) = await ledger.usage("k", [day_of(store_clock())])
        assert (row.model, row.requests, row.images) == ("m", 1, 1)
        assert row.cost == pytest.approx(0.4)

    run(scenario)


def test_a_reservation_that_expires_unsettled_is_booked_not_dropped(
    run: Callable[[Scenario], None], store_clock: StoreClock
) -> None:
    # Issue 14, item 1: a request whose settle never reached the ledger (its replica died,
    # its booking failed) must not be free: its reservation, the request's upper bound, is
    # booked when it expires, and a late settle cannot book it again.
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.reserve("k", "r1", 0.5, 1.0, None, ttl_s=0.2) is not None
        await store_clock.advance(0.3)
        spend = await ledger.spend("k")
        assert (spend.day, spend.month, spend.reserved) == pytest.approx((0.5, 0.5, 0))
        assert not await ledger.settle("k", "r1", Charge("m", 0.4, images=1))
        assert (await ledger.spend("k")).day == pytest.approx(0.5)
        (row,) = await ledger.usage("k", [day_of(store_clock())])
        assert (row.model, row.requests) == (UNSETTLED, 1)
        assert row.cost == pytest.approx(0.5)

    run(scenario)


def test_reservations_count_against_the_budget(run: Callable[[Scenario], None]) -> None:
    async def scenario(ledger: Ledger) -> None:
        assert await ledger.reserve("k", "a", 0.6, 1.0, None, ttl_s=60) is not None
        assert await ledger.reserve("k", "b", 0.6, 1.0, None, ttl_s=60) is None
        assert await ledger.reserve("k", "c", 0.6, None, 1.0, ttl_s=60) is None  # month too
        assert await ledger.settle("k", "a", Charge("m", 0.1))
        assert await ledger.reserve("k", "b", 0.6, 1.0, None, ttl_s=60) is not None
        assert await ledger.reserve("other", "x", 0.9, 1.0, None, ttl_s=60) is not None

    run(scenario)


def test_concurrent_reservations_never_overspend(run: Callable[[Scenario], None]) -> None:
    async def scenario(ledger: Ledger) -> None:
        results = await asyncio.gather(
            *(ledger.reserve("k", uuid.uuid4().hex, 0.3, 1.0, None, 60) for _ in range(10))
        )
        assert sum(r is not None for r in results) == 3

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

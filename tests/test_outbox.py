"""What the reconciler and the webhook sender need from the job store, on SQLite and on a real
PostgreSQL: a lease one holder at a time (taken over once it lapses), the census behind the job
gauges, and the webhook outbox written only by the compare-and-set that wins, claimed, retried
and removed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

from mediagate.gateway import ConfigError, check_config
from mediagate.settings import Settings
from mediagate.stores.jobs import Delivery
from mediagate.videos.webhooks import check_secret, new_secret, retry_delay, signature

from .conftest import StoreClock, StoreUrl
from .test_jobstore import make_job


def test_a_lease_has_one_holder_until_it_lapses(
    store_url: StoreUrl, store_clock: StoreClock
) -> None:
    async def run() -> None:
        async with store_url.open(store_clock) as stores:
            jobs = stores.jobs
            assert await jobs.lease("reconciler", "a", 0.3)
            assert not await jobs.lease("reconciler", "b", 0.3)
            assert await jobs.lease("reconciler", "a", 0.3)  # renewed by its holder
            await store_clock.advance(0.4)
            assert await jobs.lease("reconciler", "b", 0.3)  # lapsed: taken over
            assert not await jobs.lease("reconciler", "a", 0.3)
            assert await jobs.lease("other", "a", 0.3)  # leases are by name

    asyncio.run(run())


def test_the_census_counts_jobs_and_the_oldest_unfinished(store_url: StoreUrl) -> None:
    async def run() -> None:
        async with store_url.open() as stores:
            jobs = stores.jobs
            assert (await jobs.census()).oldest_unfinished is None
            await jobs.insert(make_job("video_1", created_at=100))
            await jobs.insert(make_job("video_2", created_at=200))
            await jobs.insert(make_job("video_3", created_at=300))
            await jobs.update("video_2", "queued", {"status": "in_progress"})
            await jobs.update("video_1", "queued", {"status": "completed", "cost": 0.4})
            census = await jobs.census()
            counts = {k: v for k, v in census.by_status.items() if v}
            assert counts == {"queued": 1, "in_progress": 1, "completed": 1}
            assert census.oldest_unfinished == 200
            assert [j.id for j in await jobs.unfinished(10)] == ["video_2", "video_3"]
            assert [j.id for j in await jobs.unfinished(1)] == ["video_2"]

    asyncio.run(run())


def test_the_outbox_is_written_only_by_the_winning_update(
    store_url: StoreUrl, store_clock: StoreClock
) -> None:
    event = Delivery("evt_1", "https://example.com/hook", '{"id":"evt_1"}', 1000.0)
    lost = Delivery("evt_2", "https://example.com/hook", '{"id":"evt_2"}', 1000.0)

    async def run() -> None:
        async with store_url.open(store_clock) as stores:
            jobs = stores.jobs
            await jobs.insert(make_job("video_1"))
            done = {"status": "completed", "cost": 0.4}
            assert await jobs.update("video_1", "queued", done, event=event) is not None
            assert await jobs.update("video_1", "queued", done, event=lost) is None
            assert await jobs.outbox() == (1, 1000.0)

            [claimed] = await jobs.claim_deliveries(0.3, 10)
            assert claimed == event
            assert await jobs.claim_deliveries(0.3, 10) == []  # held by its claimer
            await store_clock.advance(0.4)
            [again] = await jobs.claim_deliveries(0.3, 10)  # the claimer died: due again
            assert again.id == "evt_1"

            await jobs.retry_later("evt_1", 1, 0.3)
            assert await jobs.claim_deliveries(0.3, 10) == []
            await store_clock.advance(0.4)
            [retried] = await jobs.claim_deliveries(0.3, 10)
            assert (retried.id, retried.attempts, retried.body) == ("evt_1", 1, event.body)

            await jobs.delivered("evt_1")
            assert await jobs.outbox() == (0, None)
            await store_clock.advance(0.4)
            assert await jobs.claim_deliveries(0.3, 10) == []
            await jobs.retry_later("evt_1", 2, 0)  # a late retry of a delivered event: no-op
            assert await jobs.outbox() == (0, None)

    asyncio.run(run())


def test_claimers_at_once_never_get_the_same_event(store_url: StoreUrl) -> None:
    # Two stores on one database stand for two replicas' webhook senders, claiming at once.
    async def run() -> None:
        async with store_url.open() as first, store_url.open() as second:
            for i in range(40):
                await first.jobs.insert(make_job(f"video_{i}"))
                hook = Delivery(f"evt_{i}", "https://example.com/hook", "{}", 1000.0 + i)
                done = {"status": "completed", "cost": 0.4}
                assert await first.jobs.update(f"video_{i}", "queued", done, event=hook)
            claims = await asyncio.gather(
                *((first if i % 2 else second).jobs.claim_deliveries(60, 5) for i in range(16))
            )
            ids = [delivery.id for batch in claims for delivery in batch]
            assert len(ids) == len(set(ids)), sorted(ids)  # no event went to two claimers
            rest = [delivery.id for delivery in await first.jobs.claim_deliveries(60, 100)]
            assert sorted(ids + rest) == sorted(f"evt_{i}" for i in range(40))
            assert await second.jobs.claim_deliveries(60, 100) == []  # every one is held

    asyncio.run(run())


def test_signatures_follow_standard_webhooks() -> None:
    # The example of the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(check_secret(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        expected
    )
    assert retry_delay(5, 1) == 5 and retry_delay(5, 2) == 10 and retry_delay(5, 3) == 20
    assert retry_delay(5, 40) == 3600


@pytest.mark.parametrize("secret", ["secret", "whsec_not base64!", "whsec_c2hvcnQ="])
def test_a_bad_webhook_secret_stops_the_start(secret: str, tmp_path: Path) -> None:
    settings = Settings(
        simulator=True, data_dir=tmp_path, webhook_secret=SecretStr(secret), webhook_url=None
    )
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        check_config(settings)


def test_a_webhook_url_without_a_secret_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(simulator=True, data_dir=tmp_path, webhook_url="https://example.com/h")
    with pytest.raises(ConfigError, match="MEDIAGATE_WEBHOOK_SECRET"):
        check_config(settings)
    good = Settings(
        simulator=True,
        data_dir=tmp_path,
        webhook_url="https://example.com/h",
        webhook_secret=SecretStr(new_secret()),
    )
    check_config(good)

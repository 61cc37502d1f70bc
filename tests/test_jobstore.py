"""The job store's contract, on SQLite and on a real PostgreSQL: durable records,
compare-and-set that lets exactly one writer win, and per-owner cursor pagination."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from mediagate.errors import StoreUnavailable
from mediagate.gateway import ConfigError, check_config
from mediagate.settings import Settings
from mediagate.stores import StoreConfigError, check_store_url, open_stores
from mediagate.stores.jobs import JobStore, UnknownCursor, VideoJob
from mediagate.stores.redis.db import RedisDb
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.jobs import SqlJobStore
from mediagate.stores.sql.migrate import upgrade
from mediagate.videos.records import openai_video

from .conftest import StoreUrl

T = TypeVar("T")


def with_store(store_url: StoreUrl, work: Callable[[JobStore], Awaitable[T]]) -> T:
    async def run() -> T:
        async with store_url.open() as stores:
            return await work(stores.jobs)

    return asyncio.run(run())


def make_job(job_id: str, owner: str = "team-a", **changes: Any) -> VideoJob:
    values: dict[str, Any] = {
        "id": job_id,
        "upstream_id": f"up-{job_id}",
        "owner": owner,
        "model": "sora-2",
        "route": "sora-2",
        "group": "Sora2Official",
        "key_fp": "f" * 64,
        "prompt": "a prompt",
        "size": "720x1280",
        "seconds": 4,
        "status": "queued",
        "created_at": 1_700_000_000,
        "updated_at": 1_700_000_000.5,
    }
    values.update(changes)
    return VideoJob(**values)


def test_a_job_round_trips_with_every_field(store_url: StoreUrl) -> None:
    job = make_job(
        "video_1",
        status="failed",
        error={"code": "moderation_blocked", "message": "no"},
        cost=0.0,
        remixed_from="video_0",
        reference="image/png 720x1280",
        expires_at=None,
        asked="sora-2-pro",
    )

    async def work(store: JobStore) -> tuple[VideoJob | None, VideoJob | None]:
        await store.insert(job)
        return await store.get("video_1"), await store.get("video_missing")

    found, missing = with_store(store_url, work)
    assert found == job
    assert missing is None


def test_a_record_written_with_seconds_as_text_reads_as_an_integer(store_url: StoreUrl) -> None:
    # Records written before `seconds` was kept as an integer hold OpenAI's string ("8"): no
    # migration, the store reads them as the integer.
    old = replace(make_job("video_old"), seconds=cast(Any, "8"))

    async def work(store: JobStore) -> VideoJob | None:
        await store.insert(old)
        await store.update("video_old", "queued", {"status": "completed", "cost": 0.4})
        return await store.get("video_old")

    found = with_store(store_url, work)
    assert found is not None and found.seconds == 8 and found.status == "completed"


def test_a_record_written_before_the_asked_model_was_kept_shows_the_served_one(
    store_url: StoreUrl,
) -> None:
    # `asked` (the model name the client asked for, which the Video object shows) came later:
    # a job imported from a store written before it (mediagate db import) has it NULL.
    job = make_job("video_older", model="muse-video", asked="sora-2")

    async def run() -> VideoJob | None:
        async with store_url.open() as stores:
            await stores.jobs.insert(job)
            await stores.database.transaction(
                lambda tx: tx.execute(
                    "UPDATE video_jobs SET asked = NULL WHERE id = ?", ("video_older",)
                )
            )
            found: VideoJob | None = await stores.jobs.get("video_older")
            return found

    found = asyncio.run(run())
    assert found is not None and found.asked is None
    assert openai_video(found)["model"] == "muse-video"  # the model that served it
    assert openai_video(job)["model"] == "sora-2"  # a record that kept it: what was asked


def test_compare_and_set_lets_exactly_one_writer_win(store_url: StoreUrl) -> None:

    async def run() -> tuple[list[VideoJob | None], VideoJob | None, dict[str, int]]:
        # Two stores on one database stand for two replicas; each races 20 writers.
        async with store_url.open() as first, store_url.open() as second:
            one, two = first.jobs, second.jobs
            await one.insert(make_job("video_race", status="in_progress"))
            attempts = [
                (one if i % 2 else two).update(
                    "video_race", "in_progress", {"status": "completed", "cost": float(i)}
                )
                for i in range(40)
            ]
            results = await asyncio.gather(*attempts)
            return results, await one.get("video_race"), (await two.census()).by_status

    results, final, counts = asyncio.run(run())
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert final is not None and final.status == "completed"
    assert final.cost == winners[0].cost  # the one recorded cost is the winner's
    # The gauges' counts moved once, by the winner.
    assert counts == {"queued": 0, "in_progress": 0, "completed": 1, "failed": 0}


def test_an_update_against_a_stale_status_loses(store_url: StoreUrl) -> None:
    async def work(store: JobStore) -> tuple[VideoJob | None, VideoJob | None, VideoJob | None]:
        await store.insert(make_job("video_2"))
        moved = await store.update("video_2", "queued", {"status": "in_progress", "progress": 5})
        stale = await store.update("video_2", "queued", {"status": "failed"})
        gone = await store.update("video_nope", "queued", {"status": "failed"})
        return moved, stale, gone

    moved, stale, gone = with_store(store_url, work)
    assert moved is not None and (moved.status, moved.progress) == ("in_progress", 5)
    assert stale is None and gone is None


def test_who_owns_a_job_can_never_change(store_url: StoreUrl) -> None:
    async def work(store: JobStore) -> None:
        await store.insert(make_job("video_3"))
        with pytest.raises(ValueError, match="owner"):
            await store.update("video_3", "queued", {"owner": "team-b"})
        with pytest.raises(ValueError, match="status"):
            await store.update("video_3", "queued", {"status": "exploded"})

    with_store(store_url, work)


def test_listing_pages_through_one_owners_jobs(store_url: StoreUrl) -> None:
    async def work(store: JobStore) -> None:
        for i in range(5):
            await store.insert(make_job(f"video_a{i}"))
            await store.insert(make_job(f"video_b{i}", owner="team-b"))
        await store.update("video_a2", "queued", {"deleted_at": int(time.time())})

        first, more = await store.list("team-a", after=None, limit=2, order="desc")
        assert [j.id for j in first] == ["video_a4", "video_a3"] and more
        second, more = await store.list("team-a", after="video_a3", limit=2, order="desc")
        assert [j.id for j in second] == ["video_a1", "video_a0"] and not more
        ascending, more = await store.list("team-a", after=None, limit=10, order="asc")
        assert [j.id for j in ascending] == ["video_a0", "video_a1", "video_a3", "video_a4"]
        assert not more
        # A deleted job still works as a cursor (a client may delete while paging).
        after_deleted, _ = await store.list("team-a", after="video_a2", limit=10, order="asc")
        assert [j.id for j in after_deleted] == ["video_a3", "video_a4"]
        for cursor in ("video_b1", "video_zz"):  # another owner's job, or none at all
            with pytest.raises(UnknownCursor):
                await store.list("team-a", after=cursor, limit=2, order="asc")
        nobody, more = await store.list("team-c", after=None, limit=2, order="asc")
        assert nobody == [] and not more

    with_store(store_url, work)


def test_a_job_outlives_the_store_that_wrote_it(store_url: StoreUrl) -> None:
    with_store(store_url, lambda store: store.insert(make_job("video_4")))
    found = with_store(store_url, lambda store: store.get("video_4"))
    assert found == make_job("video_4")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:////var/lib/mediagate/jobs.sqlite3", "sqlite"),
        ("sqlite:///data/jobs.sqlite3", "sqlite"),
        ("redis://redis:6379/2", "redis"),
        ("rediss://user:pw@redis.example:6380/0", "redis"),
    ],
)
def test_store_urls_that_work(url: str, kind: str) -> None:
    assert check_store_url(url) == kind


@pytest.mark.parametrize("url", ["postgres://db/mediagate", "sqlite://", "jobs.sqlite3"])
def test_store_urls_that_do_not(url: str) -> None:
    with pytest.raises(StoreConfigError, match="MEDIAGATE_STORE_URL"):
        check_store_url(url)


def test_the_gateway_refuses_to_start_on_stores_it_cannot_use(tmp_path: Path) -> None:
    settings = Settings(
        upstream_url="http://127.0.0.1:1/v1",
        key_default=SecretStr("sk-up"),
        api_keys=SecretStr("team-a:sk-a"),
        data_dir=tmp_path,
    )
    # Today's MEDIAGATE_STORE_URL: a clear message naming the import, not a silent new store.
    with pytest.raises(ConfigError, match="mediagate db import"):
        check_config(settings.model_copy(update={"store_url": "redis://r:6379/0"}))
    with pytest.raises(ConfigError, match="MEDIAGATE_DATABASE_URL must be"):
        check_config(settings.model_copy(update={"database_url": "mysql://db/jobs"}))
    with pytest.raises(ConfigError, match="set MEDIAGATE_REDIS_URL"):
        check_config(settings.model_copy(update={"database_url": "postgresql://db/m"}))
    check_config(
        settings.model_copy(
            update={"database_url": "postgresql://db/m", "redis_url": "redis://r/0"}
        )
    )
    assert settings.records_url() == f"sqlite:///{(tmp_path / 'mediagate.sqlite3').resolve()}"


def test_an_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    async def run() -> None:
        async with open_stores(
            f"sqlite:///{tmp_path / 'r.sqlite3'}", "x", redis_url="redis://127.0.0.1:1/0"
        ):
            pass

    with pytest.raises(StoreUnavailable, match="Redis"):
        asyncio.run(run())


def test_a_redis_failure_after_the_start_is_a_store_error() -> None:
    # Built without open's check, so every call fails: commands and scripts alike are mapped.
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    redis = RedisDb(client, "coordination store")

    async def run() -> None:
        with pytest.raises(StoreUnavailable, match=r"^The Redis coordination store failed: \w+\.$"):
            await redis.run(lambda r: r.get("x"))
        with pytest.raises(StoreUnavailable, match="Redis coordination store"):
            await redis.script("return 1")([], [])
        await redis.close()

    asyncio.run(run())


def test_a_database_failure_after_the_start_is_a_store_error(database_url: str) -> None:
    async def run() -> None:
        database = await Database.open(database_url)
        await upgrade(database)
        store = SqlJobStore(database)
        await store.insert(make_job("video_1"))
        await database.transaction(lambda tx: tx.execute("DROP TABLE video_jobs"))
        with pytest.raises(StoreUnavailable, match="The database failed"):
            await store.get("video_1")
        with pytest.raises(StoreUnavailable, match="The database failed"):
            await store.update("video_1", "queued", {"status": "failed"})
        await database.close()

    asyncio.run(run())

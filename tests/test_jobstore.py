"""The job store's contract, on SQLite and on a real Redis: durable records, compare-and-set
that lets exactly one writer win, and per-owner cursor pagination."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from app.gateway import ConfigError, check_config
from app.jobstore import (
    Job,
    JobStore,
    JobStoreConfigError,
    StoreUnavailable,
    UnknownCursor,
    check_store_url,
    open_job_store,
)
from app.settings import Settings

T = TypeVar("T")


def store_url(job_store: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    if job_store:
        return job_store["store_url"], job_store["store_prefix"]
    return f"sqlite:///{tmp_path / 'jobs.sqlite3'}", "unused"


def with_store(
    job_store: dict[str, str], tmp_path: Path, work: Callable[[JobStore], Awaitable[T]]
) -> T:
    url, prefix = store_url(job_store, tmp_path)

    async def run() -> T:
        async with open_job_store(url, prefix) as store:
            return await work(store)

    return asyncio.run(run())


def make_job(job_id: str, owner: str = "team-a", **changes: Any) -> Job:
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
        "seconds": "4",
        "status": "queued",
        "created_at": 1_700_000_000,
        "updated_at": 1_700_000_000.5,
    }
    values.update(changes)
    return Job(**values)


def test_a_job_round_trips_with_every_field(job_store: dict[str, str], tmp_path: Path) -> None:
    job = make_job(
        "video_1",
        status="failed",
        error={"code": "moderation_blocked", "message": "no"},
        cost=0.0,
        remixed_from="video_0",
        reference="image/png 720x1280",
        expires_at=None,
    )

    async def work(store: JobStore) -> tuple[Job | None, Job | None]:
        await store.insert(job)
        return await store.get("video_1"), await store.get("video_missing")

    found, missing = with_store(job_store, tmp_path, work)
    assert found == job
    assert missing is None


def test_compare_and_set_lets_exactly_one_writer_win(
    job_store: dict[str, str], tmp_path: Path
) -> None:
    url, prefix = store_url(job_store, tmp_path)

    async def run() -> tuple[list[Job | None], Job | None]:
        # Two stores on one database stand for two replicas; each races 20 writers.
        async with open_job_store(url, prefix) as one, open_job_store(url, prefix) as two:
            await one.insert(make_job("video_race", status="in_progress"))
            attempts = [
                (one if i % 2 else two).update(
                    "video_race", "in_progress", {"status": "completed", "cost": float(i)}
                )
                for i in range(40)
            ]
            results = await asyncio.gather(*attempts)
            return results, await one.get("video_race")

    results, final = asyncio.run(run())
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert final is not None and final.status == "completed"
    assert final.cost == winners[0].cost  # the one recorded cost is the winner's


def test_an_update_against_a_stale_status_loses(job_store: dict[str, str], tmp_path: Path) -> None:
    async def work(store: JobStore) -> tuple[Job | None, Job | None, Job | None]:
        await store.insert(make_job("video_2"))
        moved = await store.update("video_2", "queued", {"status": "in_progress", "progress": 5})
        stale = await store.update("video_2", "queued", {"status": "failed"})
        gone = await store.update("video_nope", "queued", {"status": "failed"})
        return moved, stale, gone

    moved, stale, gone = with_store(job_store, tmp_path, work)
    assert moved is not None and (moved.status, moved.progress) == ("in_progress", 5)
    assert stale is None and gone is None


def test_who_owns_a_job_can_never_change(job_store: dict[str, str], tmp_path: Path) -> None:
    async def work(store: JobStore) -> None:
        await store.insert(make_job("video_3"))
        with pytest.raises(ValueError, match="owner"):
            await store.update("video_3", "queued", {"owner": "team-b"})
        with pytest.raises(ValueError, match="status"):
            await store.update("video_3", "queued", {"status": "exploded"})

    with_store(job_store, tmp_path, work)


def test_listing_pages_through_one_owners_jobs(job_store: dict[str, str], tmp_path: Path) -> None:
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

    with_store(job_store, tmp_path, work)


def test_a_job_outlives_the_store_that_wrote_it(job_store: dict[str, str], tmp_path: Path) -> None:
    with_store(job_store, tmp_path, lambda store: store.insert(make_job("video_4")))
    found = with_store(job_store, tmp_path, lambda store: store.get("video_4"))
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
    with pytest.raises(JobStoreConfigError, match="MEDIAGATE_STORE_URL"):
        check_store_url(url)


def test_the_gateway_refuses_to_start_on_a_store_url_it_cannot_use(tmp_path: Path) -> None:
    settings = Settings(
        upstream_url="http://127.0.0.1:1/v1",
        key_default="sk-up",
        api_keys="team-a:sk-a",
        data_dir=tmp_path,
        store_url="mysql://db/jobs",
    )
    with pytest.raises(ConfigError, match="MEDIAGATE_STORE_URL"):
        check_config(settings)
    default = settings.model_copy(update={"store_url": None})
    assert default.job_store_url() == f"sqlite:///{(tmp_path / 'jobs.sqlite3').resolve()}"


def test_an_unreachable_redis_is_a_clear_error() -> None:
    async def run() -> None:
        async with open_job_store("redis://127.0.0.1:1/0", "x"):
            pass

    with pytest.raises(StoreUnavailable, match="Redis"):
        asyncio.run(run())

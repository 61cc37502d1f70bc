"""The reconciler: a job nobody polls still ends, is booked once and frees its reservation; jobs
the upstream forgot or never finished end as failed at cost 0; the job gauges read the store;
with two gateway processes on Redis one of them polls the upstream, and another takes over when
it dies."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest

from mediagate.stores import open_stores
from mediagate.stores.jobs import VideoJob
from mediagate.stores.ledger import Spend, UsageRow, day_of

from .conftest import CLIENT_KEY, GROUP_KEYS, Gateway, Sim, wait_until
from .processes import Served, clean_env, serving

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INTERVAL_S = 0.5
MUSE_PRICE = 0.30  # catalog.yaml: muse-video, per video whatever its length


def _read(
    database_url: str, prefix: str, video_id: str, redis_url: str | None = None
) -> tuple[VideoJob | None, list[UsageRow], Spend]:
    async def read() -> tuple[VideoJob | None, list[UsageRow], Spend]:
        async with open_stores(database_url, prefix, redis_url=redis_url) as stores:
            job = await stores.jobs.get(video_id)
            # The usage once the job is settled (the rollups count its create request from
            # when its request log row is written, settled or not).
            settled = await stores.database.run(
                lambda tx: tx.scalar("SELECT COUNT(*) FROM settlements WHERE id = ?", (video_id,))
            )
            usage = await stores.ledger.usage("team-a", [day_of(time.time())]) if settled else []
            return job, usage, await stores.ledger.spend("team-a")

    return asyncio.run(read())


def state(gateway: Gateway, video_id: str) -> tuple[VideoJob | None, list[UsageRow], Spend]:
    settings = gateway.settings
    return _read(settings.records_url(), settings.store_prefix, video_id, settings.redis_url)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a /metrics page (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def status_polls(sim: Sim) -> int:
    return len([c for c in sim.sent() if c.method == "GET" and c.path.startswith("/v1/videos/")])


def test_a_job_nobody_polls_is_booked_within_two_intervals(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], sim: Sim
) -> None:
    gateway = make_gateway(reconcile_interval_s=INTERVAL_S, **job_store)
    video = gateway.sdk().videos.create(prompt="[sim:render=0.3] nobody polls", seconds="4")
    created = time.monotonic()
    assert video.status in ("queued", "in_progress")

    def booked() -> bool:
        job, usage, _ = state(gateway, video.id)
        return job is not None and job.final and bool(usage)

    wait_until(booked, timeout_s=0.3 + 2 * INTERVAL_S + 1.0)
    took = time.monotonic() - created
    print(f"booked {took:.2f} s after create (render 0.3 s, interval {INTERVAL_S} s)")
    job, usage, spend = state(gateway, video.id)
    assert job is not None and job.status == "completed"
    assert job.cost == pytest.approx(MUSE_PRICE)
    [row] = usage
    assert row.video_seconds == 5  # "4" maps to Muse's 5 s; booked once
    assert row.cost == pytest.approx(MUSE_PRICE)
    assert spend.reserved == 0  # the create's reservation is released
    # Render time plus at most two intervals (one to notice, one of slack for the round).
    assert took <= 0.3 + 2 * INTERVAL_S + 0.5, took

    # A client poll afterwards reads the record: nothing is booked twice.
    assert gateway.sdk().videos.retrieve(video.id).status == "completed"
    time.sleep(2 * INTERVAL_S)
    [row] = state(gateway, video.id)[1]
    assert row.video_seconds == 5  # not booked again


def test_the_reconciler_and_a_polling_client_book_once(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str]
) -> None:
    gateway = make_gateway(reconcile_interval_s=0.05, video_poll_after_ms=10, **job_store)
    sdk = gateway.sdk()
    videos = [sdk.videos.create(prompt=f"[sim:render=0.3] race {i}") for i in range(4)]
    for video in videos:
        assert sdk.videos.poll(video.id, poll_interval_ms=10).status == "completed"
    time.sleep(0.3)
    _, usage, spend = state(gateway, videos[0].id)
    [row] = usage
    assert row.video_seconds == 40  # Muse's default 10 s each, booked once each
    assert row.cost == pytest.approx(4 * MUSE_PRICE)
    assert spend.reserved == 0


def test_a_job_the_upstream_forgot_fails_at_no_cost(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], sim: Sim
) -> None:
    gateway = make_gateway(reconcile_interval_s=0.1, **job_store)
    video = gateway.sdk().videos.create(prompt="[sim:render=60] forgotten")
    job, _, _ = state(gateway, video.id)
    assert job is not None
    sim.state.videos.pop(job.upstream_id)  # the upstream lost it

    wait_until(lambda: bool(state(gateway, video.id)[1]), timeout_s=3)
    job, [row], spend = state(gateway, video.id)
    assert job is not None and job.status == "failed" and job.cost == 0
    assert row.cost == 0 and spend.reserved == 0
    seen = gateway.sdk().videos.retrieve(video.id)
    assert seen.status == "failed"
    assert seen.error is not None and seen.error.code == "video_upstream_lost"


def test_a_job_past_the_deadline_fails_at_no_cost(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], sim: Sim
) -> None:
    # created_at is whole seconds, so a job may look up to a second older than it is.
    gateway = make_gateway(reconcile_interval_s=0.1, video_job_deadline_s=2, **job_store)
    video = gateway.sdk().videos.create(prompt="[sim:render=60] never done")
    time.sleep(0.3)
    assert state(gateway, video.id)[0].status in ("queued", "in_progress")

    wait_until(lambda: bool(state(gateway, video.id)[1]), timeout_s=5)
    job, [row], spend = state(gateway, video.id)
    assert job is not None and job.status == "failed" and job.cost == 0
    assert job.error is not None and job.error["code"] == "video_deadline_exceeded"
    assert row.cost == 0 and spend.reserved == 0


def test_job_gauges_come_from_the_store(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str]
) -> None:
    gateway = make_gateway(reconcile_interval_s=0.1, **job_store)
    sdk = gateway.sdk()
    sdk.videos.create_and_poll(prompt="done", poll_interval_ms=10)
    sdk.videos.create(prompt="[sim:render=60] slow")
    time.sleep(0.5)
    # A second gateway on the same store, which served none of them, reports the same.
    other = make_gateway(reconcile_interval_s=0.1, **job_store)
    for gw in (gateway, other):

        def counted(gw: Gateway = gw) -> bool:
            text = httpx2.get(f"{gw.url}/metrics").text
            return (
                metric(text, "mediagate_video_jobs", status="completed") == 1
                and metric(text, "mediagate_video_jobs", status="in_progress")
                + metric(text, "mediagate_video_jobs", status="queued")
                == 1
            )

        wait_until(counted, timeout_s=3)
        text = httpx2.get(f"{gw.url}/metrics").text
        assert 0.4 < metric(text, "mediagate_video_job_oldest_unfinished_seconds") < 30


# --- Two gateway processes on one Redis store ---------------------------------------------


def _env(sim: Sim, tmp_path: Path, store: dict[str, str], **extra: str) -> dict[str, str]:
    return clean_env(
        store,
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEY_OPENAIOFFICIAL=GROUP_KEYS["OpenAI Official"],
        MEDIAGATE_API_KEYS=f"team-a:{CLIENT_KEY}",
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_RECONCILE_INTERVAL_S=str(INTERVAL_S),
        **extra,
    )


def _polls_by(gateway: Served) -> float:
    text = httpx2.get(f"{gateway.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mediagate_upstream_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_replicas_on_postgresql_and_redis_book_once_with_one_poller(
    sim: Sim, tmp_path: Path, replica_store: dict[str, str]
) -> None:
    env = _env(sim, tmp_path, replica_store)
    url, prefix = replica_store["database_url"], replica_store["store_prefix"]
    records = replica_store["redis_url"]
    with serving(["serve"], env, tmp_path) as one, serving(["serve"], env, tmp_path) as two:
        sdk = openai.OpenAI(base_url=f"{one.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        video = sdk.videos.create(prompt="[sim:render=0.3] two replicas", seconds="8")
        created = time.monotonic()

        def booked() -> bool:
            return bool(_read(url, prefix, video.id, records)[1])

        wait_until(booked, timeout_s=0.3 + 2 * INTERVAL_S + 1.0)
        took = time.monotonic() - created
        print(f"two replicas: booked {took:.2f} s after create (render 0.3 s, {INTERVAL_S} s)")
        time.sleep(2 * INTERVAL_S)  # a second booking would have happened by now
        job, [row], spend = _read(url, prefix, video.id, records)
        assert job is not None and job.status == "completed"
        assert row.video_seconds == 8  # booked once
        assert row.cost == pytest.approx(MUSE_PRICE) and spend.reserved == 0
        assert took <= 0.3 + 2 * INTERVAL_S + 0.5, took

        # One replica asked the upstream about the job; the other only took the create.
        polls = {"one": _polls_by(one) - 1, "two": _polls_by(two)}
        print(f"upstream calls besides the create, by replica: {polls}")
        assert status_polls(sim) == sum(polls.values()) > 0
        assert sorted(polls.values())[0] == 0, polls
        leader, follower = (one, two) if polls["one"] else (two, one)

        # The leader dies; the other takes its lease over (within three intervals) and
        # brings the next job to its end.
        os.kill(leader.proc.pid, signal.SIGKILL)
        leader.proc.wait(timeout=10)
        sdk = openai.OpenAI(base_url=f"{follower.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        second = sdk.videos.create(prompt="[sim:render=0.3] after the leader died", seconds="4")
        wait_until(lambda: bool(_read(url, prefix, second.id, records)[0].final), timeout_s=6)
        job, usage, spend = _read(url, prefix, second.id, records)
        assert job is not None and job.status == "completed"
        assert sum(r.video_seconds for r in usage) == 13 and spend.reserved == 0

"""The batch runner's hard guarantees, tested for real (issue 27).

A videos batch across the three video families completes with each line's final Video object;
a batch whose window passes while lines are pending ends `expired` (the clock injected, not
waited for); a replica killed with -9 midway leaves its batch to another replica that finishes
it without sending any line twice; and the lease recovery itself, against the real SQL store on
each engine, with an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from mediagate.app import create_app
from mediagate.batches.lines import IMAGE_GENERATIONS as IMAGES
from mediagate.batches.lines import VIDEOS, new_batch_id
from mediagate.servethread import BackgroundServer
from mediagate.stores import open_stores
from mediagate.stores.jobs import VideoJob
from mediagate.stores.sql import batches as sql
from mediagate.videos.records import new_video_id

from .conftest import (
    CLIENT_KEY,
    GROUP_KEYS,
    RUNNING,
    Gateway,
    Sim,
    fast_video_polls,
    gateway_settings,
    wait_until,
)
from .processes import Served, clean_env, serving
from .test_videos_families import ARK_TASKS, WAN_CREATE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FINAL = ("completed", "failed", "expired", "cancelled")


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def submit(sdk: openai.OpenAI, endpoint: str, bodies: list[dict[str, Any]]) -> Any:
    """A batch of `bodies` (custom_id `line-1` ...) on `endpoint`, created through the SDK."""
    lines = [
        {"custom_id": f"line-{i}", "method": "POST", "url": endpoint, "body": body}
        for i, body in enumerate(bodies, 1)
    ]
    upload = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=upload.id,
        endpoint=endpoint,  # type: ignore[arg-type]  # the SDK's literal lacks /v1/videos
        completion_window="24h",
    )
    assert batch.status == "in_progress", batch
    return batch


def finished(sdk: openai.OpenAI, batch_id: str, timeout_s: float = 30.0) -> Any:
    """The batch once it reached a final status."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen["batch"] = sdk.batches.retrieve(batch_id)
        return seen["batch"].status in FINAL

    wait_until(done, timeout_s=timeout_s, interval_s=0.1)
    return seen["batch"]


def completed(sdk: openai.OpenAI, batch_id: str) -> int:
    counts = sdk.batches.retrieve(batch_id).request_counts
    assert counts is not None
    return counts.completed


def read_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    raw = sdk.files.content(file_id).content
    return [json.loads(line) for line in raw.splitlines()]


def stored_jobs(gw: Gateway, ids: list[str]) -> list[VideoJob]:
    """Our records of these jobs, read from the store as another replica would."""
    settings = gw.settings

    async def read() -> list[VideoJob]:
        url = settings.records_url()
        async with open_stores(url, settings.store_prefix, redis_url=settings.redis_url) as s:
            found = [await s.jobs.get(job_id) for job_id in ids]
        assert all(job is not None for job in found)
        return [job for job in found if job is not None]

    return asyncio.run(read())


# --- 1. A videos batch across Muse, Seedance and Wan ------------------------------------------

VIDEO_MODELS = ("muse-video", "seedance-2.0-fast", "wan2.7-t2v")


def test_a_videos_batch_across_three_families_completes_with_each_final_video(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    overlay = fast_video_polls(tmp_path / "fast-polls.yaml")
    gw = make_gateway(
        video_poll_after_ms=50,
        config=overlay,
        batch_poll_interval_s=0.05,
        reconcile_interval_s=0.1,
    )
    sdk = gw.sdk()
    bodies = [
        {"model": VIDEO_MODELS[i % 3], "prompt": f"a heron, take {i}", "seconds": "5"}
        for i in range(20)
    ]
    batch = finished(sdk, submit(sdk, "/v1/videos", bodies).id)

    assert batch.status == "completed", batch
    assert batch.request_counts.model_dump() == {"total": 20, "completed": 20, "failed": 0}
    assert batch.error_file_id is None
    out = read_lines(sdk, batch.output_file_id)
    assert [line["custom_id"] for line in out] == [f"line-{i}" for i in range(1, 21)]
    videos = [line["response"]["body"] for line in out]
    jobs = stored_jobs(gw, [video["id"] for video in videos])
    for i, line in enumerate(out):
        assert line["error"] is None and line["response"]["status_code"] == 200
        video = line["response"]["body"]
        assert video["object"] == "video" and video["status"] == "completed", video
        assert video["model"] == VIDEO_MODELS[i % 3]
        assert sdk.videos.download_content(video["id"]).content[4:8] == b"ftyp"
        assert jobs[i].status == "completed" and jobs[i].cost
    total = sum(job.cost or 0.0 for job in jobs)
    assert batch.model_extra is not None
    assert batch.model_extra["cost_usd"] == pytest.approx(total, abs=1e-6)
    # One upstream create per line, on each family's own API.
    creates = {
        "muse": [c for c in sim.sent("/v1/videos") if c.method == "POST"],
        "seedance": [c for c in sim.sent(ARK_TASKS) if c.method == "POST"],
        "wan": [c for c in sim.sent(WAN_CREATE) if c.method == "POST"],
    }
    assert {name: len(calls) for name, calls in creates.items()} == {
        "muse": 7,
        "seedance": 7,
        "wan": 6,
    }
    assert len({video["id"] for video in videos}) == 20
    print(f"videos batch: 20 lines (7 Muse, 7 Seedance, 6 Wan), cost_usd {total:.4f}")


# --- 2. Expiry, the clock moved past the window -------------------------------------------------


def served_gateway(sim: Sim, tmp_path: Path, **overrides: Any) -> tuple[Gateway, Any]:
    """A gateway served as make_gateway serves one, with its app at hand (its gateway object,
    its batch runner, is `app.state.gateway` once it serves)."""
    settings = gateway_settings(sim, tmp_path / "data", **overrides)
    app = create_app(settings)
    server = BackgroundServer(app, header_timeout_s=settings.header_timeout_s).start()
    RUNNING.append(server)  # stopped at the test's end, as make_gateway's are
    return Gateway(server.url, settings), app


@pytest.mark.usefixtures("make_gateway")  # stops the gateway served here at the test's end
def test_a_batch_whose_window_passes_ends_expired_with_its_pending_lines_in_the_error_file(
    sim: Sim, tmp_path: Path
) -> None:
    gw, app = served_gateway(sim, tmp_path, batch_concurrency=2, batch_poll_interval_s=0.05)
    runner = app.state.gateway.batch_runner
    sdk = gw.sdk()
    bodies = [{"model": "gpt-image-2-web", "prompt": f"[sim:sleep=0.3] tile {i}"} for i in range(8)]
    batch = submit(sdk, "/v1/images/generations", bodies)
    wait_until(lambda: completed(sdk, batch.id) >= 2, 10)
    # The window (24 h) passes while lines are still pending (two at a time run).
    runner.clock = lambda: time.time() + 86400 + 60
    batch = finished(sdk, batch.id)

    assert batch.status == "expired", batch
    assert batch.expired_at is not None and batch.expired_at >= batch.expires_at
    counts = batch.request_counts
    assert counts.total == 8 and counts.completed + counts.failed == 8
    assert counts.completed >= 2 and counts.failed >= 1
    out = read_lines(sdk, batch.output_file_id)
    errors = read_lines(sdk, batch.error_file_id)
    assert len(out) == counts.completed and len(errors) == counts.failed
    for line in out:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert line["response"]["body"]["data"][0]["b64_json"]
    for line in errors:
        assert line["response"] is None and line["error"]["code"] == "batch_expired", line
    ids = sorted(int(line["custom_id"].split("-")[1]) for line in [*out, *errors])
    assert ids == list(range(1, 9))
    # What ran before the window passed, and only that, went upstream.
    prompts = [c.body["prompt"] for c in sim.sent("/v1/images/generations")]
    assert len(prompts) == len(set(prompts)) == counts.completed
    print(f"expired batch: {counts.completed} lines done, {counts.failed} batch_expired")


# --- 3. kill -9 midway, another replica finishes: no line sent twice ---------------------------

LINES = 60


def line_states(database_url: str, batch_id: str) -> dict[int, tuple[str, str | None, Any]]:
    """Each line's (state, holder, lease_until), read from the shared database."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT line, state, holder, lease_until FROM batch_lines WHERE batch_id = %s",
            (batch_id,),
        ).fetchall()
    return {int(line): (state, holder, until) for line, state, holder, until in rows}


@contextlib.contextmanager
def replicas(env: dict[str, str], cwd: Path) -> Iterator[tuple[Served, Served]]:
    """Two gateway processes on the same settings, started side by side (each takes seconds
    to import and open its stores), stopped afterwards."""
    starts = [serving(["serve"], env, cwd), serving(["serve"], env, cwd)]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        entered = [pool.submit(start.__enter__) for start in starts]
        for start, future in zip(starts, entered, strict=True):
            if future.exception() is None:
                stack.push(start.__exit__)
        a, b = (future.result() for future in entered)
        yield a, b


def test_a_replica_killed_midway_leaves_its_batch_to_another_and_no_line_is_sent_twice(
    sim: Sim, tmp_path: Path, replica_store: dict[str, str]
) -> None:
    env = clean_env(
        replica_store,
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEY_OPENAIOFFICIAL=GROUP_KEYS["OpenAI Official"],
        MEDIAGATE_API_KEYS=f"team-a:{CLIENT_KEY}",
        # One object store for both (as replicas share S3): lines' outputs kept by one are
        # written into the output file by the other.
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_BATCH_LEASE_S="2",
        MEDIAGATE_BATCH_POLL_INTERVAL_S="0.1",
    )
    database_url = replica_store["database_url"]
    with replicas(env, tmp_path) as (a, b):
        sdk_a = openai.OpenAI(base_url=f"{a.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        sdk_b = openai.OpenAI(base_url=f"{b.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        # Each line waits 0.6 s in the upstream, after the upstream recorded it (a request
        # the gateway sent is counted even if its sender dies before the answer).
        bodies = [
            {"model": "gpt-image-2-web", "prompt": f"[sim:sleep=0.6] frame {i}"}
            for i in range(1, LINES + 1)
        ]
        batch = submit(sdk_a, "/v1/images/generations", bodies)

        def both_replicas_mid_flight() -> bool:
            states = line_states(database_url, batch.id).values()
            done = sum(state == "done" for state, _, _ in states)
            sending = Counter(holder for state, holder, _ in states if state == "sent")
            # Killed once both replicas are sending (a loaded machine may start one late).
            return done >= 6 and len(sending) == 2 and min(sending.values()) >= 2

        wait_until(both_replicas_mid_flight, timeout_s=20, interval_s=0.02)
        os.kill(a.proc.pid, signal.SIGKILL)  # no shutdown: its lines in flight just stop
        a.proc.wait(timeout=10)
        at_kill = line_states(database_url, batch.id)
        batch = finished(sdk_b, batch.id, timeout_s=30)
        out = read_lines(sdk_b, batch.output_file_id)
        errors = read_lines(sdk_b, batch.error_file_id)
    assert a.proc.returncode == -signal.SIGKILL

    assert batch.status == "completed", batch
    counts = batch.request_counts
    assert counts.total == LINES and counts.completed + counts.failed == LINES
    assert (len(out), len(errors)) == (counts.completed, counts.failed)
    number = {line["custom_id"]: int(line["custom_id"].split("-")[1]) for line in [*out, *errors]}
    assert sorted(number.values()) == list(range(1, LINES + 1))
    # Every line went upstream at most once; every line that completed, exactly once.
    sent = Counter(c.body["prompt"] for c in sim.sent("/v1/images/generations"))
    twice = {prompt: n for prompt, n in sent.items() if n > 1}
    assert not twice, f"lines sent more than once: {twice}"
    for line in out:
        assert line["response"]["status_code"] == 200
        assert sent[f"[sim:sleep=0.6] frame {number[line['custom_id']]}"] == 1
    # The lines that failed are the dead replica's in flight: sent, and never sent again.
    unknown = {number[line["custom_id"]] for line in errors}
    assert all(line["error"]["code"] == "outcome_unknown" for line in errors), errors
    assert all(at_kill[n][0] == "sent" for n in unknown)
    dead = {at_kill[n][1] for n in unknown}
    assert len(dead) == 1, f"lines of more than the dead replica ended unknown: {dead}"
    [holder] = dead
    in_flight = {n for n, (state, h, _) in at_kill.items() if h == holder and state == "sent"}
    assert in_flight == unknown
    # Its claimed lines (not yet sent) went back to pending, and the other replica ran them.
    claimed = {n for n, (state, h, _) in at_kill.items() if h == holder and state == "claimed"}
    done = {number[line["custom_id"]] for line in out}
    assert claimed <= done
    resumed = {
        n for n, (state, _, _) in at_kill.items() if state not in ("done", "failed")
    } - unknown
    assert resumed <= done
    print(
        f"kill -9 midway: {LINES} lines; {sum(sent.values())} upstream calls for "
        f"{len(sent)} lines (each sent once); {len(unknown)} outcome_unknown (in flight on the "
        f"dead replica); {len(resumed)} finished by the survivor after the kill "
        f"({len(claimed)} of them claimed by the dead one)"
    )


# --- 4. Lease recovery against the real SQL store, the clock injected --------------------------

DEAD = "replica-dead"  # the holder that stopped renewing: a replica that died


@contextlib.asynccontextmanager
async def opened_gateway(sim: Sim, tmp_path: Path, **overrides: Any) -> AsyncIterator[Any]:
    """A gateway opened in this test's own event loop (its lifespan, no HTTP): its batch runner
    and stores are called directly. Its own loops look again only after an hour (or when a line
    it runs ends), so the test's calls are the rounds, once the runner's first round (as it
    starts, with nothing to do) is over: two rounds at once are not what a replica does."""
    settings = gateway_settings(
        sim,
        tmp_path / "data",
        batch_poll_interval_s=3600,
        reconcile_interval_s=3600,
        **overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        gw = app.state.gateway
        deadline = time.monotonic() + 10
        while not gw.batch_runner._gauges_at:  # set as its first round ends
            assert time.monotonic() < deadline, "the batch runner's first round never ended"
            await asyncio.sleep(0.01)
        yield gw


async def insert_batch(gw: Any, endpoint: str, lines: list[dict[str, Any]], now: float) -> str:
    """A batch in progress, recorded as the service records one, with `lines` as they are (in
    whatever state a replica left them)."""
    bid = new_batch_id()
    batch = {
        "id": bid,
        "owner": "team-a",
        "endpoint": endpoint,
        "input_file_id": "file-recovery",
        "completion_window": "24h",
        "status": "in_progress",
        "created_at": int(now),
        "in_progress_at": int(now),
        "expires_at": int(now) + 86400,
        "total": len(lines),
        "updated_at": now,
    }
    rows = [
        {"batch_id": bid, "line": n, "custom_id": f"line-{n}", "body": "{}", **line}
        for n, line in enumerate(lines, 1)
    ]

    def insert(tx: Any) -> None:
        sql.insert_batch(tx, batch)
        sql.insert_lines(tx, rows)

    await gw.database.transaction(insert)
    return bid


async def lines_of(gw: Any, bid: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await gw.database.run(lambda tx: sql.line_page(tx, bid, 0, 100))
    return rows


async def batch_row(gw: Any, bid: str) -> dict[str, Any]:
    row: dict[str, Any] = await gw.database.run(lambda tx: sql.get_batch(tx, bid))
    return row


def test_a_lapsed_claim_goes_back_to_pending_and_runs_once(
    sim: Sim, tmp_path: Path, job_store: dict[str, str]
) -> None:
    async def scenario() -> None:
        async with opened_gateway(sim, tmp_path, **job_store) as gw:
            runner = gw.batch_runner
            t0 = time.time()
            clock = [t0]
            runner.clock = lambda: clock[0]
            body = json.dumps({"model": "gpt-image-2-web", "prompt": "reclaimed"})
            line = {"body": body, "state": "claimed", "holder": DEAD, "lease_until": t0 + 30}
            bid = await insert_batch(gw, IMAGES, [{**line, "attempts": 1}], t0)

            await runner._recover(t0 + 29)  # the lease still runs: the holder may be alive
            [row] = await lines_of(gw, bid)
            assert (row["state"], row["holder"]) == ("claimed", DEAD)

            clock[0] = t0 + 31
            await runner._recover(clock[0])  # lapsed, never sent: pending again
            [row] = await lines_of(gw, bid)
            assert (row["state"], row["holder"], row["lease_until"]) == ("pending", None, None)
            assert not sim.sent("/v1/images/generations")

            await runner.round()  # this replica takes it, and sends it
            await asyncio.gather(*runner._running.values())
            [row] = await lines_of(gw, bid)
            assert (row["state"], row["attempts"], row["status_code"]) == ("done", 2, 200)
            assert (await batch_row(gw, bid))["completed"] == 1
            [call] = sim.sent("/v1/images/generations")
            assert call.body["prompt"] == "reclaimed"

    asyncio.run(scenario())


def test_a_lapsed_sent_image_line_ends_outcome_unknown_and_is_never_sent_again(
    sim: Sim, tmp_path: Path, job_store: dict[str, str]
) -> None:
    async def scenario() -> None:
        async with opened_gateway(sim, tmp_path, **job_store) as gw:
            runner = gw.batch_runner
            t0 = time.time()
            runner.clock = lambda: t0 + 31
            body = json.dumps({"model": "gpt-image-2-web", "prompt": "sent once"})
            sent = {"body": body, "state": "sent", "holder": DEAD, "lease_until": t0 + 30}
            bid = await insert_batch(gw, IMAGES, [{**sent, "request_id": "req_dead"}], t0)

            await runner._recover(t0 + 31)
            await runner._recover(t0 + 32)  # a second look (another replica's) ends nothing more
            [row] = await lines_of(gw, bid)
            assert (row["state"], row["holder"], row["cost_micros"]) == ("failed", None, 0)
            result = json.loads(row["result"])
            assert result["custom_id"] == "line-1" and result["response"] is None
            assert result["error"]["code"] == "outcome_unknown"
            batch = await batch_row(gw, bid)
            assert (batch["completed"], batch["failed"], batch["cost_micros"]) == (0, 1, 0)

            await runner.round()  # nothing left: the batch is finalized, with its error file
            batch = await batch_row(gw, bid)
            assert (batch["status"], batch["output_file_id"]) == ("completed", None)
            _, found = await gw.batches.files.content("team-a", batch["error_file_id"])
            [line] = [json.loads(x) for x in b"".join([c async for c in found.chunks]).splitlines()]
            assert line["error"]["code"] == "outcome_unknown"
            assert not sim.sent("/v1/images/generations")

    asyncio.run(scenario())


def video_job(job_id: str, now: float) -> VideoJob:
    return VideoJob(
        id=job_id,
        upstream_id="video_upstream_1",
        owner="team-a",
        model="muse-video",
        route="muse-video",
        group="default",
        key_fp="0" * 64,
        prompt="a heron",
        size="720x1280",
        seconds=8,
        status="in_progress",
        created_at=int(now),
        updated_at=now,
        progress=40,
    )


def test_a_lapsed_sent_video_line_whose_job_exists_waits_for_the_job(
    sim: Sim, tmp_path: Path, job_store: dict[str, str]
) -> None:
    async def scenario() -> None:
        async with opened_gateway(sim, tmp_path, **job_store) as gw:
            runner = gw.batch_runner
            t0 = time.time()
            runner.clock = lambda: t0 + 31
            job_id, lost_id = new_video_id(), new_video_id()
            await gw.jobs.insert(video_job(job_id, t0))
            body = json.dumps({"model": "muse-video", "prompt": "a heron"})
            sent = {"body": body, "state": "sent", "holder": DEAD, "lease_until": t0 + 30}
            bid = await insert_batch(
                gw,
                VIDEOS,
                [{**sent, "job_id": job_id}, {**sent, "job_id": lost_id}],  # lost: never recorded
                t0,
            )

            await runner._recover(t0 + 31)
            made, lost = await lines_of(gw, bid)
            assert (made["state"], made["holder"], made["job_id"]) == ("waiting", None, job_id)
            assert lost["state"] == "failed"
            assert json.loads(lost["result"])["error"]["code"] == "outcome_unknown"

            await runner.round()  # the job still renders: the line waits, the batch runs on
            made, _ = await lines_of(gw, bid)
            assert made["state"] == "waiting"
            assert (await batch_row(gw, bid))["status"] == "in_progress"

            changes = {"status": "completed", "progress": 100, "completed_at": int(t0), "cost": 0.3}
            assert await gw.jobs.update(job_id, "in_progress", changes) is not None
            await runner.round()  # the job ended: the line ends with the final Video object
            made, _ = await lines_of(gw, bid)
            assert (made["state"], made["cost_micros"]) == ("done", 300_000)
            video = json.loads(made["result"])["response"]["body"]
            assert (video["id"], video["status"]) == (job_id, "completed")

            await runner.round()
            batch = await batch_row(gw, bid)
            assert (batch["status"], batch["completed"], batch["failed"]) == ("completed", 1, 1)
            assert batch["cost_micros"] == 300_000
            assert not [c for c in sim.sent() if c.method == "POST"]  # nothing sent again

    asyncio.run(scenario())

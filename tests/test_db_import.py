"""`mediagate db import`: a store filled by the backends of the old MEDIAGATE_STORE_URL (Redis
or SQLite, as main had them before the records' database: tests/data/make_main_store.py) moved
into the records' database on each engine: every job, the webhooks still owed, the usage as
rollups; and nothing twice when it runs again."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mediagate.cli import main
from mediagate.stores.jobs import VideoJob
from mediagate.stores.sql.db import Database, Tx
from mediagate.stores.sql.jobs import SqlJobStore
from mediagate.videos.records import openai_video

DATA = Path(__file__).parent / "data"
T = 1_765_000_000  # the old store's jobs were created from here on
DAY = "2026-12-06"  # the day the old store's usage was booked


@pytest.fixture(params=["redis", "sqlite"])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """An old store's URL and prefix, holding what main's backends wrote."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.sqlite3"
        with sqlite3.connect(path) as db:
            db.executescript((DATA / "main-store.sqlite.sql").read_text())
        yield f"sqlite:///{path}", "unused"
        return
    url = f"{request.getfixturevalue('redis_server')}/0"
    prefix = f"mediagate-import-{secrets.token_hex(6)}"
    client = redis.Redis.from_url(url, decode_responses=True)
    dump: dict[str, dict[str, Any]] = json.loads((DATA / "main-store.redis.json").read_text())
    for name, value in dump.items():
        key = name.replace("{prefix}", prefix, 1)
        if "hash" in value:
            client.hset(key, mapping=value["hash"])
        elif "zset" in value:
            client.zadd(key, value["zset"])
        else:
            client.set(key, value["string"])
    try:
        yield url, prefix
    finally:
        client.delete(*client.keys(f"{prefix}:*"))
        client.close()


def run_import(
    capsys: pytest.CaptureFixture[str], source: str, prefix: str, target: str
) -> tuple[int, str]:
    code = main(["db", "import", source, "--prefix", prefix, "--url", target])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def read_back(database_url: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        database = await Database.open(database_url)
        try:
            jobs = SqlJobStore(database)
            ids = ["video_q1", "video_p1", "video_c1", "video_f1", "video_d1", "video_old"]
            found = {job_id: await jobs.get(job_id) for job_id in [*ids, "video_c2"]}
            listed_a, _ = await jobs.list("team-a", after=None, limit=10, order="asc")
            listed_b, _ = await jobs.list("team-b", after=None, limit=10, order="asc")
            rollups = await database.run(
                lambda tx: [
                    tuple(row)
                    for row in tx.execute(
                        "SELECT grain, bucket, key, team, model, route, requests, images, "
                        "video_seconds, cost_micros FROM usage_rollups "
                        "ORDER BY grain, key, model"
                    ).fetchall()
                ]
            )

            def table(sql: str) -> Callable[[Tx], list[tuple[Any, ...]]]:
                return lambda tx: [tuple(row) for row in tx.execute(sql).fetchall()]

            budgets = await database.run(
                table(
                    "SELECT owner, period, spent_micros, reserved_micros FROM budgets "
                    "WHERE owner_kind = 'key' ORDER BY owner, period"
                )
            )
            held = await database.run(
                table("SELECT id, key, amount_micros FROM reservations ORDER BY id")
            )
            return {
                "budgets": budgets,
                "reservations": held,
                "jobs": found,
                "team-a": [job.id for job in listed_a],
                "team-b": [job.id for job in listed_b],
                "unfinished": [job.id for job in await jobs.unfinished(10)],
                "census": (await jobs.census()).by_status,
                "outbox": await jobs.outbox(),
                "claimed": await jobs.claim_deliveries(30, 10),
                "rollups": rollups,
            }
        finally:
            await database.close()

    return asyncio.run(read())


def test_an_old_store_moves_into_the_database_once(
    old_store: tuple[str, str], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, prefix = old_store
    code, out = run_import(capsys, source, prefix, database_url)
    print(out)
    assert code == 0, out
    assert out.startswith(f"{database_url.split(':')[0]}: imported from {source}\n")
    assert "video jobs: 7 imported, 0 already there" in out
    assert "webhook events to deliver: 2 imported" in out
    assert "usage: 4 key/day/model totals imported (5 requests, $1.843457), 0 already there" in out
    assert (
        "budgets: spend totals of 2 key-months ($1.843457) and 2 key-days, 2 open reservations "
        "($0.750000); 4 totals and 2 reservations imported, the rest already there"
    ) in out

    state = read_back(database_url)
    jobs: dict[str, VideoJob | None] = state["jobs"]
    assert all(job is not None for job in jobs.values())
    c1, f1, d1, old = jobs["video_c1"], jobs["video_f1"], jobs["video_d1"], jobs["video_old"]
    assert c1 is not None and f1 is not None and d1 is not None and old is not None
    assert (c1.status, c1.cost, c1.completed_at, c1.asked) == ("completed", 0.4, T + 60, "sora-2")
    assert c1.route_snapshot == '{"id":"sora-2-official","multiplier":1.0}'
    assert (c1.group, c1.key_fp, c1.upstream_id) == ("Sora2Official", "ab" * 32, "task_video_c1")
    assert (f1.status, f1.cost, f1.model) == ("failed", 0.0, "veo-3")
    assert f1.error == {"code": "moderation_blocked", "message": "no"}
    assert (d1.deleted_at, d1.cost, d1.seconds) == (T + 90, 1.2, 12)
    assert (old.asked, old.route_snapshot) == (None, None)
    assert openai_video(old)["model"] == "sora-2" and openai_video(c1)["seconds"] == "8"
    # Each owner's list in creation order; the deleted job is on record but not listed.
    assert state["team-a"] == ["video_q1", "video_p1", "video_c1", "video_old"]
    assert state["team-b"] == ["video_f1", "video_c2"]
    assert state["unfinished"] == ["video_q1", "video_p1"]  # the reconciler's work
    assert state["census"] == {"queued": 1, "in_progress": 1, "completed": 4, "failed": 1}
    # The webhooks still owed (the delivered one is not), due now.
    assert state["outbox"] == (2, 1_765_000_100.0)
    assert sorted(event.id for event in state["claimed"]) == ["evt_c1", "evt_f1"]
    assert all(
        json.loads(e.body)["data"]["id"] in ("video_c1", "video_f1") for e in state["claimed"]
    )

    day = [
        ("day", DAY, "team-a", "", "gpt-image-2", "", 2, 3, 0, 120_000),
        ("day", DAY, "team-a", "", "sora-2", "", 1, 0, 8, 400_000),
        ("day", DAY, "team-b", "", "gpt-image-2", "", 1, 1, 0, 123_457),
        ("day", DAY, "team-b", "", "veo-3", "", 1, 0, 12, 1_200_000),
    ]
    hour = [("hour", f"{DAY}T00", *row[2:]) for row in day]
    assert state["rollups"] == day + hour
    # The budgets: spend per key and period, the open reservations held again (today).
    months = [row for row in state["budgets"] if len(row[1]) == 7]
    assert sum(row[2] for row in months) == 1_843_457
    assert len(state["reservations"]) == 2
    assert sum(row[2] for row in state["reservations"]) == 750_000

    # Again: nothing twice.
    code, out = run_import(capsys, source, prefix, database_url)
    assert code == 0, out
    assert "video jobs: 0 imported, 7 already there" in out
    assert "webhook events to deliver: 0 imported" in out
    assert "usage: 0 key/day/model totals imported (0 requests, $0.000000), 4 already" in out
    assert "0 totals and 0 reservations imported" in out
    again = read_back(database_url)
    assert again["rollups"] == day + hour
    assert (again["budgets"], again["reservations"]) == (state["budgets"], state["reservations"])
    assert again["outbox"] == (2, 1_765_000_100.0)


def test_an_import_from_nowhere_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    code, out = run_import(capsys, f"sqlite:///{tmp_path / 'missing.sqlite3'}", "x", target)
    assert code == 2 and "no store to import at" in out
    code, out = run_import(capsys, target, "x", target.replace("records", "./records"))
    assert code == 2 and "not the old store's own file" in out
    code, out = run_import(capsys, "postgresql://db/old", "x", target)
    assert code == 2 and "must be redis://" in out
    code, out = run_import(capsys, "redis://127.0.0.1:1/0", "x", target)
    assert code == 2 and "Cannot reach the Redis store to import" in out


def test_a_large_old_store_moves_in_batches_in_order(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1,200 more jobs in the old SQLite file (copies of one of main's rows): more than two of
    # the import's transactions, and each owner's order kept across them.
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript((DATA / "main-store.sqlite.sql").read_text())
        columns = [row[1] for row in db.execute("PRAGMA table_info(video_jobs)")]
        copied = ", ".join(f'"{c}"' for c in columns if c not in ("seq", "id", "created_at"))
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) "
            f'INSERT INTO video_jobs ("id", "created_at", {copied}) '
            f"SELECT printf('video_bulk%04d', i), {T + 1000} + i / 7, {copied} "
            "FROM n, video_jobs WHERE video_jobs.id = 'video_q1' ORDER BY i"
        )
    code, out = run_import(capsys, f"sqlite:///{path}", "unused", database_url)
    assert code == 0 and "video jobs: 1207 imported, 0 already there" in out, out

    async def listed() -> list[str]:
        database = await Database.open(database_url)
        try:
            jobs = SqlJobStore(database)
            ids: list[str] = []
            after = None
            while True:
                page, more = await jobs.list("team-a", after=after, limit=100, order="asc")
                ids += [job.id for job in page]
                if not more:
                    return ids
                after = page[-1].id
        finally:
            await database.close()

    ids = asyncio.run(listed())
    bulk = [f"video_bulk{i:04d}" for i in range(1, 1201)]
    assert ids == ["video_q1", "video_p1", "video_c1", "video_old", *bulk]

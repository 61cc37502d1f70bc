"""The records bench's seeding (bench/records.py), small, on both engines: the usage rollups it
writes equal the request log's sums, per hour and per day bucket, and the check the bench runs
on its million rows notices when they do not."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.records import ADMIN_KEY, Spread, migrate, rollup_differences, seed, time_console
from mediagate.stores.sql.db import Database, Tx

from .conftest import Gateway

ROWS = 2_000
SUMMED = ("requests", "errors", "images", "video_seconds", "cost_micros")
END = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp()


def _query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    async def run() -> list[Any]:
        db = await Database.open(url, pool_size=1)
        try:
            return await db.run(lambda tx: tx.execute(sql, params).fetchall())
        finally:
            await db.close()

    return asyncio.run(run())


def _change(url: str, sql: str) -> None:
    async def run() -> None:
        db = await Database.open(url, pool_size=1)
        try:

            def work(tx: Tx) -> None:
                tx.execute(sql)

            await db.transaction(work)
        finally:
            await db.close()

    asyncio.run(run())


def test_seeded_rollups_equal_the_log(database_url: str) -> None:
    migrate(database_url)
    seeded = seed(database_url, ROWS, end=END)
    assert seeded.rows == ROWS and seeded.hour_rollups > seeded.day_rollups > 0
    assert seeded.end == dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
    assert seeded.end - seeded.start == Spread().days * 86400

    # The spread asked for: the log holds the rows, within the 30 days, its keys in 8 teams.
    log = _query(
        database_url,
        "SELECT at, key, team, model, route, status, images, video_seconds, cost_micros, "
        "job_id FROM request_log",
    )
    assert len(log) == ROWS
    assert all(seeded.start <= row["at"] < seeded.end for row in log)
    assert len({row["team"] for row in log}) == 8
    assert 40 <= len({row["key"] for row in log}) <= 50
    errors = sum(row["status"] >= 400 for row in log)
    assert 0.03 * ROWS < errors < 0.07 * ROWS
    videos = [row for row in log if row["video_seconds"]]
    assert videos and all(row["job_id"] for row in videos)

    # Each rollup row, recomputed here from the log by its UTC bucket, is what was written.
    expected: Counter[tuple[Any, ...]] = Counter()
    for row in log:
        when = dt.datetime.fromtimestamp(row["at"], dt.UTC)
        group = (row["key"], row["team"], row["model"], row["route"] or "")
        sums = (1, int(row["status"] >= 400), row["images"], row["video_seconds"])
        for grain, bucket in (("hour", when.strftime("%Y-%m-%dT%H")), ("day", f"{when:%Y-%m-%d}")):
            for name, value in zip(SUMMED[:4], sums, strict=True):
                expected[(grain, bucket, *group, name)] += value
            expected[(grain, bucket, *group, "cost_micros")] += row["cost_micros"]
    written: Counter[tuple[Any, ...]] = Counter()
    for row in _query(database_url, "SELECT * FROM usage_rollups"):
        group = (row["grain"], row["bucket"], row["key"], row["team"], row["model"], row["route"])
        for name in SUMMED:
            written[(*group, name)] += row[name]
    assert +written == +expected
    assert rollup_differences(database_url) == []

    # The bench's check notices a rollup a cent off.
    _change(
        database_url,
        "UPDATE usage_rollups SET cost_micros = cost_micros + 10000 WHERE grain = 'day' AND "
        "bucket = (SELECT MIN(bucket) FROM usage_rollups WHERE grain = 'day')",
    )
    differences = rollup_differences(database_url)
    assert differences and all(d.startswith("day ") for d in differences)


def test_python_m_bench_records_runs_small_on_both_engines(tmp_path: Path) -> None:
    """The mode itself, tiny: both engines seeded and checked, the reads timed in SQL, and a
    gateway served on each seeded database answers the admin reads."""
    out = tmp_path / "records.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGATE_")}
    if "MEDIAGATE_TEST_POSTGRES_URL" in os.environ:
        env["MEDIAGATE_TEST_POSTGRES_URL"] = os.environ["MEDIAGATE_TEST_POSTGRES_URL"]
    env |= {"BENCH_RECORDS_ROWS": "2000", "BENCH_RECORDS_OUT": str(out)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "records"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert set(results["engines"]) == {"sqlite", "postgresql"}
    for engine in results["engines"].values():
        assert engine["seeded"]["rows"] == 2000 and engine["rollup_differences"] == []
        assert len(engine["sql"]) == 4
        for name, timing in engine["sql"].items():
            assert timing["median_ms"] >= timing["min_ms"] > 0 and timing["plan"], name
            assert timing["rows"] or "next page" in name, name  # 2,000 rows: one page of 5xx
        # Over HTTP: every read answered and timed (2,000 rows: one page of a team's 5xx).
        http = engine["http"]
        assert {name for name, timing in http.items() if "median_ms" not in timing} == {
            name for name in http if "next page" in name
        }
        assert all(t["rows"] for t in http.values() if "median_ms" in t)


def test_every_console_page_answers_on_the_seeded_records(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """The bench's console mode (bench/records.py `time_console`) on a small seeded database:
    it signs in through the form and every page it times answers 200, so the 1M-row numbers
    are of the pages themselves."""
    url = f"sqlite:///{tmp_path / 'seeded.sqlite3'}"
    migrate(url)
    seeded = seed(url, ROWS, end=END)
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    gw = make_gateway(database_url=url, admin_keys=f"bench:admin:{digest}")
    timed = time_console(gw.url, seeded)
    assert "one request" in timed
    assert {name: t["status"] for name, t in timed.items()} == dict.fromkeys(timed, "measured")

"""The records at scale (issue 25): 1,000,000 request-log rows, then the admin API's reads.

`python -m bench records` (`make bench-records`). For each engine, SQLite (a file) and
PostgreSQL (a database of its own, created and dropped; the server of
`MEDIAGATE_TEST_POSTGRES_URL` or the tests' local default):

1. migrate an empty database as the gateway does, then seed `BENCH_RECORDS_ROWS` (default
   1,000,000) `request_log` rows spread like a month of real traffic (30 days, ~50 keys in
   ~8 teams, ~20 models on ~40 routes, 5% errors, a tenth of them video jobs with job and
   upstream task ids) and the `usage_rollups` the gateway would have written for them (hour
   and day rows, equal to the log's sums). Seeding is timed: SQLite takes one transaction of
   `executemany` with the log's indexes built after the rows; PostgreSQL takes COPY. Then
   ANALYZE, as PostgreSQL's autovacuum would;
2. check that the rollups equal the log's sums (requests, errors, images, video seconds, cost)
   by key, team, model and route, at each grain;
3. time the queries behind the admin API's two heaviest reads, each the minimum and median of
   5 runs after one warm-up, against 200 ms:
   - usage for the month, by day, grouped by team and model (from the rollups);
   - the busiest team's 5xx requests, newest first, 50 to a page (and the page after it);
   - the busiest model's requests over one day, 50 to a page.
   In SQL: the admin API's own queries (mediagate.stores.sql.reports) through the gateway's
   `Database` (its driver, pool and threads), each with its query plan; the usage month in one
   query. Over HTTP: against a `mediagate serve` process on the seeded database (simulator
   mode, an admin key), `/admin/v1/usage` (its first page of 1,000 groups, and every page in
   turn) and `/admin/v1/requests`. An endpoint the gateway does not serve (404) is reported as
   such, not timed; `--sql` skips the HTTP part.

Writes bench/records-results.json (or BENCH_RECORDS_OUT). Exit 1 if a timing passes 200 ms or
the rollups differ from the log. `seed()` and `rollup_differences()` are what
tests/test_records_bench.py runs with a small N on both engines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from mediagate.stores.sql.db import Database, Tx, check_database_url
from mediagate.stores.sql.migrate import upgrade
from mediagate.stores.sql.reports import RequestFilter, Scope, UsageQuery, requests_page, usage_page

from .databases import fresh_postgres_database, postgres_server, redis_url

TARGET_MS = 200.0
RUNS = 5
ADMIN_KEY = "bench-records-admin-key"

LOG_COLUMNS = (
    "request_id",
    "at",
    "key",
    "team",
    "endpoint",
    "method",
    "model",
    "route",
    "routes_tried",
    "token_group",
    "tier",
    "quality",
    "n",
    "seconds",
    "status",
    "error_code",
    "latency_ms",
    "upstream_ms",
    "cost_micros",
    "cost_state",
    "images",
    "video_seconds",
    "job_id",
    "upstream_task_id",
    "replayed",
    "trace_id",
)
ROLLUP_COLUMNS = (
    "grain",
    "bucket",
    "key",
    "team",
    "model",
    "route",
    "requests",
    "errors",
    "reads",
    "images",
    "video_seconds",
    "cost_micros",
)
# The errors, by share: (status, error_code, routed). Refused before routing: no route.
ERRORS = (
    (400, "invalid_request_error", False, 0.2),
    (429, "rate_limit_exceeded", False, 0.2),
    (500, "internal_error", True, 0.1),
    (502, "upstream_error", True, 0.25),
    (503, "server_overloaded", True, 0.15),
    (504, "upstream_timeout", True, 0.1),
)


@dataclass(frozen=True)
class Spread:
    """How the seeded traffic is spread."""

    teams: int = 8
    keys: int = 50
    image_models: int = 16
    video_models: int = 4  # each model has two routes: official and fallback
    models_per_key: int = 4
    days: int = 30
    error_share: float = 0.05
    video_share: float = 0.1


@dataclass
class Seeded:
    """What `seed` wrote, and how long it took."""

    engine: str
    rows: int
    hour_rollups: int
    day_rollups: int
    seconds: float
    start: float  # the first seeded second (a UTC midnight)
    end: float  # the end of the last seeded day
    teams: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds each step took
    size_mb: float = 0.0  # the database's size on disk afterwards
    busiest_team: str = ""  # the team and the model with the most requests: the reads' filters
    busiest_model: str = ""


class _Clock:
    """The seconds each step of a seeding took."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.size_mb = 0.0
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 2)
        self._last = now


def _names(spread: Spread) -> tuple[list[str], list[str], list[str], list[str]]:
    teams = [f"team-{i + 1:02d}" for i in range(spread.teams)]
    keys = [f"key-{i + 1:02d}" for i in range(spread.keys)]
    images = [f"image-model-{i + 1:02d}" for i in range(spread.image_models)]
    videos = [f"video-model-{i + 1:02d}" for i in range(spread.video_models)]
    return teams, keys, images, videos


def generate(
    rows: int, start: float, spread: Spread = Spread(), seed: int = 25
) -> Iterator[tuple[Any, ...]]:
    """`rows` request-log rows (in LOG_COLUMNS order) over `spread.days` days from `start`."""
    rng = random.Random(seed)
    teams, keys, images, videos = _names(spread)
    # Some keys are busier than others; each uses a few models, videos as often as asked.
    key_weights = list(itertools.accumulate(1.0 / (i + 1) ** 0.8 for i in range(len(keys))))
    key_team = {k: teams[i % len(teams)] for i, k in enumerate(keys)}
    key_models = {
        k: (
            rng.sample(images, min(spread.models_per_key - 1, len(images))),
            rng.sample(videos, 1),
        )
        for k in keys
    }
    error_weights = list(itertools.accumulate(e[3] for e in ERRORS))
    span = spread.days * 86400.0
    price = {m: 20_000 + 10_000 * (i % 5) for i, m in enumerate(images)}  # micro-USD an image
    per_second = {m: 50_000 + 25_000 * (i % 3) for i, m in enumerate(videos)}
    tried = {
        f"{m}.{way}": json.dumps([{"route": f"{m}.{way}", "outcome": "served"}])
        for m in images + videos
        for way in ("official", "fallback")
    }
    qualities = ("low", "medium", "high", "auto")
    tiers = ("1024x1024", "1536x1024", "1024x1536")
    counts = (1, 1, 1, 2, 4)
    lengths = (4, 8, 12)
    random_ = rng.random
    step = span / max(rows, 1)  # rows arrive in time order, as a log's do
    bits = rng.getrandbits
    drawn = rng.choices(keys, cum_weights=key_weights, k=rows)
    for i, key in enumerate(drawn):
        image_models, video_models = key_models[key]
        video = random_() < spread.video_share
        models = video_models if video else image_models
        model = models[int(random_() * len(models))]
        fallback = random_() < 0.15
        route: str | None = f"{model}.{'fallback' if fallback else 'official'}"
        at = start + (i + random_()) * step
        request_id = f"req_{bits(64):016x}{i:07x}"
        trace_id = f"{bits(128):032x}"
        # Seconds to a minute for an image, a couple of seconds to create a video job.
        latency = (3000.0 + 57000.0 * random_() ** 2) if not video else 800.0 + 2000.0 * random_()
        upstream: float | None = latency * 0.97
        status, error_code, cost, images_n, video_s = 200, None, 0, 0, 0
        n = seconds = job_id = task_id = None
        tier = quality = None
        cost_state = "none"
        if video:
            endpoint = "videos.create"
            seconds = lengths[int(random_() * 3)]
        else:
            endpoint = "images.generations"
            n = counts[int(random_() * 5)]
            tier = tiers[int(random_() * 3)]
            quality = qualities[int(random_() * 4)]
        if random_() < spread.error_share:
            status, error_code, routed, _ = rng.choices(ERRORS, cum_weights=error_weights)[0]
            if not routed:
                route = None
                latency, upstream = 1.0 + 4.0 * random_(), None
        elif video:
            video_s = seconds or 0
            cost = video_s * per_second[model]
            job_id = f"video_{bits(96):024x}"
            task_id = f"task_{bits(64):016x}"
            cost_state = "booked"
        else:
            images_n = n or 0
            cost = images_n * price[model]
            cost_state = "booked"
        yield (
            request_id,
            at,
            key,
            key_team[key],
            endpoint,
            "POST",
            model,
            route,
            None if route is None else tried[route],
            "default" if route is None or fallback else "official",
            tier,
            quality,
            n,
            seconds,
            status,
            error_code,
            latency,
            upstream,
            cost,
            cost_state,
            images_n,
            video_s,
            job_id,
            task_id,
            0,
            trace_id,
        )


class Rollups:
    """The usage rollups of a stream of log rows, as the gateway writes them: hour and day rows
    by key, team, model and route ('' when none)."""

    def __init__(self) -> None:
        self.hours: dict[tuple[str, str, str, str, str], list[int]] = {}
        self._bucket: dict[int, str] = {}

    def add(self, row: Sequence[Any]) -> None:
        hour = int(row[1] // 3600)
        bucket = self._bucket.get(hour)
        if bucket is None:
            bucket = dt.datetime.fromtimestamp(hour * 3600, dt.UTC).strftime("%Y-%m-%dT%H")
            self._bucket[hour] = bucket
        # key, team, model, route: positions 2, 3, 6, 7; status 14; cost 18; images 20; video 21.
        group = (bucket, row[2], row[3], row[6], row[7] or "")
        sums = self.hours.get(group)
        if sums is None:
            sums = self.hours[group] = [0, 0, 0, 0, 0]
        sums[0] += 1
        sums[1] += row[14] >= 400
        sums[2] += row[20]
        sums[3] += row[21]
        sums[4] += row[18]

    def busiest(self, position: int) -> str:
        """The value with the most requests at `position` of the group (2 team, 3 model)."""
        counts: dict[str, int] = {}
        for group, sums in self.hours.items():
            counts[group[position]] = counts.get(group[position], 0) + sums[0]
        return max(sorted(counts), key=lambda name: counts[name])

    def rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(hour rows, day rows) in ROLLUP_COLUMNS order."""
        days: dict[tuple[str, str, str, str, str], list[int]] = {}
        hour_rows = []
        for (bucket, key, team, model, route), sums in self.hours.items():
            requests, errors, images, video_s, cost = sums
            hour_rows.append(
                (
                    "hour",
                    bucket,
                    key,
                    team,
                    model,
                    route,
                    requests,
                    errors,
                    0,
                    images,
                    video_s,
                    cost,
                )
            )
            day = days.setdefault((bucket[:10], key, team, model, route), [0, 0, 0, 0, 0])
            for i, value in enumerate(sums):
                day[i] += value
        day_rows = [
            ("day", *group[:5], s[0], s[1], 0, s[2], s[3], s[4]) for group, s in days.items()
        ]
        # In primary-key order: each B-tree is appended to, not split at random.
        return sorted(hour_rows), sorted(day_rows)


def migrate(url: str) -> None:
    """Create the gateway's schema in an empty database, as the gateway does at start."""

    async def run() -> None:
        db = await Database.open(url, pool_size=1)
        try:
            await upgrade(db)
        finally:
            await db.close()

    asyncio.run(run())


def seed(
    url: str,
    rows: int,
    *,
    end: float | None = None,
    spread: Spread = Spread(),
    seed: int = 25,
    batch: int = 50_000,
) -> Seeded:
    """Seed a migrated, empty database (`url`) with `rows` request-log rows over the
    `spread.days` whole UTC days before `end` (default: through today), their usage rollups,
    and the teams and keys they name; then ANALYZE."""
    engine = check_database_url(url)
    today = dt.datetime.fromtimestamp(end or time.time(), dt.UTC).date()
    last = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
    start = last - spread.days * 86400
    teams, keys, images, videos = _names(spread)
    started = time.perf_counter()
    rollups = Rollups()

    def log_batches() -> Iterator[list[tuple[Any, ...]]]:
        chunk: list[tuple[Any, ...]] = []
        for row in generate(rows, start, spread, seed):
            rollups.add(row)
            chunk.append(row)
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    people = _people(teams, keys, start)
    clock = _Clock()
    if engine == "sqlite":
        path = url.removeprefix("sqlite:///")
        counts = _seed_sqlite(path, log_batches(), rollups, people, clock)
    else:
        counts = _seed_postgresql(url, log_batches(), rollups, people, clock)
    return Seeded(
        engine=engine,
        rows=rows,
        hour_rollups=counts[0],
        day_rollups=counts[1],
        seconds=round(time.perf_counter() - started, 2),
        start=start,
        end=last,
        teams=teams,
        keys=keys,
        models=images + videos,
        phases=clock.phases,
        size_mb=clock.size_mb,
        busiest_team=rollups.busiest(2),
        busiest_model=rollups.busiest(3),
    )


_People = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def _people(teams: list[str], keys: list[str], at: float) -> _People:
    team_rows = [(t, "api", at, at) for t in teams]
    key_rows = [
        (k, teams[i % len(teams)], hashlib.sha256(f"bench-{k}".encode()).hexdigest(), "api", at, at)
        for i, k in enumerate(keys)
    ]
    return team_rows, key_rows


_TEAM_SQL = "INSERT INTO teams (name, source, created_at, updated_at) VALUES (?, ?, ?, ?)"
_KEY_SQL = (
    "INSERT INTO client_keys (name, team, sha256, source, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _insert_sql(table: str, columns: Sequence[str], mark: str) -> str:
    marks = ", ".join([mark] * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _seed_sqlite(
    path: str,
    batches: Iterator[list[tuple[Any, ...]]],
    rollups: Rollups,
    people: _People,
    clock: _Clock,
) -> tuple[int, int]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # A bulk load into a fresh file: no journal while it lasts (the gateway's WAL after).
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("BEGIN")
        # The log's indexes are built once after the rows (what they hold is the same).
        indexes = [
            (name, sql)
            for name, sql in db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'request_log' AND sql IS NOT NULL"
            )
        ]
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        db.executemany(_TEAM_SQL, people[0])
        db.executemany(_KEY_SQL, people[1])
        insert = _insert_sql("request_log", LOG_COLUMNS, "?")
        for chunk in batches:
            db.executemany(insert, chunk)
        clock.lap("log rows (made and loaded)")
        for _, sql in indexes:
            db.execute(sql)
        clock.lap("log indexes")
        hours, days = rollups.rows()
        insert = _insert_sql("usage_rollups", ROLLUP_COLUMNS, "?")
        db.executemany(insert, hours)
        db.executemany(insert, days)
        db.execute("COMMIT")
        clock.lap("rollups")
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode=WAL")
        clock.lap("analyze")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        clock.size_mb = round(pages * db.execute("PRAGMA page_size").fetchone()[0] / 2**20, 1)
        return len(hours), len(days)
    finally:
        db.close()


def _seed_postgresql(
    url: str,
    batches: Iterator[list[tuple[Any, ...]]],
    rollups: Rollups,
    people: _People,
    clock: _Clock,
) -> tuple[int, int]:
    import psycopg

    # One transaction, committed on leaving; the log's indexes (but its primary key) built
    # once after the rows.
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '256MB'")
        indexes = cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = 'request_log' AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        ).fetchall()
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        cur.executemany(_TEAM_SQL.replace("?", "%s"), people[0])
        cur.executemany(_KEY_SQL.replace("?", "%s"), people[1])
        with cur.copy(f"COPY request_log ({', '.join(LOG_COLUMNS)}) FROM STDIN") as copy:
            for chunk in batches:
                for row in chunk:
                    copy.write_row(row)
        clock.lap("log rows (made and loaded)")
        for _, definition in indexes:
            cur.execute(definition)
        clock.lap("log indexes")
        hours, days = rollups.rows()
        with cur.copy(f"COPY usage_rollups ({', '.join(ROLLUP_COLUMNS)}) FROM STDIN") as copy:
            for row in hours:
                copy.write_row(row)
            for row in days:
                copy.write_row(row)
    clock.lap("rollups")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        clock.lap("analyze")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        clock.size_mb = round((size[0] if size else 0) / 2**20, 1)
    return len(hours), len(days)


# --- The check: rollups equal the log's sums ---------------------------------------------------

_LOG_SUMS = (
    "SELECT key, team, model, COALESCE(route, '') AS route, COUNT(*), "
    "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(images), SUM(video_seconds), "
    "SUM(cost_micros) FROM request_log GROUP BY key, team, model, COALESCE(route, '')"
)
_ROLLUP_SUMS = (
    "SELECT key, team, model, route, SUM(requests), SUM(errors), SUM(images), "
    "SUM(video_seconds), SUM(cost_micros) FROM usage_rollups WHERE grain = ? "
    "GROUP BY key, team, model, route"
)


def _sums(rows: list[Any]) -> dict[tuple[str, ...], tuple[int, ...]]:
    return {tuple(r[:4]): tuple(int(v) for v in r[4:]) for r in rows}


def rollup_differences(url: str) -> list[str]:
    """Where the usage rollups (each grain) differ from the request log's sums by key, team,
    model and route: empty when they agree, to the micro-dollar."""

    def work(tx: Tx) -> list[str]:
        log = _sums(tx.execute(_LOG_SUMS).fetchall())
        problems = []
        for grain in ("hour", "day"):
            rolled = _sums(tx.execute(_ROLLUP_SUMS, (grain,)).fetchall())
            for group in sorted(set(log) | set(rolled)):
                if log.get(group) != rolled.get(group):
                    problems.append(f"{grain} {group}: log {log.get(group)}, {rolled.get(group)}")
        return problems

    return _on(url, work)


def _on(url: str, work: Callable[[Tx], Any]) -> Any:
    async def run() -> Any:
        db = await Database.open(url, pool_size=1)
        try:
            return await db.run(work)
        finally:
            await db.close()

    return asyncio.run(run())


# --- The reads, timed ---------------------------------------------------------------------------


def _day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


Query = Callable[[Tx, list[Any]], list[Any]]  # (tx, the page before) -> rows


def _reads(seeded: Seeded) -> dict[str, dict[str, Any]]:
    """The reads to time: name -> the admin API's own query (mediagate.stores.sql.reports, as
    a function of a transaction and the page before) and its HTTP request."""
    team = seeded.busiest_team
    model = seeded.busiest_model
    first, after = _day(seeded.start), _day(seeded.end)
    day_start = seeded.end - 2 * 86400  # yesterday (UTC), a whole day
    everyone = Scope()
    month = UsageQuery("day", first, after, ("team", "model"))
    errors = RequestFilter(team=team, status=(500, 600))
    one_day = RequestFilter(model=model, start=day_start, end=day_start + 86400)

    def cursor(before: list[Any]) -> tuple[float, str]:
        last = before[min(49, len(before) - 1)]
        return (last["at"], last["request_id"])

    reads: dict[str, tuple[Query, Any]] = {
        # In SQL the whole month in one query (every group); over HTTP its first page.
        "usage: the month by day, by team and model": (
            lambda tx, _: usage_page(tx, month, everyone, None, 100_000),
            (
                "/admin/v1/usage",
                {"start": first, "end": after, "granularity": "day", "group_by": "team,model"},
            ),
        ),
        f"requests: team {team}, status 5xx, 50 a page": (
            lambda tx, _: requests_page(tx, errors, everyone, None, 50),
            ("/admin/v1/requests", {"team": team, "status": "5xx", "limit": "50"}),
        ),
        f"requests: team {team}, status 5xx, the next page": (
            lambda tx, before: requests_page(tx, errors, everyone, cursor(before), 50),
            "next",  # the page after the one above, by its cursor
        ),
        f"requests: model {model}, one day, 50 a page": (
            lambda tx, _: requests_page(tx, one_day, everyone, None, 50),
            (
                "/admin/v1/requests",
                {
                    "model": model,
                    "start": _day(day_start),
                    "end": _day(day_start + 86400),
                    "limit": "50",
                },
            ),
        ),
    }
    return {name: {"sql": query, "http": http} for name, (query, http) in reads.items()}


class _Recorded:
    """A transaction that keeps the last statement it ran (to EXPLAIN it afterwards)."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self.engine = tx.engine
        self.statement: tuple[str, Sequence[Any]] = ("", ())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.statement = (sql, params)
        return self._tx.execute(sql, params)


def _summary(times: list[float]) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "min_ms": round(min(times), 2),
        "median_ms": round(median, 2),
        "runs_ms": [round(t, 2) for t in times],
        "pass": median <= TARGET_MS,
    }


def _timed(call: Callable[[], Any]) -> dict[str, Any]:
    call()  # warm-up
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return _summary(times)


def time_sql(url: str, seeded: Seeded) -> dict[str, dict[str, Any]]:
    """Each read's query through the gateway's own `Database` (its driver, pool and threads),
    awaited as the gateway awaits it, with its plan."""

    async def run() -> dict[str, dict[str, Any]]:
        db = await Database.open(url, pool_size=2)
        results: dict[str, dict[str, Any]] = {}
        before: list[Any] = []
        try:
            for name, read in _reads(seeded).items():
                query: Query = read["sql"]
                if "next page" in name and not before:
                    results[name] = {"status": "the page before was empty"}
                    continue

                def work(tx: Tx, query: Query = query, before: list[Any] = before) -> list[Any]:
                    return query(tx, before)

                def plan(tx: Tx, query: Query = query, before: list[Any] = before) -> list[str]:
                    recorded = _Recorded(tx)
                    query(recorded, before)  # type: ignore[arg-type]
                    sql, params = recorded.statement
                    explain = "EXPLAIN QUERY PLAN " if tx.engine == "sqlite" else "EXPLAIN "
                    return [str(row[-1]) for row in tx.execute(explain + sql, params).fetchall()]

                rows = await db.run(work)  # warm-up
                times = []
                for _ in range(RUNS):
                    began = time.perf_counter()
                    await db.run(work)
                    times.append((time.perf_counter() - began) * 1000)
                results[name] = _summary(times) | {"rows": len(rows), "plan": await db.run(plan)}
                before = rows
        finally:
            await db.close()
        return results

    return asyncio.run(run())


def time_http(base: str, seeded: Seeded) -> dict[str, dict[str, Any]]:
    """Each read over HTTP with the admin key; an endpoint not served yet is reported, not
    timed."""
    results: dict[str, dict[str, Any]] = {}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx2.Client(base_url=base, headers=headers, timeout=60) as client:
        next_query: dict[str, str] | None = None
        for name, read in _reads(seeded).items():
            http = read["http"]
            if http == "next":
                if next_query is None:
                    results[name] = {"status": "no next_cursor in the page before"}
                    continue
                http = ("/admin/v1/requests", next_query)
            path, params = http
            first = client.get(path, params=params)
            if first.status_code != 200:
                served = "not served by this gateway (yet)" if first.status_code == 404 else ""
                what = served or " ".join(first.text.split())[:160]
                results[name] = {"status": f"HTTP {first.status_code}: {what}"}
                continue
            body = first.json()
            if "team" in params and "status" in params and body.get("next_cursor"):
                next_query = {**params, "after": body["next_cursor"]}

            def call(path: str = path, params: dict[str, str] = params) -> None:
                answer = client.get(path, params=params)
                assert answer.status_code == 200, answer.text[:200]

            results[name] = _timed(call) | {"status": "measured", "rows": len(body.get("data", []))}
            if path.endswith("/usage") and body.get("has_more"):
                # A page holds up to `limit` groups: the whole month is every page, in turn.
                def every_page(path: str = path, params: dict[str, str] = params) -> int:
                    query, rows = dict(params), 0
                    while True:
                        answer = client.get(path, params=query)
                        assert answer.status_code == 200, answer.text[:200]
                        page = answer.json()
                        rows += len(page["data"])
                        if not page.get("has_more"):
                            return rows
                        query["after"] = page["next_cursor"]

                rows = every_page()
                results[f"{name}, every page"] = _timed(every_page) | {
                    "status": "measured",
                    "rows": rows,
                }
    return results


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_pages(seeded: Seeded, request_id: str | None) -> dict[str, str]:
    """The console's pages to time (issue 26): name -> path, on the seeded month."""
    team, model = seeded.busiest_team, seeded.busiest_model
    day = _day(seeded.end - 2 * 86400)
    pages = {
        "overview": "/console",
        "overview, by team by hour": "/console?granularity=hour&by=team",
        "gallery": "/console/gallery",
        "requests": "/console/requests",
        f"requests: team {team}, status 5xx": f"/console/requests?team={team}&status=5xx",
        f"requests: model {model}, one day": f"/console/requests?model={model}&start={day}",
        "video jobs": "/console/jobs",
        "keys and teams": "/console/keys",
        "models": "/console/models",
        "playground": "/console/playground",
        "health": "/console/health",
        "export": "/console/export",
    }
    if request_id is not None:
        pages["one request"] = f"/console/requests/{request_id}"
    return pages


def time_console(base: str, seeded: Seeded) -> dict[str, dict[str, Any]]:
    """Each console page over HTTP, signed in with the admin key through the sign-in form."""
    results: dict[str, dict[str, Any]] = {}
    with httpx2.Client(base_url=base, timeout=60) as client:
        login = client.get("/console/login")
        found = _CSRF.search(login.text)
        if login.status_code != 200 or found is None:
            return {"sign-in": {"status": f"HTTP {login.status_code}: no sign-in form"}}
        signed = client.post(
            "/console/login", data={"key": ADMIN_KEY, "csrf_token": found.group(1)}
        )
        if signed.status_code != 303:
            return {"sign-in": {"status": f"HTTP {signed.status_code}: not signed in"}}
        listed = client.get(
            "/admin/v1/requests",
            params={"limit": "1"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
        request_id = listed["data"][0]["request_id"] if listed.get("data") else None
        for name, path in console_pages(seeded, request_id).items():

            def call(path: str = path) -> None:
                answer = client.get(path)
                assert answer.status_code == 200, f"{path}: {answer.status_code}"

            try:
                results[name] = _timed(call) | {"status": "measured", "rows": 0, "path": path}
            except AssertionError as exc:
                results[name] = {"status": str(exc)}
    return results


@contextlib.contextmanager
def serving(url: str, work: Path, redis: str | None) -> Iterator[str]:
    """`mediagate serve` on the seeded database (simulator mode, an admin key)."""
    from .procs import serve_gateway

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAGATE_", "BENCH_"))}
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    env |= {
        "MEDIAGATE_DATABASE_URL": url,
        "MEDIAGATE_ADMIN_KEYS": f"bench:admin:{digest}",
        "MEDIAGATE_DATA_DIR": str(work / "data"),
        "MEDIAGATE_LOG_LEVEL": "warning",
        # The seeded month stays: no retention sweep of it while it is read.
        "MEDIAGATE_REQUEST_LOG_DAYS": "3650",
    }
    if url.startswith("postgresql"):
        if redis is None:
            raise RuntimeError(
                "no Redis answers (BENCH_REDIS_URL): a gateway on PostgreSQL needs one"
            )
        env |= {
            "MEDIAGATE_REDIS_URL": redis,
            "MEDIAGATE_STORE_PREFIX": f"bench-{secrets.token_hex(4)}",
        }
    with serve_gateway(f"records-{url.split(':')[0]}", work, env) as (_, base):
        yield base


# --- The mode -----------------------------------------------------------------------------------


@contextlib.contextmanager
def databases(work: Path) -> Iterator[Iterator[tuple[str, str]]]:
    """(engine, URL) of an empty database of each engine; the PostgreSQL one dropped after."""
    stack = contextlib.ExitStack()

    def each() -> Iterator[tuple[str, str]]:
        yield "sqlite", f"sqlite:///{work / 'records.sqlite3'}"
        server = postgres_server()
        if server is None:
            yield "postgresql", ""
            return
        yield "postgresql", stack.enter_context(fresh_postgres_database(server))

    with stack:
        yield each()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench records")
    parser.add_argument("--sql", action="store_true", help="time the SQL only, not over HTTP")
    args = parser.parse_args(sys.argv[2:])
    rows = int(os.environ.get("BENCH_RECORDS_ROWS", "1000000"))
    out = Path(os.environ.get("BENCH_RECORDS_OUT", Path(__file__).parent / "records-results.json"))
    redis = redis_url()
    results: dict[str, Any] = {"rows": rows, "target_ms": TARGET_MS, "engines": {}}
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        work = Path(tmp)
        with databases(work) as found:
            for engine, url in found:
                if not url:
                    print(f"== {engine}: no server answers (MEDIAGATE_TEST_POSTGRES_URL): skipped")
                    results["engines"][engine] = {"status": "no server"}
                    continue
                print(f"== {engine}: seeding {rows:,} request-log rows", flush=True)
                migrate(url)
                seeded = seed(url, rows)
                print(
                    f"  seeded in {seeded.seconds:.1f} s: {seeded.hour_rollups:,} hour and "
                    f"{seeded.day_rollups:,} day rollup rows, {seeded.size_mb:,.0f} MB "
                    f"({', '.join(f'{k} {v:.1f} s' for k, v in seeded.phases.items())})",
                    flush=True,
                )
                differences = rollup_differences(url)
                print(f"  rollups equal the log's sums: {not differences}", flush=True)
                ok &= not differences
                entry: dict[str, Any] = {
                    "seeded": asdict(seeded) | {"teams": len(seeded.teams)},
                    "rollup_differences": differences[:20],
                    "sql": time_sql(url, seeded),
                }
                if not args.sql:
                    with serving(url, work, redis) as base:
                        entry["http"] = time_http(base, seeded)
                        entry["console"] = time_console(base, seeded)
                for kind in ("sql", "http", "console"):
                    for name, timing in entry.get(kind, {}).items():
                        if "median_ms" in timing:
                            verdict = "PASS" if timing["pass"] else "FAIL"
                            ok &= timing["pass"]
                            print(
                                f"  {kind:7} {name}: min {timing['min_ms']:.1f} ms, median "
                                f"{timing['median_ms']:.1f} ms ({timing['rows']} rows) {verdict}",
                                flush=True,
                            )
                        else:
                            print(f"  {kind:7} {name}: {timing['status']}", flush=True)
                results["engines"][engine] = entry
    results["pass"] = ok
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'PASS' if ok else 'FAIL'}; results in {out}")
    return 0 if ok else 1

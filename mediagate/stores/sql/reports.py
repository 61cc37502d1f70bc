"""The admin API's reads of the records: usage from the rollups, the request log, video jobs,
and the last hour per route. Pure SQL over `Database`, written once for both engines.

Every list is a keyset page: rows in a fixed total order, the page after a cursor (the last
row's sort key) asked with a comparison the order's index serves, `limit + 1` rows fetched to
know whether there is more. No OFFSET: a page deep in a million rows costs what the first does,
and rows written meanwhile neither repeat nor skip rows of later pages.

Usage reads `usage_rollups` only, never the request log (the log grows with every request; the
rollups with keys x models x routes x buckets). Filters are equality or range conditions ANDed
together; a member's scope arrives as more of them (`team = ?` beside the member's own
`team = ?`), so a member naming another team gets nothing rather than an error that tells the
team exists.

Times are Unix seconds (UTC); money integer micro-USD, turned into USD by the caller.
"""

# The statements below are assembled from this module's own column names and placeholders only;
# every value a caller gives is a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from mediagate.stores.jobs import FIELDS
from mediagate.stores.sql.db import Database, Tx
from mediagate.stores.sql.requestlog import COLUMNS

Grain = Literal["hour", "day"]
DIMENSIONS = ("key", "team", "model", "route")

# The request log's columns a list or an export shows, in the row's order: all but the prompt,
# which only one request's full record shows (it may be long, and is recorded only where the
# operator says).
REQUEST_COLUMNS = tuple(column for column in COLUMNS if column != "prompt")
REQUEST_JSON_COLUMNS = frozenset({"routes_tried", "mapped", "dropped"})

# The video job store's table: one column per field of stores.jobs.VideoJob, by its name
# (`group` quoted, as it is an SQL keyword).
JOB_COLUMNS = FIELDS
_JOB_SELECT = ", ".join(f'"{c}"' if c == "group" else c for c in JOB_COLUMNS)
# The most latencies of one route the health view takes the percentiles of (the newest).
HEALTH_SAMPLE = 5000


@dataclass
class Where:
    """Conditions ANDed together, with their parameters."""

    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1 = 1"


@dataclass(frozen=True)
class Scope:
    """What a caller may read: None for all, else one team's records or one key's."""

    team: str | None = None
    key: str | None = None
    # The keys of `team` the registry knows (keys in a file or the environment): a video job
    # records its owner key, not its team.
    team_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestFilter:
    start: float | None = None
    end: float | None = None
    key: str | None = None
    team: str | None = None
    model: str | None = None
    route: str | None = None
    status: tuple[int, int] | None = None  # [low, high): one code, or a class (x00, x00+100)
    error_code: str | None = None
    request_id: str | None = None
    job_id: str | None = None
    upstream_task_id: str | None = None
    batch_id: str | None = None


def _request_where(f: RequestFilter, scope: Scope) -> Where:
    where = Where()
    if f.start is not None:
        where.add("at >= ?", f.start)
    if f.end is not None:
        where.add("at < ?", f.end)
    for column in (
        "key",
        "team",
        "model",
        "route",
        "error_code",
        "job_id",
        "upstream_task_id",
        "batch_id",
    ):
        value = getattr(f, column)
        if value is not None:
            where.add(f"{column} = ?", value)
    if f.request_id is not None:
        # Ours, or the id the client gave the request (X-Client-Request-Id / X-Request-ID).
        where.add("(request_id = ? OR client_request_id = ?)", f.request_id, f.request_id)
    if f.status is not None:
        low, high = f.status
        if high == low + 1:
            where.add("status = ?", low)
        else:
            # A class as the expression 0007's index has: one equality, rows in `at` order,
            # where a range of codes would sort every row of the class for one page.
            where.add("status / 100 = ?", low // 100)
    _scoped(where, scope, "team", "key")
    return where


def _scoped(where: Where, scope: Scope, team_column: str, key_column: str) -> None:
    if scope.team is not None:
        where.add(f"{team_column} = ?", scope.team)
    if scope.key is not None:
        where.add(f"{key_column} = ?", scope.key)


def requests_page(
    tx: Tx, f: RequestFilter, scope: Scope, after: tuple[float, str] | None, limit: int
) -> list[Any]:
    """A page of the request log, newest first (at, then request id, descending), after
    `after` (the last row's (at, request_id)); `limit + 1` rows to tell whether more follow."""
    where = _request_where(f, scope)
    if after is not None:
        # `at <= ?` is the range the (..., at) indexes serve; the rest breaks ties in one second.
        where.add("at <= ? AND (at < ? OR request_id < ?)", after[0], after[0], after[1])
    sql = (
        f"SELECT {', '.join(REQUEST_COLUMNS)} FROM request_log WHERE {where.sql()} "
        "ORDER BY at DESC, request_id DESC LIMIT ?"
    )
    return tx.execute(sql, [*where.params, limit + 1]).fetchall()


def request_record(tx: Tx, request_id: str, scope: Scope) -> Any | None:
    """One request's full record (prompt included), or None (also when out of scope)."""
    where = _request_where(RequestFilter(request_id=request_id), scope)
    sql = f"SELECT {', '.join(REQUEST_COLUMNS)}, prompt FROM request_log WHERE {where.sql()}"
    return tx.execute(sql, where.params).fetchone()


def job_history(tx: Tx, job_id: str, scope: Scope) -> list[Any]:
    """The request log's rows of one job (its create, its failed reads), oldest first."""
    where = _request_where(RequestFilter(job_id=job_id), scope)
    sql = (
        f"SELECT {', '.join(REQUEST_COLUMNS)} FROM request_log WHERE {where.sql()} "
        "ORDER BY at, request_id LIMIT 1000"
    )
    return tx.execute(sql, where.params).fetchall()


@dataclass(frozen=True)
class JobFilter:
    start: float | None = None  # on created_at
    end: float | None = None
    status: str | None = None
    model: str | None = None
    key: str | None = None  # the owner
    team: str | None = None
    team_keys: tuple[str, ...] = ()  # the registry's keys of `team`
    # Unfinished jobs not updated since (Unix seconds): the console's stuck jobs.
    updated_before: float | None = None


def _team_owner(where: Where, team: str, team_keys: Sequence[str]) -> None:
    """Jobs of a team: their owner is one of its keys, in the database or the registry."""
    listed = ", ".join("?" for _ in team_keys)
    either = f" OR owner IN ({listed})" if team_keys else ""
    where.add(f"(owner IN (SELECT name FROM client_keys WHERE team = ?){either})", team, *team_keys)


def _job_where(f: JobFilter, scope: Scope) -> Where:
    where = Where()
    if f.start is not None:
        where.add("created_at >= ?", f.start)
    if f.end is not None:
        where.add("created_at < ?", f.end)
    if f.status is not None:
        where.add("status = ?", f.status)
    if f.model is not None:
        where.add("model = ?", f.model)
    if f.key is not None:
        where.add("owner = ?", f.key)
    if f.team is not None:
        _team_owner(where, f.team, f.team_keys)
    if f.updated_before is not None:
        where.add("status IN ('queued', 'in_progress') AND updated_at < ?", f.updated_before)
    if scope.team is not None:
        _team_owner(where, scope.team, scope.team_keys)
    if scope.key is not None:
        where.add("owner = ?", scope.key)
    return where


def jobs_page(
    tx: Tx, f: JobFilter, scope: Scope, after: tuple[float, str] | None, limit: int
) -> list[Any]:
    """A page of video jobs, newest first (created_at, then id, descending)."""
    where = _job_where(f, scope)
    if after is not None:
        where.add("created_at <= ? AND (created_at < ? OR id < ?)", after[0], after[0], after[1])
    sql = (
        f"SELECT {_JOB_SELECT} FROM video_jobs WHERE {where.sql()} "
        "ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return tx.execute(sql, [*where.params, limit + 1]).fetchall()


def job_record(tx: Tx, job_id: str, scope: Scope) -> Any | None:
    where = _job_where(JobFilter(), scope)
    where.add("id = ?", job_id)
    return tx.execute(
        f"SELECT {_JOB_SELECT} FROM video_jobs WHERE {where.sql()}", where.params
    ).fetchone()


def job_costs(tx: Tx, job_ids: Sequence[str], scope: Scope) -> dict[str, dict[str, int]]:
    """Per job, the request log's cost (micro-USD) by cost state: `reserved` while the job
    runs, `booked` once it settled. One query for a page of jobs (the job_id index)."""
    if not job_ids:
        return {}
    where = Where()
    where.add(f"job_id IN ({', '.join('?' for _ in job_ids)})", *job_ids)
    _scoped(where, scope, "team", "key")
    sql = (
        "SELECT job_id, cost_state, SUM(cost_micros) FROM request_log "
        f"WHERE {where.sql()} GROUP BY job_id, cost_state"
    )
    found: dict[str, dict[str, int]] = {}
    for row in tx.execute(sql, where.params).fetchall():
        found.setdefault(row[0], {})[row[1]] = int(row[2] or 0)
    return found


@dataclass(frozen=True)
class UsageQuery:
    grain: Grain
    start_bucket: str  # the first bucket (inclusive)
    end_bucket: str  # the bucket after the last (exclusive)
    group_by: tuple[str, ...] = ()  # of DIMENSIONS
    key: str | None = None
    team: str | None = None
    model: str | None = None
    route: str | None = None


USAGE_SUMS = ("requests", "errors", "reads", "images", "video_seconds", "cost_micros")


def _usage_where(q: UsageQuery, scope: Scope) -> Where:
    where = Where()
    where.add("grain = ? AND bucket >= ? AND bucket < ?", q.grain, q.start_bucket, q.end_bucket)
    for column in DIMENSIONS:
        value = getattr(q, column)
        if value is not None:
            where.add(f"{column} = ?", value)
    _scoped(where, scope, "team", "key")
    return where


def usage_totals(tx: Tx, q: UsageQuery, scope: Scope) -> Any:
    """The sums over every row `q` selects (every page's)."""
    where = _usage_where(q, scope)
    sums = ", ".join(f"CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}" for c in USAGE_SUMS)
    return tx.execute(
        f"SELECT {sums} FROM usage_rollups WHERE {where.sql()}", where.params
    ).fetchone()


def usage_page(
    tx: Tx, q: UsageQuery, scope: Scope, after: tuple[str, ...] | None, limit: int
) -> list[Any]:
    """Rollup sums by bucket and the asked dimensions, in (bucket, dimensions) order, after
    `after` (the last row's bucket and dimension values)."""
    where = _usage_where(q, scope)
    groups = ("bucket", *q.group_by)
    if after is not None:
        # Row values: both engines compare them left to right, as the ORDER BY sorts.
        marks = ", ".join("?" for _ in groups)
        where.add(f"({', '.join(groups)}) > ({marks})", *after)
    sums = ", ".join(f"CAST(SUM({c}) AS BIGINT) AS {c}" for c in USAGE_SUMS)
    sql = (
        f"SELECT {', '.join(groups)}, {sums} FROM usage_rollups WHERE {where.sql()} "
        f"GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)} LIMIT ?"
    )
    return tx.execute(sql, [*where.params, limit + 1]).fetchall()


def spend(
    tx: Tx, column: Literal["key", "team"], names: Sequence[str], day: str, month: str
) -> dict[str, tuple[int, int]]:
    """(today's, this month's) cost in micro-USD per key or team, from the day rollups.
    `day` is YYYY-MM-DD (UTC), `month` YYYY-MM."""
    if not names:
        return {}
    marks = ", ".join("?" for _ in names)
    sql = (
        f"SELECT {column}, "
        "CAST(SUM(CASE WHEN bucket = ? THEN cost_micros ELSE 0 END) AS BIGINT), "
        "CAST(SUM(cost_micros) AS BIGINT) FROM usage_rollups "
        f"WHERE grain = 'day' AND bucket >= ? AND bucket < ? AND {column} IN ({marks}) "
        f"GROUP BY {column}"
    )
    rows = tx.execute(sql, [day, f"{month}-01", f"{month}-99", *names]).fetchall()
    return {row[0]: (int(row[1] or 0), int(row[2] or 0)) for row in rows}


@dataclass(frozen=True)
class Histogram:
    """Requests of a filtered log window counted per bucket of `step` seconds from `start`
    (`count` buckets), split by answer: below 400, 4xx, 5xx. Index i covers
    [start + i * step, start + (i + 1) * step)."""

    start: float
    step: float
    ok: list[int]
    client_errors: list[int]
    server_errors: list[int]


# The most buckets a histogram is asked for: its cost is one pass over the window's rows (by
# an index on `at`, or on a filter's column then `at`), its answer this many rows at most.
MAX_BUCKETS = 200


def _bucket_number(tx: Tx) -> str:
    # (at - start) / step rounded down. `at >= start` here, so SQLite's CAST (which truncates)
    # rounds down; PostgreSQL's CAST rounds to nearest, hence FLOOR.
    if tx.engine == "postgresql":
        return "CAST(FLOOR((at - ?) / ?) AS BIGINT)"
    return "CAST((at - ?) / ? AS INTEGER)"


# The filters the usage rollups have columns for: a histogram filtered by these only (and by
# whole hours) counts its ok answers from the hour rollups.
_ROLLUP_FILTERS = frozenset({"start", "end", "key", "team", "model", "route"})


def _by_rollups(f: RequestFilter, start: float, step: float) -> bool:
    others = [name for name, value in vars(f).items() if value is not None]
    hours = [start, step, *(t for t in (f.start, f.end) if t is not None)]
    return set(others) <= _ROLLUP_FILTERS and all(t % 3600 == 0 for t in hours)


def request_histogram(
    tx: Tx, f: RequestFilter, scope: Scope, start: float, step: float, count: int
) -> Histogram:
    """The filtered request log in [start, start + count * step) by bucket and status class,
    at most MAX_BUCKETS buckets.

    From the log: the same WHERE as a page of it (plus the window), one GROUP BY over the
    bucket number. Where the rollups have every filter as a column and the buckets are whole
    hours, the ok answers (the window's bulk) are summed from the hour rollups instead, and
    only the 4xx and 5xx rows are read from the log, by the index on their status class: the
    page then costs the errors' rows, not the window's."""
    count = max(1, min(count, MAX_BUCKETS))
    end = start + count * step
    low = start if f.start is None else max(start, f.start)
    high = end if f.end is None else min(end, f.end)
    window = replace(f, start=low, end=high)
    ok, client, server = [0] * count, [0] * count, [0] * count
    if _by_rollups(f, start, step):
        _rollup_ok(tx, window, scope, start, step, ok)
        # The errors by the status-class index (4xx and 5xx, then `at`): the key, team, model
        # and route conditions are written `column || '' = ?`, which no index serves, so
        # neither engine walks a busy team's every row instead of the window's errors.
        where = Where()
        where.add("status / 100 IN (4, 5) AND at >= ? AND at < ?", window.start, window.end)
        for column in DIMENSIONS:
            value = getattr(f, column)
            if value is not None:
                where.add(f"{column} || '' = ?", value)
        if scope.team is not None:
            where.add("team || '' = ?", scope.team)
        if scope.key is not None:
            where.add("key || '' = ?", scope.key)
        sql = (
            f"SELECT {_bucket_number(tx)} AS b, status / 100 AS c, COUNT(*) FROM request_log "
            f"WHERE {where.sql()} GROUP BY b, c"
        )
        for row in tx.execute(sql, [start, step, *where.params]).fetchall():
            index = int(row[0])
            if 0 <= index < count:
                (client if int(row[1]) == 4 else server)[index] += int(row[2] or 0)
        return Histogram(start, step, ok, client, server)
    where = _request_where(window, scope)
    sql = (
        f"SELECT {_bucket_number(tx)} AS b, "
        "SUM(CASE WHEN status < 400 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END) "
        f"FROM request_log WHERE {where.sql()} GROUP BY b"
    )
    for row in tx.execute(sql, [start, step, *where.params]).fetchall():
        index = int(row[0])
        if 0 <= index < count:
            ok[index] += int(row[1] or 0)
            client[index] += int(row[2] or 0)
            server[index] += int(row[3] or 0)
    return Histogram(start, step, ok, client, server)


def _rollup_ok(
    tx: Tx, f: RequestFilter, scope: Scope, start: float, step: float, ok: list[int]
) -> None:
    """Answers below 400 (requests - errors) per bucket, from the rollups of [f.start, f.end)
    (whole hours): the day rollups where the buckets and the window are whole days (a
    twenty-fourth of the rows), else the hour rollups."""
    assert f.start is not None and f.end is not None
    days = all(t % 86400 == 0 for t in (step, f.start, f.end))
    grain, form = ("day", "%Y-%m-%d") if days else ("hour", "%Y-%m-%dT%H")
    where = Where()

    def bucket(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).strftime(form)

    where.add("grain = ? AND bucket >= ? AND bucket < ?", grain, bucket(f.start), bucket(f.end))
    for column in DIMENSIONS:
        value = getattr(f, column)
        if value is not None:
            where.add(f"{column} = ?", value)
    _scoped(where, scope, "team", "key")
    sql = (
        "SELECT bucket, CAST(SUM(requests) - SUM(errors) AS BIGINT) FROM usage_rollups "
        f"WHERE {where.sql()} GROUP BY bucket"
    )
    for row in tx.execute(sql, where.params).fetchall():
        at = datetime.strptime(str(row[0]), form).replace(tzinfo=UTC).timestamp()
        index = int((at - start) // step)
        if 0 <= index < len(ok):
            ok[index] += int(row[1] or 0)


def top_spend(
    tx: Tx, column: Literal["key", "team"], day: str, month: str, scope: Scope, limit: int
) -> list[tuple[str, int, int]]:
    """The keys or teams with the most spend this month (UTC) from the day rollups, as
    (name, today's, this month's) micro-USD, most first; `limit` at most."""
    where = Where()
    where.add("grain = 'day' AND bucket >= ? AND bucket < ?", f"{month}-01", f"{month}-99")
    _scoped(where, scope, "team", "key")
    sql = (
        f"SELECT {column}, "
        "CAST(SUM(CASE WHEN bucket = ? THEN cost_micros ELSE 0 END) AS BIGINT) AS today, "
        "CAST(SUM(cost_micros) AS BIGINT) AS month FROM usage_rollups "
        f"WHERE {where.sql()} GROUP BY {column} ORDER BY month DESC, {column} LIMIT ?"
    )
    rows = tx.execute(sql, [day, *where.params, limit]).fetchall()
    return [(str(row[0]), int(row[1] or 0), int(row[2] or 0)) for row in rows]


UNFINISHED = ("queued", "in_progress")


def unfinished_jobs(tx: Tx, scope: Scope) -> dict[str, int]:
    """Video jobs queued and in progress: everyone's from the counts the job store keeps
    (`video_job_counts`), a team's or a key's counted from its unfinished jobs (the partial
    index of unfinished jobs)."""
    counts = dict.fromkeys(UNFINISHED, 0)
    if scope.team is None and scope.key is None:
        rows = tx.execute("SELECT status, jobs FROM video_job_counts").fetchall()
    else:
        where = _job_where(JobFilter(), scope)
        where.add("status IN ('queued', 'in_progress')")
        rows = tx.execute(
            f"SELECT status, COUNT(*) FROM video_jobs WHERE {where.sql()} GROUP BY status",
            where.params,
        ).fetchall()
    for row in rows:
        if str(row[0]) in counts:
            counts[str(row[0])] = int(row[1] or 0)
    return counts


@dataclass(frozen=True)
class RouteHealth:
    route: str
    requests: int
    successes: int
    rate_limited: int
    latencies_ms: list[float]  # the newest HEALTH_SAMPLE at most


def health(tx: Tx, since: float, scope: Scope) -> dict[str, RouteHealth]:
    """Per route, the request log since `since`: counts, and the latest latencies."""
    where = Where()
    where.add("at >= ? AND route IS NOT NULL", since)
    _scoped(where, scope, "team", "key")
    sql = (
        "SELECT route, COUNT(*), SUM(CASE WHEN status < 400 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END) FROM request_log "
        f"WHERE {where.sql()} GROUP BY route"
    )
    found: dict[str, RouteHealth] = {}
    for row in tx.execute(sql, where.params).fetchall():
        route = row[0]
        latencies = tx.execute(
            "SELECT latency_ms FROM request_log "
            f"WHERE {where.sql()} AND route = ? AND latency_ms IS NOT NULL "
            "ORDER BY at DESC LIMIT ?",
            [*where.params, route, HEALTH_SAMPLE],
        ).fetchall()
        found[route] = RouteHealth(
            route,
            int(row[1]),
            int(row[2] or 0),
            int(row[3] or 0),
            [float(r[0]) for r in latencies],
        )
    return found


class Reports:
    """The reads above, each run off the event loop in the database's own threads."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def requests(
        self, f: RequestFilter, scope: Scope, after: tuple[float, str] | None, limit: int
    ) -> list[Any]:
        return await self.db.run(lambda tx: requests_page(tx, f, scope, after, limit))

    async def request(self, request_id: str, scope: Scope) -> Any | None:
        return await self.db.run(lambda tx: request_record(tx, request_id, scope))

    async def jobs(
        self, f: JobFilter, scope: Scope, after: tuple[float, str] | None, limit: int
    ) -> list[Any]:
        return await self.db.run(lambda tx: jobs_page(tx, f, scope, after, limit))

    async def job(self, job_id: str, scope: Scope) -> tuple[Any | None, list[Any]]:
        def read(tx: Tx) -> tuple[Any | None, list[Any]]:
            record = job_record(tx, job_id, scope)
            if record is None:
                return None, []
            return record, job_history(tx, job_id, scope)

        return await self.db.run(read)

    async def job_costs(self, job_ids: Sequence[str], scope: Scope) -> dict[str, dict[str, int]]:
        return await self.db.run(lambda tx: job_costs(tx, job_ids, scope))

    async def usage(
        self, q: UsageQuery, scope: Scope, after: tuple[str, ...] | None, limit: int
    ) -> list[Any]:
        return await self.db.run(lambda tx: usage_page(tx, q, scope, after, limit))

    async def usage_totals(self, q: UsageQuery, scope: Scope) -> Any:
        return await self.db.run(lambda tx: usage_totals(tx, q, scope))

    async def spend(
        self, column: Literal["key", "team"], names: Sequence[str], day: str, month: str
    ) -> dict[str, tuple[int, int]]:
        return await self.db.run(lambda tx: spend(tx, column, names, day, month))

    async def histogram(
        self, f: RequestFilter, scope: Scope, start: float, step: float, count: int
    ) -> Histogram:
        return await self.db.run(lambda tx: request_histogram(tx, f, scope, start, step, count))

    async def top_spend(
        self, column: Literal["key", "team"], day: str, month: str, scope: Scope, limit: int
    ) -> list[tuple[str, int, int]]:
        return await self.db.run(lambda tx: top_spend(tx, column, day, month, scope, limit))

    async def unfinished_jobs(self, scope: Scope) -> dict[str, int]:
        return await self.db.run(lambda tx: unfinished_jobs(tx, scope))

    async def health(self, since: float, scope: Scope) -> dict[str, RouteHealth]:
        return await self.db.run(lambda tx: health(tx, since, scope))

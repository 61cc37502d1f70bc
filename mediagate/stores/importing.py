"""`mediagate db import URL`: move what a store of the old MEDIAGATE_STORE_URL holds into the
records' database.

The old store is a Redis database (keys under `{prefix}:`) or a SQLite file (`jobs.sqlite3`),
as the job store and ledger of releases before the records' database wrote them. Read from it:
every video job with its webhook events still to deliver, the usage totals (key x day x
model), and the budget state (settled spend per key and period, reservations still open).

Written, in transactions of up to 500 jobs or usage totals: each job with its pending events
through `SqlJobStore.restore`, only if no job has its id yet; and each usage total as a
`settlements` row whose id is `import:{key}:{day}:{model}` plus its `usage_rollups` rows
(grain 'day', and the same totals as grain 'hour' in the day's first hour, team and route
''), the rollups added only if the settlement row was inserted in that transaction. Spend
totals go to the keys' budget rows and open reservations are held again, each once
(mediagate.stores.sql.ledger). So running the import twice adds nothing the second time.

Reading is plain: Redis commands through `RedisDb`, and the old SQLite file opened as a
`Database` (never migrated); so a store's errors are the usual `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from mediagate.stores.jobs import FIELDS, Delivery, VideoJob, job_from_record
from mediagate.stores.ledger import UsageRow
from mediagate.stores.sql.db import Database, Tx
from mediagate.stores.sql.jobs import SqlJobStore
from mediagate.stores.sql.ledger import import_reservation, import_spend

__all__ = ["Imported", "OldStore", "import_store", "micros", "read_old_store"]

_BATCH = 500  # jobs read from Redis in one pipeline, and written in one transaction
# An old store's reservation kept no expiry the import reads: it is held this long (a video
# job's, the longest any reservation lives), then booked at its amount if still unsettled.
_RESERVATION_TTL_S = 86_400.0


def micros(usd: float) -> int:
    """USD as integer micro-USD, rounded half-up (0.1234565 -> 123457)."""
    return int((Decimal(repr(usd)) * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class OldStore:
    """What an old store holds."""

    jobs: list[VideoJob] = field(default_factory=list)  # in creation order
    events: list[Delivery] = field(default_factory=list)  # still to deliver
    usage: list[UsageRow] = field(default_factory=list)
    spend: dict[tuple[str, str], float] = field(default_factory=dict)  # (key, day|month) -> USD
    reservations: list[tuple[str, str, float]] = field(default_factory=list)  # key, id, USD


@dataclass
class Imported:
    """What an import moved (and what it found already there, from an earlier run)."""

    jobs: int = 0
    jobs_present: int = 0
    events: int = 0
    usage_rows: int = 0
    usage_present: int = 0
    requests: int = 0
    cost_micros: int = 0
    spend_totals: int = 0  # key x day or month spend totals added to the budgets
    reservations: int = 0  # open reservations held again
    old: OldStore = field(default_factory=OldStore)

    def lines(self) -> list[str]:
        old = self.old
        reserved = sum(amount for _, _, amount in old.reservations)
        months = {(k, p): v for (k, p), v in old.spend.items() if len(p) == 7}
        return [
            f"video jobs: {self.jobs} imported, {self.jobs_present} already there",
            f"webhook events to deliver: {self.events} imported",
            f"usage: {self.usage_rows} key/day/model totals imported ({self.requests} requests, "
            f"${self.cost_micros / 1_000_000:.6f}), {self.usage_present} already there",
            f"budgets: spend totals of {len(months)} key-months (${sum(months.values()):.6f}) "
            f"and {len(old.spend) - len(months)} key-days, {len(old.reservations)} open "
            f"reservations (${reserved:.6f}); {self.spend_totals} totals and "
            f"{self.reservations} reservations imported, the rest already there",
        ]


def _event_job(event: Delivery) -> str | None:
    """The job a webhook event is about (its body's data.id)."""
    try:
        data = json.loads(event.body).get("data")
    except (ValueError, AttributeError):
        return None
    video = data.get("id") if isinstance(data, dict) else None
    return video if isinstance(video, str) else None


# --- reading an old store ---------------------------------------------------------------


async def read_old_store(url: str, prefix: str) -> OldStore:
    """Everything an old store (a redis:// URL, or sqlite:///path/jobs.sqlite3) holds."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return await _read_sqlite(url)
    if scheme in ("redis", "rediss", "unix"):
        return await _read_redis(url, prefix)
    raise ValueError(
        "the store to import must be redis://host:port/db or sqlite:///path/to/jobs.sqlite3, "
        f"got {scheme}://..."
    )


def _tables(tx: Tx) -> set[str]:
    rows = tx.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(row[0]) for row in rows}


def _sqlite_store(tx: Tx) -> OldStore:
    old = OldStore()
    tables = _tables(tx)
    if "video_jobs" in tables:
        columns = {str(row[1]) for row in tx.execute("PRAGMA table_info(video_jobs)").fetchall()}
        kept = [name for name in FIELDS if name in columns]  # an older file lacks newer ones
        select = ", ".join(f'"{name}"' for name in kept)
        for row in tx.execute(f"SELECT {select} FROM video_jobs ORDER BY seq").fetchall():  # noqa: S608
            values = {name: row[name] for name in kept}
            if values.get("error") is not None:
                values["error"] = json.loads(values["error"])
            old.jobs.append(job_from_record(values))
    if "webhook_outbox" in tables:
        rows = tx.execute(
            "SELECT id, url, body, created_at, attempts FROM webhook_outbox ORDER BY created_at"
        ).fetchall()
        old.events = [Delivery(r[0], r[1], r[2], float(r[3]), int(r[4])) for r in rows]
    if "ledger_usage" in tables:
        rows = tx.execute(
            "SELECT owner, day, model, requests, images, video_seconds, cost FROM ledger_usage "
            "ORDER BY day, owner, model"
        ).fetchall()
        old.usage = [
            UsageRow(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), float(r[6])) for r in rows
        ]
    if "ledger_spend" in tables:
        rows = tx.execute("SELECT owner, period, amount FROM ledger_spend").fetchall()
        old.spend = {(r[0], r[1]): float(r[2]) for r in rows}
    if "ledger_reservations" in tables:
        rows = tx.execute(
            "SELECT owner, id, amount FROM ledger_reservations ORDER BY id"
        ).fetchall()
        old.reservations = [(r[0], r[1], float(r[2])) for r in rows]
    return old


async def _read_sqlite(url: str) -> OldStore:
    path = Path(url.removeprefix("sqlite:///"))
    if not await asyncio.to_thread(path.is_file):  # Database.open would make an empty one
        raise ValueError(f"no store to import at {path}")
    database = await Database.open(url, pool_size=1, what="store to import")
    try:
        return await database.run(_sqlite_store)
    finally:
        await database.close()


async def _read_redis(url: str, prefix: str) -> OldStore:
    # Imported here: a SQLite import never loads the Redis client.
    import redis.asyncio as aioredis

    from mediagate.stores.redis.db import RedisDb

    db = await RedisDb.open(url, "store to import", decode_responses=True)

    async def keys(r: aioredis.Redis, pattern: str) -> list[str]:
        return sorted([key async for key in r.scan_iter(match=pattern, count=1000)])

    async def read(r: aioredis.Redis) -> OldStore:
        old = OldStore()
        # Jobs: a hash per job, every value JSON; `seq` is the order they were created in.
        found: list[tuple[int, VideoJob]] = []
        names = await keys(r, f"{prefix}:video:*")
        for start in range(0, len(names), _BATCH):
            async with r.pipeline(transaction=False) as pipe:
                for key in names[start : start + _BATCH]:
                    pipe.hgetall(key)
                hashes = cast(list[dict[str, str]], await pipe.execute())
            for raw in hashes:
                if "id" not in raw:
                    continue
                values = {name: json.loads(raw[name]) for name in FIELDS if name in raw}
                found.append((int(raw.get("seq", 0)), job_from_record(values)))
        old.jobs = [job for _, job in sorted(found, key=lambda pair: pair[0])]
        outbox = cast(dict[str, str], await r.hgetall(f"{prefix}:outbox"))
        events = [Delivery(**json.loads(raw)) for raw in outbox.values()]
        old.events = sorted(events, key=lambda event: event.created_at)
        # Usage: `{prefix}:ledger:usage:{key}:{day}`, fields `{model}|{total}`.
        usage = f"{prefix}:ledger:usage:"
        for key in await keys(r, f"{usage}*"):
            owner, _, day = key.removeprefix(usage).rpartition(":")
            models: dict[str, dict[str, float]] = {}
            for name, value in cast(dict[str, str], await r.hgetall(key)).items():
                model, _, total = name.rpartition("|")
                models.setdefault(model, {})[total] = float(value)
            for model, totals in sorted(models.items()):
                old.usage.append(
                    UsageRow(
                        owner,
                        day,
                        model,
                        int(totals.get("requests", 0)),
                        int(totals.get("images", 0)),
                        int(totals.get("video_seconds", 0)),
                        totals.get("cost", 0.0),
                    )
                )
        old.usage.sort(key=lambda row: (row.day, row.key, row.model))
        spend = f"{prefix}:ledger:spend:"
        for key in await keys(r, f"{spend}*"):
            owner, _, period = key.removeprefix(spend).rpartition(":")
            old.spend[(owner, period)] = float(cast(str, await r.get(key)) or 0)
        held = f"{prefix}:ledger:resvamt:"
        for key in await keys(r, f"{held}*"):
            amounts = cast(dict[str, str], await r.hgetall(key))
            owner = key.removeprefix(held)
            old.reservations += [(owner, rid, float(v)) for rid, v in sorted(amounts.items())]
        return old

    try:
        return await db.run(read)
    finally:
        await db.close()


# --- writing into the records' database ---------------------------------------------------


def _day_start(day: str) -> float:
    return float(calendar.timegm(time.strptime(day, "%Y-%m-%d")))


_ROLLUP = (
    "INSERT INTO usage_rollups (grain, bucket, key, team, model, route, requests, images, "
    "video_seconds, cost_micros) VALUES (?, ?, ?, '', ?, '', ?, ?, ?, ?) "
    "ON CONFLICT (grain, bucket, key, team, model, route) DO UPDATE SET "
    "requests = usage_rollups.requests + excluded.requests, "
    "images = usage_rollups.images + excluded.images, "
    "video_seconds = usage_rollups.video_seconds + excluded.video_seconds, "
    "cost_micros = usage_rollups.cost_micros + excluded.cost_micros"
)


def _book_usage(tx: Tx, row: UsageRow) -> bool:
    """The usage total as a settlement (keyed import:key:day:model) and its rollups, once."""
    cost = micros(row.cost)
    inserted = tx.execute(
        "INSERT INTO settlements (id, at, key, team, model, route, cost_micros, images, "
        "video_seconds) VALUES (?, ?, ?, '', ?, '', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (
            f"import:{row.key}:{row.day}:{row.model}",
            _day_start(row.day),
            row.key,
            row.model,
            cost,
            row.images,
            row.video_seconds,
        ),
    ).rowcount
    if not inserted:
        return False
    totals = (row.requests, row.images, row.video_seconds, cost)
    for grain, bucket in (("day", row.day), ("hour", f"{row.day}T00")):
        tx.execute(_ROLLUP, (grain, bucket, row.key, row.model, *totals))
    return True


def _booking(rows: list[UsageRow]) -> Callable[[Tx], list[bool]]:
    return lambda tx: [_book_usage(tx, row) for row in rows]


async def import_store(
    url: str,
    prefix: str,
    database: Database,
    *,
    clock: Callable[[], float] = time.time,
) -> Imported:
    """Read the old store at `url` and write it into `database` (already migrated)."""
    old = await read_old_store(url, prefix)
    report = Imported(old=old)
    jobs = SqlJobStore(database, clock)
    pending: dict[str | None, list[Delivery]] = {}
    for event in old.events:
        pending.setdefault(_event_job(event), []).append(event)
    known = {job.id for job in old.jobs}
    for start in range(0, len(old.jobs), _BATCH):
        batch = [(job, pending.get(job.id, [])) for job in old.jobs[start : start + _BATCH]]
        for (_, events), added in zip(batch, await jobs.restore(batch), strict=True):
            report.jobs += added
            report.jobs_present += not added
            report.events += len(events) if added else 0
    # Events about no job of this store (none are written so; kept in case): by their own id.
    orphans = [e for job_id, events in pending.items() if job_id not in known for e in events]
    if orphans:
        report.events += await _restore_orphans(database, orphans, clock())
    for start in range(0, len(old.usage), _BATCH):
        rows = old.usage[start : start + _BATCH]
        for row, added in zip(rows, await database.transaction(_booking(rows)), strict=True):
            if added:
                report.usage_rows += 1
                report.requests += row.requests
                report.cost_micros += micros(row.cost)
            else:
                report.usage_present += 1
    now = clock()
    for (key, period), amount in sorted(old.spend.items()):
        report.spend_totals += await import_spend(database, key, period, amount, now)
    for key, reservation, amount in old.reservations:
        expires = now + _RESERVATION_TTL_S
        report.reservations += await import_reservation(
            database, key, reservation, amount, expires, now
        )
    return report


async def _restore_orphans(database: Database, events: list[Delivery], now: float) -> int:
    def write(tx: Tx) -> int:
        added = 0
        for event in events:
            added += tx.execute(
                "INSERT INTO webhook_outbox (id, url, body, created_at, attempts, due) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (event.id, event.url, event.body, event.created_at, event.attempts, now),
            ).rowcount
        return added

    return await database.transaction(write)

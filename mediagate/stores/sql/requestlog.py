"""The request log's SQL (table `request_log`, and its counts in `usage_rollups`), written once
for both engines. The writer (mediagate.accounting.requestlog) hands a batch of encoded rows to
`write_batch`, run as ONE transaction: the rows inserted (a row already there, from a batch
retried after a failure that did commit, is skipped), the rollups' `requests`, `errors` and
`reads` added for the rows actually inserted only, and the rows whose job or request has
already settled completed from `settlements`. The ledger's settlement updates rows already
written in its own transaction; between the two, a row ends booked whatever the order.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from mediagate.stores.sql.db import Tx

# The row's columns, in the order the writer encodes them.
COLUMNS = (
    "request_id",
    "at",
    "key",
    "team",
    "principal",
    "endpoint",
    "method",
    "model",
    "alias",
    "route",
    "routes_tried",
    "token_group",
    "mapped",
    "dropped",
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
    "batch_id",
    "custom_id",
    "replayed",
    "trace_id",
    "prompt",
    "client_request_id",
)
_AT, _KEY, _TEAM, _MODEL, _ROUTE, _STATUS = (COLUMNS.index(c) for c in (
    "at", "key", "team", "model", "route", "status"
))  # fmt: skip
_INSERT = (
    f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
    " ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)

# Rollup deltas: (grain, bucket, key, team, model, route) -> [requests, errors, reads].
RollupKey = tuple[str, str, str, str, str, str]
_UPSERT = (
    "INSERT INTO usage_rollups (grain, bucket, key, team, model, route, requests, errors, reads)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (grain, bucket, key, team, model, route) DO UPDATE SET"
    " requests = usage_rollups.requests + excluded.requests,"
    " errors = usage_rollups.errors + excluded.errors,"
    " reads = usage_rollups.reads + excluded.reads"
)
# A row written 'reserved' (a video create) whose job settled before the row was written
# takes the settlement's numbers. (A row written 'booked' already carries its request's
# settled cost; a row of cost_state 'none', such as a failed read of a job, is no bill.)
_COMPLETE = (
    "UPDATE request_log SET cost_micros = s.cost_micros, images = s.images,"
    " video_seconds = s.video_seconds, cost_state = 'booked'"
    " FROM settlements s WHERE request_log.request_id = ? AND request_log.cost_state = 'reserved'"
    " AND s.id = COALESCE(request_log.job_id, request_log.request_id)"
)
_STATE = COLUMNS.index("cost_state")


def buckets(at: float) -> tuple[str, str]:
    """The hour and day buckets of a Unix time, UTC: 'YYYY-MM-DDTHH', 'YYYY-MM-DD'."""
    return _buckets(int(at // 3600))


@functools.lru_cache(maxsize=64)
def _buckets(hour: int) -> tuple[str, str]:
    text = time.strftime("%Y-%m-%dT%H", time.gmtime(hour * 3600))
    return text, text[:10]


def write_batch(tx: Tx, rows: Sequence[Sequence[Any]], reads: dict[RollupKey, int]) -> list[str]:
    """One batch in the caller's transaction: the ids of the rows inserted (the rest were
    already there). `reads`: successful reads of jobs to add to the rollups, per rollup key."""
    inserted = [r[0] for r in tx.executemany_returning(_INSERT, rows)]
    deltas: dict[RollupKey, list[int]] = {}
    reserved: list[tuple[str]] = []
    if inserted:
        fresh = set(inserted)
        for row in rows:
            if row[0] not in fresh:
                continue
            fresh.discard(row[0])  # a request id twice in one batch is one row
            if row[_STATE] == "reserved":
                reserved.append((row[0],))
            error = 1 if row[_STATUS] >= 400 else 0
            hour, day = buckets(row[_AT])
            who = (row[_KEY], row[_TEAM], row[_MODEL] or "", row[_ROUTE] or "")
            for grain, bucket in (("hour", hour), ("day", day)):
                delta = deltas.setdefault((grain, bucket, *who), [0, 0, 0])
                delta[0] += 1
                delta[1] += error
    for rollup, count in reads.items():
        deltas.setdefault(rollup, [0, 0, 0])[2] += count
    if deltas:
        # In key order, so that two writers (or a writer and a settlement) lock rows alike.
        tx.executemany(_UPSERT, [(*k, *v) for k, v in sorted(deltas.items())])
    if reserved:
        tx.executemany(_COMPLETE, reserved)
    return inserted


def complete_rows(
    tx: Tx, settlement_id: str, cost_micros: int, images: int, video_seconds: int
) -> int:
    """The rows already written for a settlement (its id: a video's job id, or an image
    request's request id) take its numbers and become 'booked': what the ledger's settlement
    calls in its own transaction, right after inserting into `settlements`. How many rows."""
    return tx.execute(
        "UPDATE request_log SET cost_micros = ?, images = ?, video_seconds = ?,"
        " cost_state = 'booked' WHERE (job_id = ? OR (job_id IS NULL AND request_id = ?))"
        " AND cost_state <> 'none'",
        (cost_micros, images, video_seconds, settlement_id, settlement_id),
    ).rowcount


def sweep(tx: Tx, before: float, limit: int = 10000) -> int:
    """At most `limit` of the rows older than `before` deleted (retention); how many."""
    return tx.execute(
        "DELETE FROM request_log WHERE request_id IN"
        " (SELECT request_id FROM request_log WHERE at < ? ORDER BY at LIMIT ?)",
        (before, limit),
    ).rowcount

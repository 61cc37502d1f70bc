"""Files, batches and batch lines in the records' database (migration 0010).

Plain functions of a transaction (`work(tx)`, run by `Database.transaction`), each statement
written once for both engines; rows come back as dicts of the table's columns. Every move of a
line is one conditional UPDATE (`... WHERE state = ? [AND holder = ?]`), so two replicas never
take, send or end the same line; a line's end moves its batch's counts and cost in the same
transaction. Column names in the SQL come only from the tuples below (hence the S608 waivers);
every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mediagate.stores.sql.db import Row, Tx

FILE_COLUMNS = (
    "id",
    "owner",
    "team",
    "purpose",
    "filename",
    "bytes",
    "object",
    "created_at",
    "expires_at",
    "batch_id",
)
BATCH_COLUMNS = (
    "id",
    "owner",
    "team",
    "principal",
    "endpoint",
    "input_file_id",
    "completion_window",
    "status",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "total",
    "completed",
    "failed",
    "output_file_id",
    "error_file_id",
    "errors",
    "metadata",
    "output_expires_s",
    "base_url",
    "estimate_micros",
    "cost_micros",
    "updated_at",
)
LINE_COLUMNS = (
    "batch_id",
    "line",
    "custom_id",
    "body",
    "estimate_micros",
    "state",
    "holder",
    "lease_until",
    "not_before",
    "attempts",
    "job_id",
    "request_id",
    "status_code",
    "result",
    "cost_micros",
    "ended_at",
)
# A batch still running lines (or writing its files): the runner's work.
ACTIVE = ("in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "expired", "cancelled")
# A line's states, in order; `claimed` and `sent` are held under a lease.
LINE_STATES = ("pending", "claimed", "sent", "waiting", "done", "failed")

_FILE_SELECT = "SELECT " + ", ".join(FILE_COLUMNS) + " FROM files"  # noqa: S608
_BATCH_SELECT = "SELECT " + ", ".join(BATCH_COLUMNS) + " FROM batches"  # noqa: S608
_LINE_SELECT = "SELECT " + ", ".join(LINE_COLUMNS) + " FROM batch_lines"  # noqa: S608


def _dict(row: Any, columns: Sequence[str]) -> dict[str, Any] | None:
    return None if row is None else dict(zip(columns, row, strict=True))


def _dicts(rows: Iterable[Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _insert(table: str, values: dict[str, Any]) -> tuple[str, list[Any]]:
    names = list(values)
    marks = ", ".join("?" for _ in names)
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", list(values.values())  # noqa: S608


# --- Files ----------------------------------------------------------------------------------


def insert_file(tx: Tx, values: dict[str, Any], quota: int | None = None) -> bool:
    """The file recorded; with a `quota`, only if the owner's files and this one fit it (one
    conditional write): False if they would not."""
    if quota is None:
        sql, params = _insert("files", values)
        tx.execute(sql, params)
        return True
    names = list(values)
    marks = ", ".join("?" for _ in names)
    sql = (
        f"INSERT INTO files ({', '.join(names)}) SELECT {marks} "  # noqa: S608
        "WHERE (SELECT COALESCE(SUM(bytes), 0) FROM files WHERE owner = ?) + ? <= ?"
    )
    params = [*values.values(), values["owner"], values["bytes"], quota]
    return tx.execute(sql, params).rowcount == 1


def get_file(tx: Tx, file_id: str) -> dict[str, Any] | None:
    return _dict(tx.execute(_FILE_SELECT + " WHERE id = ?", (file_id,)).fetchone(), FILE_COLUMNS)


def delete_file(tx: Tx, file_id: str) -> dict[str, Any] | None:
    """The file's row removed; the row as it was (its object is the caller's to delete)."""
    found = get_file(tx, file_id)
    if found is not None:
        tx.execute("DELETE FROM files WHERE id = ?", (file_id,))
    return found


def used_bytes(tx: Tx, owner: str) -> int:
    return int(tx.scalar("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE owner = ?", (owner,)))


def list_files(
    tx: Tx,
    owner: str | None,
    *,
    purpose: str | None,
    after: str | None,
    limit: int,
    newest_first: bool,
) -> tuple[list[dict[str, Any]], bool] | None:
    """A page of an owner's files (None: every owner's) after the file `after` (None: that
    file is not the owner's); and whether more follow."""
    where, params = _owned(owner)
    if purpose is not None:
        where.append("purpose = ?")
        params.append(purpose)
    rows = _page(tx, "files", _FILE_SELECT, where, params, after, limit, newest_first)
    return None if rows is None else (_dicts(rows[:limit], FILE_COLUMNS), len(rows) > limit)


def expired_files(tx: Tx, now: float, limit: int) -> list[dict[str, Any]]:
    rows = tx.execute(
        _FILE_SELECT + " WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at "
        "LIMIT ?",
        (int(now), limit),
    ).fetchall()
    return _dicts(rows, FILE_COLUMNS)


# --- Batches --------------------------------------------------------------------------------


def insert_batch(tx: Tx, values: dict[str, Any]) -> None:
    sql, params = _insert("batches", values)
    tx.execute(sql, params)


def insert_lines(tx: Tx, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    names = list(rows[0])
    marks = ", ".join("?" for _ in names)
    tx.executemany(
        f"INSERT INTO batch_lines ({', '.join(names)}) VALUES ({marks})",  # noqa: S608
        [list(row.values()) for row in rows],
    )


def get_batch(tx: Tx, batch_id: str) -> dict[str, Any] | None:
    row = tx.execute(_BATCH_SELECT + " WHERE id = ?", (batch_id,)).fetchone()
    return _dict(row, BATCH_COLUMNS)


def list_batches(
    tx: Tx,
    owner: str | None,
    *,
    after: str | None,
    limit: int,
    team: str | None = None,
    status: str | None = None,
) -> tuple[list[dict[str, Any]], bool] | None:
    """A page of batches, newest first (an owner's, a team's, or all), after the batch `after`."""
    where, params = _owned(owner)
    if team is not None:
        where.append("team = ?")
        params.append(team)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    rows = _page(tx, "batches", _BATCH_SELECT, where, params, after, limit, True)
    return None if rows is None else (_dicts(rows[:limit], BATCH_COLUMNS), len(rows) > limit)


def active_batches(tx: Tx, limit: int) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in ACTIVE)
    rows = tx.execute(
        _BATCH_SELECT + f" WHERE status IN ({marks}) ORDER BY created_at, seq LIMIT ?",
        (*ACTIVE, limit),
    ).fetchall()
    return _dicts(rows, BATCH_COLUMNS)


def move_batch(
    tx: Tx, batch_id: str, from_status: Sequence[str], changes: dict[str, Any]
) -> dict[str, Any] | None:
    """Compare-and-set: the batch's `changes` if its status is one of `from_status`; the batch
    as it is now (None: it was not in such a status)."""
    sets = ", ".join(f"{name} = ?" for name in changes)
    marks = ", ".join("?" for _ in from_status)
    rows = tx.execute(
        f"UPDATE batches SET {sets} WHERE id = ? AND status IN ({marks}) RETURNING id",  # noqa: S608
        (*changes.values(), batch_id, *from_status),
    ).fetchall()
    return get_batch(tx, batch_id) if rows else None


def hold_batch(tx: Tx, batch_id: str, holder: str, now: float, hold_s: float) -> bool:
    """The right to finalize the batch (write its files): taken if free, lapsed or ours."""
    rows = tx.execute(
        "UPDATE batches SET holder = ?, held_until = ? WHERE id = ? AND "
        "(holder IS NULL OR holder = ? OR held_until <= ?) RETURNING id",
        (holder, now + hold_s, batch_id, holder, now),
    ).fetchall()
    return bool(rows)


def batch_counts(tx: Tx) -> dict[str, int]:
    rows = tx.execute("SELECT status, COUNT(*) FROM batches GROUP BY status").fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


def line_counts(tx: Tx) -> dict[str, int]:
    """Lines by state, of the batches still running."""
    marks = ", ".join("?" for _ in ACTIVE)
    rows = tx.execute(
        "SELECT l.state, COUNT(*) FROM batch_lines l JOIN batches b ON b.id = l.batch_id "  # noqa: S608
        f"WHERE b.status IN ({marks}) GROUP BY l.state",
        ACTIVE,
    ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


# --- Lines ----------------------------------------------------------------------------------


def claim_lines(
    tx: Tx, batch_id: str, holder: str, now: float, lease_s: float, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` pending lines of the batch, first first, leased to `holder`. The state is
    checked again on each row as it is updated: a line another replica took first is skipped."""
    rows = tx.execute(
        "UPDATE batch_lines SET state = 'claimed', holder = ?, lease_until = ?, "
        "attempts = attempts + 1 WHERE batch_id = ? AND state = 'pending' AND line IN "
        "(SELECT line FROM batch_lines WHERE batch_id = ? AND state = 'pending' "
        "AND not_before <= ? ORDER BY line LIMIT ?) RETURNING line",
        (holder, now + lease_s, batch_id, batch_id, now, limit),
    ).fetchall()
    if not rows:
        return []
    lines = sorted(int(row[0]) for row in rows)
    marks = ", ".join("?" for _ in lines)
    found = tx.execute(
        _LINE_SELECT + f" WHERE batch_id = ? AND line IN ({marks}) ORDER BY line",
        (batch_id, *lines),
    ).fetchall()
    return _dicts(found, LINE_COLUMNS)


def mark_sent(
    tx: Tx, batch_id: str, line: int, holder: str, request_id: str, job_id: str | None
) -> bool:
    """Recorded as sent, before its paid call: only if the line is still this holder's claim."""
    rows = tx.execute(
        "UPDATE batch_lines SET state = 'sent', request_id = ?, job_id = ? WHERE batch_id = ? "
        "AND line = ? AND state = 'claimed' AND holder = ? RETURNING line",
        (request_id, job_id, batch_id, line, holder),
    ).fetchall()
    return bool(rows)


def release_line(tx: Tx, batch_id: str, line: int, holder: str, not_before: float) -> bool:
    """A line that surely did no work (never sent, or an answer that sent nothing: a 429),
    back to pending, tried again from `not_before`."""
    rows = tx.execute(
        "UPDATE batch_lines SET state = 'pending', holder = NULL, lease_until = NULL, "
        "not_before = ?, request_id = NULL WHERE batch_id = ? AND line = ? AND holder = ? "
        "AND state IN ('claimed', 'sent') RETURNING line",
        (not_before, batch_id, line, holder),
    ).fetchall()
    return bool(rows)


def wait_for_job(tx: Tx, batch_id: str, line: int, holder: str) -> bool:
    """A video line whose job is recorded: it waits for the job to end (no lease needed)."""
    rows = tx.execute(
        "UPDATE batch_lines SET state = 'waiting', holder = NULL, lease_until = NULL "
        "WHERE batch_id = ? AND line = ? AND holder = ? AND state = 'sent' RETURNING line",
        (batch_id, line, holder),
    ).fetchall()
    return bool(rows)


def end_line(
    tx: Tx,
    batch_id: str,
    line: int,
    from_states: Sequence[str],
    *,
    ok: bool,
    status_code: int | None,
    result: str,
    cost_micros: int,
    now: float,
    holder: str | None = None,
    lease_until: float | None = None,
) -> bool:
    """The line ended (its output line stored under `result`), and its batch's counts and cost
    moved, in one transaction; False (nothing moved) if the line had left `from_states` (or
    another holder has it; or, taking over a lapsed line, its lease is no longer the one seen)."""
    marks = ", ".join("?" for _ in from_states)
    held = " AND holder = ?" if holder is not None else ""
    held += " AND lease_until = ?" if lease_until is not None else ""
    rows = tx.execute(
        "UPDATE batch_lines SET state = ?, status_code = ?, result = ?, cost_micros = ?, "  # noqa: S608
        "ended_at = ?, holder = NULL, lease_until = NULL "
        f"WHERE batch_id = ? AND line = ? AND state IN ({marks}){held} RETURNING line",
        (
            "done" if ok else "failed",
            status_code,
            result,
            cost_micros,
            now,
            batch_id,
            line,
            *from_states,
            *((holder,) if holder is not None else ()),
            *((lease_until,) if lease_until is not None else ()),
        ),
    ).fetchall()
    if not rows:
        return False
    counter = "completed" if ok else "failed"
    tx.execute(
        f"UPDATE batches SET {counter} = {counter} + 1, cost_micros = cost_micros + ?, "  # noqa: S608
        "updated_at = ? WHERE id = ?",
        (cost_micros, now, batch_id),
    )
    return True


def renew_leases(tx: Tx, holder: str, until: float) -> None:
    tx.execute(
        "UPDATE batch_lines SET lease_until = ? WHERE holder = ? AND state IN ('claimed', 'sent')",
        (until, holder),
    )


def lapsed_lines(tx: Tx, now: float, limit: int) -> list[dict[str, Any]]:
    """Lines whose holder stopped renewing their lease (it died): claimed (never sent) or sent
    (sent, no answer recorded)."""
    rows = tx.execute(
        _LINE_SELECT + " WHERE state IN ('claimed', 'sent') AND lease_until <= ? "
        "ORDER BY lease_until LIMIT ?",
        (now, limit),
    ).fetchall()
    return _dicts(rows, LINE_COLUMNS)


def reclaim_line(tx: Tx, batch_id: str, line: int, lease_until: float) -> bool:
    """A lapsed claimed line (never sent), pending again: only if still as it was seen."""
    rows = tx.execute(
        "UPDATE batch_lines SET state = 'pending', holder = NULL, lease_until = NULL "
        "WHERE batch_id = ? AND line = ? AND state = 'claimed' AND lease_until = ? RETURNING line",
        (batch_id, line, lease_until),
    ).fetchall()
    return bool(rows)


def adopt_sent_line(tx: Tx, batch_id: str, line: int, lease_until: float) -> bool:
    """A lapsed sent line taken over (to end it, or to wait for its job), only if still as seen."""
    rows = tx.execute(
        "UPDATE batch_lines SET holder = NULL, lease_until = NULL, state = 'waiting' "
        "WHERE batch_id = ? AND line = ? AND state = 'sent' AND lease_until = ? RETURNING line",
        (batch_id, line, lease_until),
    ).fetchall()
    return bool(rows)


def waiting_lines(tx: Tx, batch_id: str, limit: int) -> list[dict[str, Any]]:
    rows = tx.execute(
        _LINE_SELECT + " WHERE batch_id = ? AND state = 'waiting' ORDER BY line LIMIT ?",
        (batch_id, limit),
    ).fetchall()
    return _dicts(rows, LINE_COLUMNS)


def lines_in_flight(tx: Tx, batch_id: str) -> dict[str, int]:
    """The batch's lines in flight by state (claimed, sent, waiting): a range of the state
    index each, never a count of the whole batch."""
    rows = tx.execute(
        "SELECT state, COUNT(*) FROM batch_lines WHERE batch_id = ? "
        "AND state IN ('claimed', 'sent', 'waiting') GROUP BY state",
        (batch_id,),
    ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


def expire_pending(tx: Tx, batch_id: str, result_of: Any, now: float) -> int:
    """Every pending line of the batch ended failed (its window passed, or it was cancelled):
    `result_of(line, custom_id)` is each one's stored output line. How many."""
    rows = tx.execute(
        "SELECT line, custom_id FROM batch_lines WHERE batch_id = ? AND state = 'pending'",
        (batch_id,),
    ).fetchall()
    ended = 0
    for line, custom_id in rows:
        if end_line(
            tx,
            batch_id,
            int(line),
            ("pending",),
            ok=False,
            status_code=None,
            result=result_of(int(line), str(custom_id)),
            cost_micros=0,
            now=now,
        ):
            ended += 1
    return ended


def ended_lines(
    tx: Tx, batch_id: str, ok: bool, after_line: int, limit: int
) -> list[tuple[int, str]]:
    """The stored output lines of the batch's ended lines (done, or failed), in line order."""
    rows = tx.execute(
        "SELECT line, result FROM batch_lines WHERE batch_id = ? AND state = ? AND line > ? "
        "ORDER BY line LIMIT ?",
        (batch_id, "done" if ok else "failed", after_line, limit),
    ).fetchall()
    return [(int(row[0]), str(row[1])) for row in rows]


def line_page(tx: Tx, batch_id: str, after_line: int, limit: int) -> list[dict[str, Any]]:
    rows = tx.execute(
        _LINE_SELECT + " WHERE batch_id = ? AND line > ? ORDER BY line LIMIT ?",
        (batch_id, after_line, limit),
    ).fetchall()
    return _dicts(rows, LINE_COLUMNS)


# --- Paging ---------------------------------------------------------------------------------


def _owned(owner: str | None) -> tuple[list[str], list[Any]]:
    return (["owner = ?"], [owner]) if owner is not None else ([], [])


def _page(
    tx: Tx,
    table: str,
    select: str,
    where: list[str],
    params: list[Any],
    after: str | None,
    limit: int,
    newest_first: bool,
) -> list[Row] | None:
    where, params = list(where), list(params)
    op, order = ("<", "DESC") if newest_first else (">", "ASC")
    if after is not None:
        cursor = tx.execute(
            f"SELECT created_at, seq FROM {table} WHERE id = ?"  # noqa: S608
            + (" AND owner = ?" if where and where[0] == "owner = ?" else ""),
            (after, params[0]) if where and where[0] == "owner = ?" else (after,),
        ).fetchone()
        if cursor is None:
            return None
        where.append(f"(created_at {op} ? OR (created_at = ? AND seq {op} ?))")
        params.extend([cursor[0], cursor[0], cursor[1]])
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    sql = f"{select}{clause} ORDER BY created_at {order}, seq {order} LIMIT ?"
    return list(tx.execute(sql, (*params, limit + 1)).fetchall())

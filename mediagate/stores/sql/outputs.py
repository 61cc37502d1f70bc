"""Kept outputs in the records' database (`outputs`; migration 0009): what the gallery lists.

Plain functions of a transaction (`work(tx)`, run by `Database.transaction` or `.run`), each
statement written once for both engines. A page is newest first, keyset-paged on
(created_at, id), narrowed to a team or a key (a member's scope) and filtered by team, key,
model and kind; rows come back as dicts of the table's columns.

Column names in the SQL below come only from COLUMNS (hence the S608 waivers); every value is
a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mediagate.stores.sql.db import Tx

__all__ = [
    "COLUMNS",
    "OutputFilter",
    "delete",
    "get",
    "has_job",
    "insert",
    "oldest",
    "page",
    "total_bytes",
]

# Every column but the id, in the table's order.
COLUMNS = (
    "kind",
    "object",
    "content_type",
    "bytes",
    "request_id",
    "job_id",
    "key",
    "team",
    "principal",
    "model",
    "route",
    "size",
    "seconds",
    "quality",
    "prompt",
    "cost_micros",
    "created_at",
    "upstream_expires_at",
)
_SELECT = "SELECT id, " + ", ".join(COLUMNS) + " FROM outputs"  # noqa: S608


@dataclass(frozen=True)
class OutputFilter:
    """Who may see (scope_team / scope_key: a member's) and what was asked (the rest)."""

    scope_team: str | None = None
    scope_key: str | None = None
    team: str | None = None
    key: str | None = None
    model: str | None = None
    kind: str | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("team", self.scope_team),
            ("key", self.scope_key),
            ("team", self.team),
            ("key", self.key),
            ("model", self.model),
            ("kind", self.kind),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return clauses, params


def insert(tx: Tx, row: dict[str, Any]) -> int | None:
    """The row's id; None when the job's content was kept already (its unique index)."""
    values = [row.get(column) for column in COLUMNS]
    marks = ", ".join("?" for _ in COLUMNS)
    cursor = tx.execute(
        f"INSERT INTO outputs ({', '.join(COLUMNS)}) VALUES ({marks}) "  # noqa: S608
        "ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO NOTHING RETURNING id",
        values,
    )
    found = cursor.fetchone()
    return None if found is None else int(found[0])


def has_job(tx: Tx, job_id: str) -> bool:
    return tx.execute("SELECT 1 FROM outputs WHERE job_id = ?", (job_id,)).fetchone() is not None


def get(tx: Tx, output_id: int, where: OutputFilter) -> dict[str, Any] | None:
    clauses, params = where.where()
    sql = f"{_SELECT} WHERE " + " AND ".join(["id = ?", *clauses])
    found = tx.execute(sql, [output_id, *params]).fetchone()
    return None if found is None else _row(found)


def page(
    tx: Tx, where: OutputFilter, before: tuple[float, int] | None, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` rows newest first, after the (created_at, id) cursor `before`."""
    clauses, params = where.where()
    if before is not None:
        clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [before[0], before[0], before[1]]
    sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "")
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    return [_row(r) for r in tx.execute(sql, [*params, limit]).fetchall()]


def oldest(tx: Tx, before: float | None, limit: int) -> list[dict[str, Any]]:
    """The oldest rows (made before `before`, when given), oldest first: the sweep's."""
    sql = _SELECT + (" WHERE created_at < ?" if before is not None else "")
    params: list[Any] = [before] if before is not None else []
    sql += " ORDER BY created_at, id LIMIT ?"
    return [_row(r) for r in tx.execute(sql, [*params, limit]).fetchall()]


def total_bytes(tx: Tx) -> int:
    return int(tx.scalar("SELECT COALESCE(SUM(bytes), 0) FROM outputs") or 0)


def delete(tx: Tx, ids: list[int]) -> int:
    if not ids:
        return 0
    marks = ", ".join("?" for _ in ids)
    return tx.execute(f"DELETE FROM outputs WHERE id IN ({marks})", ids).rowcount  # noqa: S608


def _row(row: Any) -> dict[str, Any]:
    return {"id": int(row[0]), **{c: row[i + 1] for i, c in enumerate(COLUMNS)}}

"""Client keys and teams in the records' database (`client_keys`, `teams`; migration 0002).

Plain functions of a transaction (`work(tx)`, run by `Database.transaction` or `.run`), each
statement written once for both engines. Rows come back as dicts of the tables' columns, with
`models` decoded from its JSON text. Times are Unix seconds.

Column names in the SQL below come only from KEY_FIELDS and TEAM_FIELDS (hence the S608
waivers); every value is a bound parameter.

Every change of a key or a team bumps the `keys_version` row of `meta` in the same transaction:
a replica polls that one row (at most once a second) and reloads the keys only when it moved.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from mediagate.stores.sql.db import Tx

__all__ = [
    "KEY_FIELDS",
    "TEAM_FIELDS",
    "active_keys",
    "bump",
    "delete_team",
    "get_key",
    "get_team",
    "insert_key",
    "insert_team",
    "list_keys",
    "list_teams",
    "revoke_key",
    "rotate_key",
    "sync_configured",
    "teams",
    "touch",
    "update_key",
    "update_team",
    "version",
]

# The columns an operator sets (the keys file's names, plus team, expiry and webhook).
TEAM_FIELDS = (
    "models",
    "requests_per_minute",
    "images_per_minute",
    "reads_per_minute",
    "concurrent_requests",
    "budget_usd_per_day",
    "budget_usd_per_month",
)
KEY_FIELDS = ("team", *TEAM_FIELDS, "expires_at", "webhook_url")

_VERSION = "keys_version"


def version(tx: Tx) -> str | None:
    """The keys' version: it changes with every change of a key or a team."""
    value: str | None = tx.scalar("SELECT value FROM meta WHERE name = ?", (_VERSION,))
    return value


def bump(tx: Tx, now: float) -> None:
    """A new keys version (a random token: no read-modify-write between replicas)."""
    tx.execute(
        "INSERT INTO meta (name, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (_VERSION, secrets.token_hex(8), now),
    )


def _row(row: Any) -> dict[str, Any]:
    out = dict(zip(row.keys(), row, strict=True))
    if out.get("models") is not None:
        out["models"] = json.loads(out["models"])
    return out


def _encode(field: str, value: Any) -> Any:
    return json.dumps(value) if field == "models" and value is not None else value


# --- keys -------------------------------------------------------------------------------------


def active_keys(tx: Tx) -> list[dict[str, Any]]:
    """Every key not revoked (expired ones too: their refusal says why)."""
    rows = tx.execute("SELECT * FROM client_keys WHERE revoked_at IS NULL ORDER BY name")
    return [_row(r) for r in rows.fetchall()]


def get_key(tx: Tx, name: str) -> dict[str, Any] | None:
    row = tx.execute("SELECT * FROM client_keys WHERE name = ?", (name,)).fetchone()
    return None if row is None else _row(row)


def list_keys(
    tx: Tx, *, after: str | None, limit: int, team: str | None, name: str | None
) -> list[dict[str, Any]]:
    """Keys by name after `after` (a page of `limit`), narrowed to a team or to one name."""
    where, params = ["name > ?"], [after or ""]
    if team is not None:
        where.append("team = ?")
        params.append(team)
    if name is not None:
        where.append("name = ?")
        params.append(name)
    clause = " AND ".join(where)
    sql = f"SELECT * FROM client_keys WHERE {clause} ORDER BY name LIMIT ?"  # noqa: S608
    return [_row(r) for r in tx.execute(sql, (*params, limit)).fetchall()]


def insert_key(
    tx: Tx, name: str, sha256: str, fields: Mapping[str, Any], now: float, source: str = "api"
) -> bool:
    """A new key; False when the name (or, vanishingly, the digest) is taken."""
    columns = [f for f in KEY_FIELDS if f in fields]
    values = [_encode(f, fields[f]) for f in columns]
    names = ", ".join(["name", "sha256", *columns, "source", "created_at", "updated_at"])
    marks = ", ".join("?" * (len(columns) + 5))
    row = tx.execute(
        f"INSERT INTO client_keys ({names}) VALUES ({marks}) "  # noqa: S608
        "ON CONFLICT DO NOTHING RETURNING name",
        (name, sha256, *values, source, now, now),
    ).fetchone()
    if row is not None:
        bump(tx, now)
    return row is not None


def update_key(tx: Tx, name: str, fields: Mapping[str, Any], now: float) -> None:
    columns = [f for f in KEY_FIELDS if f in fields]
    sets = ", ".join(f"{c} = ?" for c in [*columns, "updated_at"])
    values = [_encode(f, fields[f]) for f in columns]
    tx.execute(f"UPDATE client_keys SET {sets} WHERE name = ?", (*values, now, name))  # noqa: S608
    bump(tx, now)


def revoke_key(tx: Tx, name: str, now: float) -> None:
    tx.execute(
        "UPDATE client_keys SET revoked_at = ?, updated_at = ?, previous_sha256 = NULL, "
        "previous_until = NULL WHERE name = ? AND revoked_at IS NULL",
        (now, now, name),
    )
    bump(tx, now)


def rotate_key(tx: Tx, name: str, sha256: str, now: float, grace_s: float) -> None:
    """A new secret; the old one stays valid for `grace_s` (0: refused at once)."""
    if grace_s > 0:
        tx.execute(
            "UPDATE client_keys SET previous_sha256 = sha256, previous_until = ?, sha256 = ?, "
            "updated_at = ? WHERE name = ?",
            (now + grace_s, sha256, now, name),
        )
    else:
        tx.execute(
            "UPDATE client_keys SET previous_sha256 = NULL, previous_until = NULL, sha256 = ?, "
            "updated_at = ? WHERE name = ?",
            (sha256, now, name),
        )
    bump(tx, now)


def sync_configured(
    tx: Tx, sources: Mapping[str, Iterable[Mapping[str, Any]]], now: float
) -> list[str]:
    """The configured keys of each source ('env': MEDIAGATE_API_KEYS, 'file': the keys file)
    made the rows of that source: each upserted (a revoked one back, a name another configured
    source gave up taken over), the others revoked. A name a key of the API holds, or a secret
    another name holds, is left alone and returned (the caller says so)."""
    listed = {source: list(entries) for source, entries in sources.items()}
    # First what each source no longer has: revoked, its digest given up (a '-' and the name:
    # never a hex digest, so nothing matches it), so that a secret or a name may move.
    for source, entries in listed.items():
        names = [entry["name"] for entry in entries]
        where, params = "source = ? AND revoked_at IS NULL", [source]
        if names:
            where += f" AND name NOT IN ({', '.join('?' * len(names))})"
            params.extend(names)
        tx.execute(
            "UPDATE client_keys SET revoked_at = ?, updated_at = ?, sha256 = '-' || name "  # noqa: S608
            f"WHERE {where}",
            (now, now, *params),
        )
    clashes: list[str] = []
    for source, entries in listed.items():
        clashes += _upsert_configured(tx, source, entries, now)
    bump(tx, now)
    return clashes


def _upsert_configured(
    tx: Tx, source: str, entries: list[Mapping[str, Any]], now: float
) -> list[str]:
    clashes: list[str] = []
    columns = ["sha256", *KEY_FIELDS]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    for entry in entries:
        taken = tx.scalar(
            "SELECT name FROM client_keys WHERE sha256 = ? AND name <> ?",
            (entry["sha256"], entry["name"]),
        )
        if taken is not None:
            clashes.append(entry["name"])
            continue
        values = [_encode(c, entry.get(c)) for c in columns]
        row = tx.execute(
            f"INSERT INTO client_keys (name, {', '.join(columns)}, source, created_at, "  # noqa: S608
            f"updated_at) VALUES (?, {', '.join('?' * len(columns))}, ?, ?, ?) "
            f"ON CONFLICT (name) DO UPDATE SET {updates}, updated_at = excluded.updated_at, "
            "source = excluded.source, revoked_at = NULL, previous_sha256 = NULL, "
            "previous_until = NULL WHERE client_keys.source = excluded.source "
            "OR (client_keys.source <> 'api' AND client_keys.revoked_at IS NOT NULL) "
            "RETURNING name",
            (entry["name"], *values, source, entry.get("created_at") or now, now),
        ).fetchone()
        if row is None:
            clashes.append(entry["name"])
    return clashes


def touch(tx: Tx, used: Iterable[tuple[str, float]]) -> None:
    """When keys were last used (only ever moved forward)."""
    tx.executemany(
        "UPDATE client_keys SET last_used_at = ? WHERE name = ? "
        "AND (last_used_at IS NULL OR last_used_at < ?)",
        [(at, name, at) for name, at in used],
    )


# --- teams ------------------------------------------------------------------------------------


def teams(tx: Tx) -> list[dict[str, Any]]:
    rows = tx.execute("SELECT * FROM teams WHERE deleted_at IS NULL ORDER BY name")
    return [_row(r) for r in rows.fetchall()]


def get_team(tx: Tx, name: str) -> dict[str, Any] | None:
    row = tx.execute(
        "SELECT * FROM teams WHERE name = ? AND deleted_at IS NULL", (name,)
    ).fetchone()
    return None if row is None else _row(row)


def list_teams(tx: Tx, *, after: str | None, limit: int, name: str | None) -> list[dict[str, Any]]:
    where, params = ["deleted_at IS NULL", "name > ?"], [after or ""]
    if name is not None:
        where.append("name = ?")
        params.append(name)
    sql = f"SELECT * FROM teams WHERE {' AND '.join(where)} ORDER BY name LIMIT ?"  # noqa: S608
    return [_row(r) for r in tx.execute(sql, (*params, limit)).fetchall()]


def insert_team(tx: Tx, name: str, fields: Mapping[str, Any], now: float) -> bool:
    """A new team (a deleted one's name may be taken again); False when the name is taken."""
    columns = list(TEAM_FIELDS)
    values = [_encode(f, fields.get(f)) for f in columns]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    row = tx.execute(
        f"INSERT INTO teams (name, {', '.join(columns)}, source, created_at, updated_at) "  # noqa: S608
        f"VALUES (?, {', '.join('?' * len(columns))}, 'api', ?, ?) "
        f"ON CONFLICT (name) DO UPDATE SET {updates}, created_at = excluded.created_at, "
        "updated_at = excluded.updated_at, deleted_at = NULL "
        "WHERE teams.deleted_at IS NOT NULL RETURNING name",
        (name, *values, now, now),
    ).fetchone()
    if row is not None:
        bump(tx, now)
    return row is not None


def update_team(tx: Tx, name: str, fields: Mapping[str, Any], now: float) -> bool:
    columns = [f for f in TEAM_FIELDS if f in fields]
    sets = ", ".join(f"{c} = ?" for c in [*columns, "updated_at"])
    values = [_encode(f, fields[f]) for f in columns]
    changed = tx.execute(
        f"UPDATE teams SET {sets} WHERE name = ? AND deleted_at IS NULL",  # noqa: S608
        (*values, now, name),
    ).rowcount
    bump(tx, now)
    return changed > 0


def delete_team(tx: Tx, name: str, now: float) -> str:
    """'deleted', 'missing', or 'has_keys' (a team with a key not revoked stays)."""
    if get_team(tx, name) is None:
        return "missing"
    # One conditional write: a key added to the team meanwhile keeps it.
    deleted = tx.execute(
        "UPDATE teams SET deleted_at = ?, updated_at = ? WHERE name = ? AND deleted_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM client_keys WHERE team = ? AND revoked_at IS NULL)",
        (now, now, name, name),
    ).rowcount
    if not deleted:
        return "has_keys"
    bump(tx, now)
    return "deleted"

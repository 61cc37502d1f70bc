"""Versioned migrations of the records' database: numbered SQL files, applied in order.

`migrations/NNNN_name.sql` holds SQL both engines run; a line that only one engine takes (a
column whose type the two spell differently) ends with `-- sqlite only` or `-- postgresql
only`, and the other engine never sees it. Each applied version is a row of
`schema_migrations`. `upgrade` applies what is pending, all in one transaction taken under a
lock (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE), so replicas starting together
apply each migration once, and a failed one leaves the database as it was. When nothing is
pending it is one read.

A migration is never edited once released: a change is a new file.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from mediagate.stores.sql.db import Database, Engine, Tx

MIGRATIONS = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_ONLY = re.compile(r"\s*--\s*(sqlite|postgresql) only\s*$")
_LOCK_ID = 7_303_117_001  # pg_advisory_xact_lock's key for "mediagate migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(engine: Engine) -> list[Migration]:
    """Every migration, in order, as `engine` runs it."""
    found: list[Migration] = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not NNNN_name.sql")
        version = int(match[1])
        if found and found[-1].version == version:
            raise ValueError(f"two migrations numbered {version:04d}")
        found.append(Migration(version, match[2], _for(engine, path.read_text("utf-8"))))
    return found


def _for(engine: Engine, sql: str) -> str:
    """A migration's SQL without the lines another engine alone takes (their tag dropped)."""
    kept = []
    for line in sql.splitlines():
        only = _ONLY.search(line)
        if only is None:
            kept.append(line)
        elif only[1] == engine:
            kept.append(line[: only.start()])
    return "\n".join(kept)


def statements(sql: str) -> list[str]:
    """A migration's statements: split at a `;` that ends a line, `--` comments dropped."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [part.strip() for part in parts if part.strip()]


_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


def _applied(tx: Tx) -> set[int]:
    return {row[0] for row in tx.execute("SELECT version FROM schema_migrations").fetchall()}


def _current(tx: Tx) -> int:
    """The newest applied version (0 when none is)."""
    value = tx.scalar("SELECT MAX(version) FROM schema_migrations")
    return int(value) if value is not None else 0


def _apply(tx: Tx, wanted: list[Migration]) -> list[str]:
    if tx.engine == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_ID,))
    tx.execute(_TABLE)
    done = _applied(tx)
    applied = []
    for migration in wanted:
        if migration.version in done:
            continue
        for statement in statements(migration.sql):
            tx.execute(statement)
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, time.time()),
        )
        applied.append(f"{migration.version:04d}_{migration.name}")
    return applied


async def upgrade(db: Database) -> list[str]:
    """Apply every pending migration (under the lock); the names applied."""
    wanted = migrations(db.engine)
    # Every version, not only the newest: a migration numbered below one already applied (parts
    # merged out of their numbers' order) is still pending.
    if {m.version for m in wanted} <= await db.run(_applied_or_none):
        return []
    return await db.transaction(lambda tx: _apply(tx, wanted))


def upgrade_blocking(db: Database) -> list[str]:
    """`upgrade` for the CLI, on the calling thread."""
    wanted = migrations(db.engine)
    return db.blocking(lambda tx: _apply(tx, wanted))


def status_blocking(db: Database) -> tuple[list[int], list[Migration]]:
    """The versions applied, and the migrations still pending."""
    wanted = migrations(db.engine)
    applied = sorted(db.blocking(lambda tx: _applied_or_none(tx), atomic=False))
    return applied, [m for m in wanted if m.version not in applied]


def _current_or_none(tx: Tx) -> int | None:
    if tx.engine == "sqlite":
        exists = tx.scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
    else:
        exists = tx.scalar("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'schema_migrations'")
    return _current(tx) if exists else None


def _applied_or_none(tx: Tx) -> set[int]:
    return _applied(tx) if _current_or_none(tx) is not None else set()

"""The records' database on both engines: transactions, rows, migrations, the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mediagate.errors import StoreUnavailable
from mediagate.stores.sql.db import Database, DatabaseConfigError, check_database_url
from mediagate.stores.sql.migrate import migrations, statements, upgrade


def test_database_urls_name_their_engine() -> None:
    assert check_database_url("sqlite:///tmp/x.sqlite3") == "sqlite"
    assert check_database_url("postgresql://u:p@h:5432/d") == "postgresql"
    assert check_database_url("postgres://h/d") == "postgresql"
    with pytest.raises(DatabaseConfigError, match="MEDIAGATE_DATABASE_URL"):
        check_database_url("mysql://h/d")


def test_migrations_are_numbered_once_per_engine() -> None:
    for engine in ("sqlite", "postgresql"):
        found = migrations(engine)  # type: ignore[arg-type]
        versions = [m.version for m in found]
        assert versions == sorted(set(versions)) and versions[0] == 1
    assert statements("-- c\nCREATE TABLE a (x TEXT);\nCREATE TABLE b (y TEXT);\n") == [
        "CREATE TABLE a (x TEXT)",
        "CREATE TABLE b (y TEXT)",
    ]


def test_transactions_rows_and_upgrade_on_each_engine(database_url: str) -> None:
    async def run() -> None:
        db = await Database.open(database_url)
        try:
            applied = await upgrade(db)
            assert applied and applied[0] == "0001_meta"
            assert await upgrade(db) == []  # nothing pending: one read
            await db.transaction(
                lambda tx: tx.execute(
                    "INSERT INTO meta (name, value, updated_at) VALUES (?, ?, ?)",
                    ("greeting", "50% off? yes", 1.5),
                )
            )
            row = await db.run(
                lambda tx: tx.execute(
                    "SELECT name, value FROM meta WHERE name = ?", ("greeting",)
                ).fetchone()
            )
            assert (row[0], row["value"]) == ("greeting", "50% off? yes")

            # A failing transaction leaves nothing behind.
            def fails(tx: object) -> None:
                tx.execute(  # type: ignore[attr-defined]
                    "INSERT INTO meta (name, value, updated_at) VALUES (?, ?, ?)", ("x", "y", 0)
                )
                raise RuntimeError("boom")

            with pytest.raises(RuntimeError):
                await db.transaction(fails)
            count = await db.run(lambda tx: tx.scalar("SELECT COUNT(*) FROM meta"))
            assert count == 1
            # A driver's error is the store's one error, never a traceback of its own.
            with pytest.raises(StoreUnavailable, match="database failed"):
                await db.run(lambda tx: tx.execute("SELECT nope FROM meta"))
        finally:
            await db.close()

    asyncio.run(run())


def test_concurrent_upgrades_apply_each_migration_once(database_url: str) -> None:
    async def one() -> list[str]:
        db = await Database.open(database_url)
        try:
            return await upgrade(db)
        finally:
            await db.close()

    async def run() -> list[list[str]]:
        return list(await asyncio.gather(*(one() for _ in range(4))))

    results = asyncio.run(run())
    everything = [m for applied in results for m in applied]
    assert sorted(everything) == sorted({m for m in everything})  # none applied twice
    assert len(everything) == len(migrations(check_database_url(database_url)))


def test_a_migration_numbered_below_the_newest_applied_is_still_applied(
    database_url: str,
) -> None:
    # A database upgraded before 0003 existed (its part merged after a higher number): the
    # next start applies 0003, though a newer version is on record.
    async def run() -> list[str]:
        db = await Database.open(database_url)
        try:
            await upgrade(db)

            def forget(tx: Any) -> None:
                tx.execute("DELETE FROM schema_migrations WHERE version = 3")
                for table in ("video_jobs", "video_job_counts", "webhook_outbox", "job_leases"):
                    tx.execute(f"DROP TABLE {table}")

            await db.transaction(forget)
            assert max(migrations(db.engine), key=lambda m: m.version).version > 3
            return await upgrade(db)
        finally:
            await db.close()

    assert asyncio.run(run()) == ["0003_video_jobs"]


def test_an_unreachable_postgresql_is_a_clear_error() -> None:
    async def run() -> None:
        await Database.open("postgresql://u:secret@127.0.0.1:1/db")

    with pytest.raises(StoreUnavailable, match="Cannot open the database") as caught:
        asyncio.run(run())
    assert "secret" not in str(caught.value)


def test_db_upgrade_and_status_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mediagate", "db", *args, "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    status = cli("status")
    assert status.returncode == 0 and "pending 0001_meta" in status.stdout
    first = cli("upgrade")
    assert first.returncode == 0 and "applied 0001_meta" in first.stdout
    assert "up to date" in cli("upgrade").stdout
    assert "pending" not in cli("status").stdout
    bad = subprocess.run(
        [sys.executable, "-m", "mediagate", "db", "upgrade", "--url", "mysql://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "MEDIAGATE_DATABASE_URL" in bad.stderr


def test_a_closed_database_answers_with_the_store_error(database_url: str) -> None:
    async def run() -> None:
        db = await Database.open(database_url)
        await db.close()
        await db.close()  # a second close does nothing
        with pytest.raises(StoreUnavailable, match="closed"):
            await db.ping()

    asyncio.run(run())

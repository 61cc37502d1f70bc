"""One database for the gateway's records, on either engine: SQLite (one host) or PostgreSQL
(several replicas), behind one interface.

The work of a transaction is a plain function `work(tx)` that runs in a worker thread of the
database's own pool and issues SQL through `tx.execute`. The same function runs on both
engines: statements are written once, with `?` placeholders and the SQL both engines share
(`INSERT ... ON CONFLICT ... DO UPDATE`, `RETURNING`, `excluded.`), and PostgreSQL's are
rewritten to `%s` here. Rows answer by position and by column name on both.

Why threads and a sync driver underneath (sqlite3, psycopg 3 with psycopg_pool) rather than an
async driver's coroutines: a check-and-change is one transaction written as one function, so
SQLite (whose module has no async API and whose commit is an fsync) and PostgreSQL run the
same code, and no transaction is ever held open across the event loop's other work. psycopg 3
is the maintained PostgreSQL driver with a pool; it is imported only when the URL names
PostgreSQL.

This is the one place a driver's error becomes `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from mediagate.errors import StoreUnavailable

T = TypeVar("T")
Engine = Literal["sqlite", "postgresql"]

__all__ = ["Database", "DatabaseConfigError", "Engine", "Row", "Tx", "check_database_url"]


class DatabaseConfigError(ValueError):
    """A MEDIAGATE_DATABASE_URL no engine can use."""


def check_database_url(url: str) -> Engine:
    """The engine a MEDIAGATE_DATABASE_URL names, or a clear error."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite" and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise DatabaseConfigError(
        "MEDIAGATE_DATABASE_URL must be sqlite:///path/to/mediagate.sqlite3 or "
        f"postgresql://user:password@host:5432/database, got {url.split('://')[0]}://..."
    )


class Row(Protocol):
    def __getitem__(self, index: Any) -> Any: ...
    def keys(self) -> Any: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Tx:
    """One transaction's statements (or, under `Database.run`, autocommitted ones)."""

    def __init__(self, connection: Any, engine: Engine) -> None:
        self._db = connection
        self.engine = engine

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.engine == "postgresql":
            return self._db.execute(_pg(sql), tuple(params))  # type: ignore[no-any-return]
        return self._db.execute(sql, tuple(params))  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.engine == "postgresql":
            with self._db.cursor() as cursor:
                cursor.executemany(_pg(sql), [tuple(r) for r in rows])
            return
        self._db.executemany(sql, [tuple(r) for r in rows])

    def executemany_returning(self, sql: str, rows: Iterable[Sequence[Any]]) -> list[Any]:
        """`sql` (with a RETURNING clause) for each row; the rows every statement returned, in
        order, by position only (e.g. `INSERT ... ON CONFLICT DO NOTHING RETURNING id`: the ids
        inserted). PostgreSQL runs them pipelined, its statement parsed once."""
        if self.engine == "postgresql":
            from psycopg.rows import tuple_row  # (imported with psycopg: cached)

            out: list[Any] = []
            # Tuples: a row factory per statement's result would cost more than the insert.
            with self._db.cursor(row_factory=tuple_row) as cursor:
                cursor.executemany(_pg(sql), [tuple(r) for r in rows], returning=True)
                if cursor.pgresult is None:
                    return out  # no rows given
                while True:  # one result per statement (nextset: psycopg >= 3.1)
                    out += cursor.fetchall()
                    if not cursor.nextset():
                        return out
        return [row for r in rows for row in self._db.execute(sql, tuple(r)).fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]


@functools.lru_cache(maxsize=1024)
def _pg(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled); `?` inside quotes kept."""
    out = []
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
        if char == "%":
            out.append("%%")
        elif char == "?" and not quoted:
            out.append("%s")
        else:
            out.append(char)
    return "".join(out)


class _PgRow(tuple):  # type: ignore[type-arg]
    """A row that answers by position and by column name, as sqlite3.Row does."""

    _names: dict[str, int]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, str):
            return tuple.__getitem__(self, self._names[index])
        return tuple.__getitem__(self, index)

    def keys(self) -> list[str]:
        return list(self._names)


def _pg_rows(cursor: Any) -> Callable[[Sequence[Any]], _PgRow]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    cls = type("Row", (_PgRow,), {"_names": names})
    return lambda values: cls(values)


class Database:
    """The records' database. `transaction(work)` runs `work(tx)` in one transaction
    (serialised against every other writer on SQLite: BEGIN IMMEDIATE; READ COMMITTED on
    PostgreSQL, where a check-and-change is a conditional statement); `run(work)` runs reads
    without one."""

    def __init__(self, engine: Engine, what: str, workers: int) -> None:
        self.engine = engine
        self._what = what
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mediagate-db")
        self._sqlite: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pg: Any = None  # psycopg_pool.ConnectionPool
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10, what: str = "database") -> Database:
        engine = check_database_url(url)
        db = cls(engine, what, 1 if engine == "sqlite" else pool_size)
        try:
            if engine == "sqlite":
                path = url.removeprefix("sqlite:///")
                db._sqlite = await db._in_pool(lambda: _connect_sqlite(path))
            else:
                await db._in_pool(lambda: db._open_pg(url, pool_size))
        except db._errors as exc:
            db._pool.shutdown(wait=False)
            raise StoreUnavailable(f"Cannot open the {what}: {_brief(exc)}") from None
        return db

    def _open_pg(self, url: str, pool_size: int) -> None:
        import psycopg
        import psycopg_pool

        self._errors = (psycopg.Error, psycopg_pool.PoolTimeout)
        conninfo = url.replace("postgres://", "postgresql://", 1)
        pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            # How long a call waits for a connection: past it, a StoreUnavailable (a 503 the
            # SDKs retry) rather than a request held while the database is gone.
            timeout=5,
            kwargs={"autocommit": True, "row_factory": _pg_rows, "connect_timeout": 5},
        )
        try:
            pool.open(wait=True, timeout=5)  # a database that does not answer: fail the start
        except BaseException:
            pool.close()
            raise
        self._pg = pool

    async def _in_pool(self, call: Callable[[], T]) -> T:
        if self._closed:
            # A late caller (a flush at the very end of a shutdown) gets the store's one error,
            # not the executor's RuntimeError.
            raise StoreUnavailable(f"The {self._what} is closed.")
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _with_connection(self, work: Callable[[Tx], T], atomic: bool) -> T:
        if self._sqlite is not None:
            with self._lock:
                db = self._sqlite
                if not atomic:
                    return work(Tx(db, "sqlite"))
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(Tx(db, "sqlite"))
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result
        with self._pg.connection() as conn:
            if not atomic:
                return work(Tx(conn, "postgresql"))
            with conn.transaction():
                return work(Tx(conn, "postgresql"))

    async def transaction(self, work: Callable[[Tx], T]) -> T:
        return await self._call(work, atomic=True)

    async def run(self, work: Callable[[Tx], T]) -> T:
        return await self._call(work, atomic=False)

    async def _call(self, work: Callable[[Tx], T], atomic: bool) -> T:
        try:
            return await self._in_pool(lambda: self._with_connection(work, atomic))
        except self._errors as exc:
            raise StoreUnavailable(f"The {self._what} failed: {_brief(exc)}") from None

    def blocking(self, work: Callable[[Tx], T], *, atomic: bool = True) -> T:
        """`work` on the calling thread: for the CLI (`mediagate db ...`), never the loop."""
        try:
            return self._with_connection(work, atomic)
        except self._errors as exc:
            raise StoreUnavailable(f"The {self._what} failed: {_brief(exc)}") from None

    async def ping(self) -> None:
        await self.run(lambda tx: tx.scalar("SELECT 1"))

    async def close(self) -> None:
        """Close the connections (once; a second call does nothing)."""
        if self._closed:
            return

        def shut() -> None:
            with self._lock:
                if self._sqlite is not None:
                    self._sqlite.close()
            if self._pg is not None:
                self._pg.close()

        try:
            await self._in_pool(shut)
        finally:
            self._closed = True
            self._pool.shutdown(wait=False)


def _connect_sqlite(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    db.row_factory = sqlite3.Row
    # Switching a new file to WAL needs it alone, and SQLite answers "database is locked" at
    # once (no busy wait) when several processes open a fresh file together: tried again.
    for attempt in range(100):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                db.close()
                raise
            time.sleep(0.02)
    db.execute("PRAGMA synchronous=FULL")
    return db


_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _brief(exc: BaseException) -> str:
    """A driver's message, one line, bounded, with any password in a URL masked."""
    text = " ".join(str(exc).split())[:300]
    return _PASSWORD.sub(r"\1***@", text)

"""`mediagate serve`, `mediagate simulate`, `mediagate catalog check`, and
`mediagate keys list | create | revoke | rotate | digest`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import resource
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from mediagate import allocator
from mediagate.observability.logs import configure_logging
from mediagate.servethread import header_deadline_protocol
from mediagate.settings import Settings, fd_ceiling

log = logging.getLogger("mediagate")


def raise_file_limit() -> tuple[int, int]:
    """The soft RLIMIT_NOFILE raised to the hard limit (each call in flight holds about two
    file descriptors, and a soft limit of 1,024 is common): (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _serve(args: argparse.Namespace) -> int:
    # No garbage collection while the process builds what it keeps for its lifetime (the
    # modules, the app, the gateway): its collections walked that growing heap ~200 times,
    # ~70-110 ms of a cold start's CPU on a 2-core machine. It is back, the heap frozen, a
    # moment after the gateway serves (_after_start).
    gc.disable()
    settings = Settings()
    # JSON lines for the gateway's loggers and uvicorn's, never showing a configured key.
    configure_logging(settings.log_level, _secrets(settings))
    before, ceiling = raise_file_limit()
    log.info(
        "file descriptors: up to %d (soft limit raised from %d); up to %d calls in flight "
        "(MEDIAGATE_MAX_INFLIGHT%s)",
        fd_ceiling(),
        before,
        settings.inflight_limit(),
        "" if settings.max_inflight is not None else ", derived from the file descriptors",
        extra={
            "fields": {
                "nofile_soft_before": before,
                "nofile_soft": ceiling,
                "max_inflight": settings.inflight_limit(),
            }
        },
    )
    keep = settings.allocator_keep_bytes()
    if allocator.tune(keep):
        log.info(
            "allocator: buffers up to %d MiB from the heap, kept between calls "
            "(MEDIAGATE_ALLOCATOR_KEEP_MB)",
            keep >> 20,
        )
    has_keys = any(settings.all_upstream_keys())
    if not settings.upstream_url and not has_keys and not settings.extra_group_keys:
        # A newcomer with nothing configured gets a working gateway, offline.
        settings = settings.model_copy(update={"simulator": True})
    from mediagate.app import create_app
    from mediagate.gateway import ConfigError, check_config

    try:
        check_config(settings)
    except ConfigError as exc:
        print(f"mediagate: {exc}", file=sys.stderr)
        return 2
    if settings.simulator:
        print(
            "mediagate: no upstream configured; serving the built-in simulated upstream "
            "(offline, fake images). Set MEDIAGATE_UPSTREAM_URL and MEDIAGATE_KEY_* for the "
            "real one.",
            file=sys.stderr,
        )
    # On SIGTERM uvicorn stops accepting, lets requests in flight finish (for at most
    # MEDIAGATE_SHUTDOWN_TIMEOUT_S), then raises the signal again for whatever handler was
    # there before; with the default one the process would die by the signal (status 143)
    # instead of exiting 0 after a clean shutdown.
    signal.signal(signal.SIGTERM, _after_shutdown)
    uvicorn.run(
        create_app(settings, on_started=_after_start),
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        # None: keep the logging configured above (uvicorn's default would put its own text
        # handlers on its loggers).
        log_config=None,
        access_log=False,
        # X-Forwarded-* are read where they matter (http/deps.py:public_base, with its own
        # checks); uvicorn's rewrite of the client address and scheme is used by nothing here.
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        # A slowloris client cannot hold a connection: its headers are due within this.
        http=header_deadline_protocol(settings.header_timeout_s),
    )
    return 0


# The heap is frozen this long after the gateway opens: off the path to its first answer.
_FREEZE_AFTER_S = 1.0


def _after_start() -> None:
    """Once the gateway is open (in its loop): `_freeze_heap` a moment later, so its full
    collection (~50 ms) is not paid before the first answer."""
    asyncio.get_running_loop().call_later(_FREEZE_AFTER_S, _freeze_heap)


# Container objects allocated (net of those freed) between two young collections: 700 by
# default. A call in flight holds some hundreds of them for its whole wait, so a burst of calls
# arriving grows the heap by that much per call, and at 700 a young collection ran every few
# calls, every tenth one walking all the calls that arrived since (the middle generation).
# Measured, 400 calls parked on a 0.5 s upstream in one process: 178 young and 16 middle
# collections, 2.3 ms CPU per call; at 10,000, 12 and 1, 1.8 ms per call. What waits longer
# to be collected is only garbage in reference cycles (nearly all is freed by its count): at
# most this many objects, a few megabytes.
_GC_YOUNG = 10_000


def _freeze_heap() -> None:
    """What the process built to start (the catalog, the app, the libraries' modules) lives as
    long as it does: moved out of the garbage collector's sight (gc.freeze), so a collection
    does not walk it again and again. Measured on a pass-through generation at concurrency 16:
    p99 latency 62 -> 18 ms (the pauses of full collections), CPU per request -10%. The price:
    a startup object that becomes garbage later is never freed (a one-off, not a leak). Then
    young collections spaced for calls in flight (`_GC_YOUNG`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])
    gc.enable()  # off while the process started (_serve)


def _secrets(settings: Settings) -> list[str]:
    """What no log line may show: the upstream keys, the client keys, the admin key."""
    found = settings.all_upstream_keys()
    with contextlib.suppress(ValueError):  # a malformed MEDIAGATE_API_KEYS: check_config says so
        found += list(settings.client_keys().values())
    if settings.admin_key is not None:
        found.append(settings.admin_key.get_secret_value())
    if settings.metrics_token is not None:
        found.append(settings.metrics_token.get_secret_value())
    return found


def _after_shutdown(signum: int, frame: FrameType | None) -> None:
    log.info("shut down on SIGTERM")


def _simulate(args: argparse.Namespace) -> int:
    from .simulator import DEFAULT_SIM_KEYS, SimConfig, SimState, create_simulator_app

    configure_logging("warning")
    print(f"simulated upstream on http://{args.host}:{args.port}/v1", file=sys.stderr)
    for key, group in DEFAULT_SIM_KEYS.items():
        print(f"  token group {group!r}: key {key}", file=sys.stderr)
    state = SimState()
    for pair in args.unlist:
        group, _, model = pair.partition(":")
        state.unlisted.add((group, model))
        print(f"  GET /v1/models leaves out {model!r} for group {group!r}", file=sys.stderr)
    config = SimConfig(keys=dict(DEFAULT_SIM_KEYS), latency_s=args.latency)
    app = create_simulator_app(config, state)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", log_config=None)
    return 0


# --- catalog ----------------------------------------------------------------------------------


def _catalog_check(args: argparse.Namespace) -> int:
    """The catalog (bundled, merged with the override) validated offline; then, with upstream
    keys set, each group's GET /v1/models against it. Exit 0: all listed; 1: a route retired
    upstream; 2: an invalid catalog, or a group that could not be listed."""
    from mediagate.catalog import CatalogError, load_catalog

    settings = Settings()
    if args.config is not None:
        settings = settings.model_copy(update={"config": args.config})
    configure_logging("warning", _secrets(settings))
    source = f"catalog.yaml + {settings.config}" if settings.config else "catalog.yaml"
    try:
        full = load_catalog(settings.config)
    except CatalogError as exc:
        print(f"mediagate: {exc}", file=sys.stderr)
        return 2
    print(
        f"{source}: valid: {len(full.models)} models, {len(full.routes)} routes, "
        f"{len(full.groups())} token groups"
    )
    keys, _ = full.upstream_keys(settings.group_keys)
    with_keys = sorted(group for group, found in keys.items() if found)
    if not with_keys or not settings.upstream_url:
        print(
            "no upstream to ask (MEDIAGATE_UPSTREAM_URL and a MEDIAGATE_KEY_<GROUP>): "
            "checked offline only"
        )
        return 0
    groups = ", ".join(with_keys)
    print(f"asking {settings.upstream_url}/models for {len(with_keys)} groups: {groups}")
    try:
        drift = asyncio.run(_ask_upstream(settings))
    except CatalogError as exc:
        print(f"mediagate: {exc}", file=sys.stderr)
        return 2
    from mediagate.upstream.listing import report

    for line in report(drift):
        print(line)
    if drift.retired:
        return 1
    return 2 if drift.failed else 0


async def _ask_upstream(settings: Settings) -> Any:
    from mediagate.gateway import open_upstream
    from mediagate.upstream.listing import check

    async with open_upstream(settings) as (upstream, catalog):
        return await check(upstream, catalog)


def _add_catalog_commands(commands: Any) -> None:
    catalog = commands.add_parser(
        "catalog",
        help="check the model catalog",
        description="The model catalog: the bundled catalog.yaml merged with MEDIAGATE_CONFIG.",
    ).add_subparsers(dest="catalog_command", required=True)
    check = catalog.add_parser(
        "check",
        help="validate the catalog; with upstream keys, compare it with the upstream's lists",
        description="Validates the catalog offline; with MEDIAGATE_UPSTREAM_URL and upstream "
        "keys set, asks GET /v1/models once per token group and prints each route its group "
        "no longer lists (exit 1) and each image or video model the catalog does not know.",
    )
    check.add_argument(
        "--config", type=Path, help="the catalog override (default: MEDIAGATE_CONFIG)"
    )
    check.set_defaults(run=_catalog_check)


# --- db ---------------------------------------------------------------------------------------


def _db(args: argparse.Namespace) -> int:
    """`mediagate db upgrade | status`: the records' migrations, on MEDIAGATE_DATABASE_URL (or
    --url). Exit 0; 2 when the database cannot be reached or its URL is wrong."""
    from mediagate.errors import StoreUnavailable
    from mediagate.stores.sql.db import Database, DatabaseConfigError
    from mediagate.stores.sql.migrate import status_blocking, upgrade_blocking

    url = args.url or Settings().records_url()
    try:
        db = asyncio.run(Database.open(url, pool_size=1))
    except (DatabaseConfigError, StoreUnavailable) as exc:
        print(f"mediagate: {exc}", file=sys.stderr)
        return 2
    try:
        if args.db_command == "upgrade":
            applied = upgrade_blocking(db)
            print(
                f"{db.engine}: applied {', '.join(applied)}"
                if applied
                else f"{db.engine}: up to date"
            )
        else:
            done, pending = status_blocking(db)
            print(f"{db.engine}: applied {len(done)} migrations, newest {max(done, default=0):04d}")
            for migration in pending:
                print(f"pending {migration.version:04d}_{migration.name}")
    except StoreUnavailable as exc:
        print(f"mediagate: {exc}", file=sys.stderr)
        return 2
    finally:
        asyncio.run(db.close())
    return 0


def _db_import(args: argparse.Namespace) -> int:
    """`mediagate db import URL`: what an old MEDIAGATE_STORE_URL store holds, into the records'
    database (migrated first). Exit 0; 2 when either store cannot be reached or a URL is wrong."""
    from mediagate.errors import StoreUnavailable
    from mediagate.stores.importing import import_store
    from mediagate.stores.sql.db import Database, DatabaseConfigError
    from mediagate.stores.sql.migrate import upgrade

    settings = Settings()
    target = args.url or settings.records_url()
    prefix = args.prefix or settings.store_prefix
    if _same_file(args.source, target):
        print(
            "mediagate: import into a new database, not the old store's own file", file=sys.stderr
        )
        return 2

    async def run() -> list[str]:
        database = await Database.open(target, pool_size=2)
        try:
            await upgrade(database)
            report = await import_store(args.source, prefix, database)
            return [
                f"{database.engine}: imported from {_source_name(args.source)}",
                *report.lines(),
            ]
        finally:
            await database.close()

    try:
        lines = asyncio.run(run())
    except (DatabaseConfigError, StoreUnavailable, ValueError) as exc:
        print(f"mediagate: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _same_file(source: str, target: str) -> bool:
    paths = [Path(url.removeprefix("sqlite:///")) for url in (source, target)]
    sqlite = all(url.startswith("sqlite:///") for url in (source, target))
    return sqlite and paths[0].resolve() == paths[1].resolve()


def _source_name(url: str) -> str:
    """A store URL without its password, to print."""
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def _add_db_commands(commands: Any) -> None:
    db = commands.add_parser(
        "db",
        help="the records' database: migrations, and importing an old store",
        description="The records' database (MEDIAGATE_DATABASE_URL: SQLite or PostgreSQL).",
    ).add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("upgrade", "apply the pending migrations (the gateway also does at start)"),
        ("status", "the migrations applied and pending"),
    ):
        command = db.add_parser(name, help=text)
        command.add_argument("--url", help="the database (default: MEDIAGATE_DATABASE_URL)")
        command.set_defaults(run=_db)
    moving = db.add_parser(
        "import",
        help="import an old MEDIAGATE_STORE_URL store's jobs and usage (run it again: no twice)",
    )
    moving.add_argument(
        "source", help="the old store: redis://host:port/db or sqlite:///jobs.sqlite3"
    )
    moving.add_argument("--prefix", help="its Redis key prefix (default: MEDIAGATE_STORE_PREFIX)")
    moving.add_argument("--url", help="the database (default: MEDIAGATE_DATABASE_URL)")
    moving.set_defaults(run=_db_import)


# --- keys -------------------------------------------------------------------------------------
#
# Where `mediagate keys` acts: the records' database (MEDIAGATE_DATABASE_URL, as the admin API
# does), unless --file PATH names a keys file, or MEDIAGATE_KEYS_FILE is set (then that file,
# as before the database held keys; --database uses the database anyway).


def _keys_file(args: argparse.Namespace, settings: Settings) -> Path | None:
    path: Path | None = args.file or settings.keys_file
    return path


def _in_database(args: argparse.Namespace, settings: Settings) -> bool:
    return bool(getattr(args, "database", False)) or _keys_file(args, settings) is None


class _Refused(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    limits = {
        "team": args.team,
        "models": args.models.split(",") if args.models else None,
        "requests_per_minute": args.rpm,
        "images_per_minute": args.ipm,
        "reads_per_minute": args.reads,
        "concurrent_requests": args.concurrency,
        "budget_usd_per_day": args.budget_day,
        "budget_usd_per_month": args.budget_month,
        "expires_at": _when(args.expires) if args.expires else None,
    }
    return {k: v for k, v in limits.items() if v is not None}


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float:
    """`90`, `90s`, `15m`, `12h` or `7d` as seconds."""
    unit = text[-1:] if text[-1:] in _UNITS else "s"
    number = text[:-1] if text[-1:] in _UNITS else text
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise _Refused(f"not a duration: {text!r} (say 90, 15m, 12h or 7d)", status=2) from None
    if value < 0:
        raise _Refused(f"not a duration: {text!r}", status=2)
    return value


def _when(text: str) -> datetime:
    """--expires: an ISO 8601 date or time (UTC unless it says), or a duration from now."""
    if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) + timedelta(seconds=_seconds(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _Refused(
            f"--expires {text!r}: give an ISO 8601 date or time, or a duration such as 30d",
            status=2,
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def _on_records(settings: Settings, work: Any) -> Any:
    """`work(registry)` on the records' database (migrated first, as the gateway does)."""
    from mediagate.accounting.clients import KeyRegistry
    from mediagate.stores.sql.db import Database
    from mediagate.stores.sql.migrate import upgrade

    db = await Database.open(settings.records_url(), pool_size=1)
    try:
        await upgrade(db)
        registry = KeyRegistry({}, None)
        await registry.open(db, serve=False)
        return await work(registry)
    finally:
        await db.close()


def _validated(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields checked as a key's policy is (the admin API's checks), as the records'
    columns (an expiry as Unix seconds)."""
    from pydantic import ValidationError

    from mediagate.accounting.clients import KeyPolicy

    try:
        KeyPolicy(name=name, sha256="0" * 64, **fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _Refused(f"invalid key entry: {problems}") from None
    if "expires_at" in fields:
        fields = {**fields, "expires_at": fields["expires_at"].timestamp()}
    return fields


def _iso(value: float | None) -> str | None:
    return None if value is None else f"{datetime.fromtimestamp(value, UTC):%Y-%m-%dT%H:%M:%SZ}"


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from mediagate.accounting.clients import KeysFile, create_key

    if args.print:
        # The entry printed for the operator to add to a keys file.
        key, entry = create_key(args.name, **_limits(args))
        print(f"# The key for '{args.name}' (shown once; give it to the team, keep no copy):")
        print(f"# {key}")
        print("# Add this entry under `keys:` in MEDIAGATE_KEYS_FILE (it holds only the SHA-256):")
        print(entry, end="")
        return 0
    if _in_database(args, settings):
        fields = _validated(args.name, _limits(args))

        async def create(registry: Any) -> str:
            team = fields.get("team")
            if team is not None and await registry.team_record(team) is None:
                await registry.create_team(team, {})
                print(f"mediagate: made the team '{team}' (no limits of its own)", file=sys.stderr)
            secret, _ = await registry.create_key(args.name, fields)
            return str(secret)

        key = asyncio.run(_on_records(settings, create))
        _show_once(args.name, key, "made in the database")
        return 0
    path = _keys_file(args, settings)
    assert path is not None
    key = KeysFile(path).create(args.name, **_limits(args))
    _show_once(args.name, key, f"added to {path}")
    return 0


def _keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from mediagate.accounting.clients import KeysFile

    grace_s = _seconds(args.grace) if args.grace else 0.0
    if _in_database(args, settings):

        async def rotate(registry: Any) -> tuple[str, dict[str, Any]]:
            result: tuple[str, dict[str, Any]] = await registry.rotate_key(args.name, grace_s)
            return result

        key, row = asyncio.run(_on_records(settings, rotate))
        until = row.get("previous_until")
        after = f"the old key works until {_iso(until)}" if until else "the old key is refused"
        _show_once(args.name, key, f"rotated; {after}")
        return 0
    if grace_s:
        raise _Refused("--grace needs the database: a keys file keeps one secret per key", 2)
    path = _keys_file(args, settings)
    assert path is not None
    _not_from_environment(args.name, settings)
    key = KeysFile(path).rotate(args.name)
    _show_once(args.name, key, f"rotated in {path}; the old key is refused from now on")
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from mediagate.accounting.clients import KeysFile

    if _in_database(args, settings):

        async def revoke(registry: Any) -> None:
            await registry.revoke_key(args.name)

        asyncio.run(_on_records(settings, revoke))
        print(f"mediagate: revoked '{args.name}' in the database", file=sys.stderr)
        return 0
    path = _keys_file(args, settings)
    assert path is not None
    _not_from_environment(args.name, settings)
    KeysFile(path).revoke(args.name)
    print(f"mediagate: revoked '{args.name}' in {path}", file=sys.stderr)
    return 0


def _keys_digest(args: argparse.Namespace, settings: Settings) -> int:
    """The SHA-256 of a key read from stdin (for MEDIAGATE_ADMIN_KEYS `name:role:sha256`)."""
    from mediagate.accounting.clients import digest

    key = sys.stdin.readline().strip()
    if not key:
        raise _Refused("no key on stdin (say: mediagate keys digest < file, or type it)")
    print(digest(key))
    return 0


def _not_from_environment(name: str, settings: Settings) -> None:
    if name in settings.client_keys():
        raise _Refused(
            f"'{name}' is set in MEDIAGATE_API_KEYS, not in the keys file: change it there"
        )


def _show_once(name: str, key: str, what: str) -> None:
    """The new key alone on stdout (for a script to capture), the rest on stderr."""
    print(f"mediagate: key '{name}' {what}.", file=sys.stderr)
    print(
        "mediagate: the key is shown once, below; give it to its team and keep no copy.",
        file=sys.stderr,
    )
    print(key)


def _key_rows(args: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    """What `keys list` shows: every key not revoked, never a secret or a digest."""
    from mediagate.accounting.clients import KeysFile

    if _in_database(args, settings):

        async def listing(registry: Any) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            after = None
            while True:
                page = await registry.keys(after=after, limit=500)
                rows.extend(page)
                if len(page) < 500:
                    return rows
                after = page[-1]["name"]

        found = asyncio.run(_on_records(settings, listing))
        times = ("expires_at", "created_at", "last_used_at", "revoked_at", "previous_until")
        return [
            {k: _iso(v) if k in times else v for k, v in row.items()}
            for row in found
            if row["revoked_at"] is None
        ]
    rows: list[dict[str, Any]] = [
        {"name": name, "source": "MEDIAGATE_API_KEYS", "models": ["*"]}
        for name in settings.client_keys()
    ]
    path = _keys_file(args, settings)
    if path is not None and not path.exists():
        print(f"mediagate: no keys file at {path} yet (`keys create` makes it)", file=sys.stderr)
    elif path is not None:
        for policy in KeysFile(path).policies():
            # Everything but the digest: a name, its scopes, limits and date.
            fields = policy.model_dump(mode="json", exclude_none=True, exclude={"sha256"})
            rows.append({"name": policy.name, "source": str(path), **fields})
    return rows


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = _key_rows(args, settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("NAME", "TEAM", "MODELS", "LIMITS", "CREATED", "SOURCE")]
    for row in rows:
        limits = " ".join(
            f"{label}={row[field]}"
            for field, label in (
                ("requests_per_minute", "rpm"),
                ("images_per_minute", "ipm"),
                ("reads_per_minute", "reads/min"),
                ("concurrent_requests", "concurrent"),
                ("budget_usd_per_day", "usd/day"),
                ("budget_usd_per_month", "usd/month"),
                ("expires_at", "expires"),
            )
            if row.get(field) is not None
        )
        created = str(row.get("created") or row.get("created_at") or "-")[:10]
        table.append(
            (
                row["name"],
                row.get("team") or "-",
                ",".join(row["models"]),
                limits or "-",
                created,
                row["source"],
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def _run_keys(command: Any) -> Any:
    """A keys subcommand with its errors said plainly (exit 1, or 2 for a missing setting or
    a database that cannot be reached)."""

    def run(args: argparse.Namespace) -> int:
        from mediagate.accounting.clients import KeysFileError
        from mediagate.errors import GatewayError, StoreUnavailable

        try:
            result: int = command(args, Settings())
            return result
        except _Refused as exc:
            print(f"mediagate: {exc}", file=sys.stderr)
            return exc.status
        except StoreUnavailable as exc:
            print(f"mediagate: {exc.message}", file=sys.stderr)
            return 2
        except GatewayError as exc:
            print(f"mediagate: {exc.message}", file=sys.stderr)
            return 1
        except (KeysFileError, ValueError, OSError) as exc:
            print(f"mediagate: {exc}", file=sys.stderr)
            return 1

    return run


def _add_keys_commands(commands: Any) -> None:
    keys = commands.add_parser(
        "keys",
        help="manage client keys",
        description="Client keys in the records' database (MEDIAGATE_DATABASE_URL), or in a "
        "keys file (--file, or MEDIAGATE_KEYS_FILE when set). A change is in force on every "
        "running gateway within seconds. A new key is printed once; only its SHA-256 is kept.",
    ).add_subparsers(dest="keys_command", required=True)

    def where(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--file", type=Path, help="a keys file to edit (default: MEDIAGATE_KEYS_FILE)"
        )
        parser.add_argument(
            "--database",
            action="store_true",
            help="the database (MEDIAGATE_DATABASE_URL) even when MEDIAGATE_KEYS_FILE is set",
        )
        return parser

    listing = where(keys.add_parser("list", help="names, scopes, limits, dates; no secret"))
    listing.add_argument("--json", action="store_true", help="as JSON")
    listing.set_defaults(run=_run_keys(_keys_list))

    create = where(keys.add_parser("create", help="make a new client key"))
    create.add_argument("name", help="the team or application the key is for")
    create.add_argument("--team", help="the team it belongs to (its budgets bound the team's keys)")
    create.add_argument("--models", help="comma-separated model names or globs (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--ipm", type=int, help="images per minute")
    create.add_argument("--reads", type=int, help="reads (video list, retrieve) per minute")
    create.add_argument("--concurrency", type=int, help="requests running at once")
    create.add_argument("--budget-day", type=float, help="USD per day (UTC)")
    create.add_argument("--budget-month", type=float, help="USD per month (UTC)")
    create.add_argument(
        "--expires", help="when it stops working: an ISO 8601 date or time (UTC), or 30d, 12h"
    )
    create.add_argument(
        "--print",
        action="store_true",
        help="print the key and a keys-file entry for it instead of keeping it anywhere",
    )
    create.set_defaults(run=_run_keys(_keys_create))

    revoke = where(keys.add_parser("revoke", help="revoke a key: it is refused from then on"))
    revoke.add_argument("name")
    revoke.set_defaults(run=_run_keys(_keys_revoke))

    rotate = where(keys.add_parser("rotate", help="a new secret for a key, same scopes and limits"))
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace",
        help="how long the old secret keeps working beside the new one (90, 15m, 12h, 7d; "
        "default 0: refused at once; the database only)",
    )
    rotate.set_defaults(run=_run_keys(_keys_rotate))

    digest = keys.add_parser(
        "digest", help="the SHA-256 of a key read from stdin (for MEDIAGATE_ADMIN_KEYS)"
    )
    digest.set_defaults(run=_run_keys(_keys_digest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediagate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=_serve)
    simulate = commands.add_parser("simulate", help="run the simulated upstream alone")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=9000)
    simulate.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    simulate.add_argument(
        "--unlist",
        action="append",
        default=[],
        metavar="GROUP:MODEL",
        help="leave MODEL out of GROUP's GET /v1/models (a route retired upstream); repeatable",
    )
    simulate.set_defaults(run=_simulate)
    _add_catalog_commands(commands)
    _add_db_commands(commands)
    _add_keys_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

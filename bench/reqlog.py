"""`python -m bench reqlog`: the CPU the request log adds per request (issue 25: at most
0.05 ms), two ways.

1. **A/B through real processes.** Two gateways (`python -m mediagate serve`, the bench's
   settings) on one core, one with `MEDIAGATE_REQUEST_LOG=true` (the default), one with
   `false`, the same workload (the pass-through image generation of `make bench`, every
   request a row), in alternating rounds (the order rotating); each gateway's CPU read from
   /proc around its own rounds. The figure: the log-on side's CPU per request minus the
   log-off side's, round by round, the median (and the range: the machine is shared, and a
   pass-through costs ~1 ms of CPU, so this difference is within the noise of one round).
2. **In process, exactly.** The log's own work per request, measured with the process' CPU
   clock over many rows: `RequestLog.record` (the request path: a tuple appended) and the
   writer (encoding and a batch's transaction) against a SQLite database in a temporary
   directory. The sum is what a request costs the process, wherever it runs.

Environment: `BENCH_QUICK=1` (fewer, shorter rounds), `BENCH_ROUNDS`, `BENCH_REQLOG_OUT`
(default bench/reqlog-results.json), `BENCH_REQLOG_CONCURRENCY` (default 16),
`BENCH_REQLOG_POSTGRES` (a PostgreSQL database URL whose request log may be emptied: the
in-process figure on PostgreSQL too).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import modes
from .procs import serve_gateway
from .runner import CLIENT_KEY, IMAGE_MODEL, _http, gateway_env, image_body, machine


@dataclass(frozen=True)
class Config:
    rounds: int = 7
    round_s: float = 1.5
    warmup_s: float = 0.5
    concurrency: int = 16
    rows: int = 20000  # the in-process measurement's rows
    postgres_url: str | None = None  # BENCH_REQLOG_POSTGRES: measure the writer there too
    pin: bool = True


FULL = Config()
QUICK_REQLOG = Config(rounds=4, round_s=1.0, warmup_s=0.3, rows=10000)


def _ab(config: Config, log: Callable[[str], None]) -> dict[str, Any]:
    with modes.stack(image_kb=64, pin=config.pin) as stack:
        sides: list[modes.Side] = []
        with contextlib.ExitStack() as running:
            for label, on in (("log on", "true"), ("log off", "false")):
                name = label.replace(" ", "-")
                env = gateway_env(stack, name, MEDIAGATE_REQUEST_LOG=on)
                proc, url = running.enter_context(
                    serve_gateway(name, stack.work, env, stack.gateway_cpu)
                )
                body = image_body(IMAGE_MODEL)
                scenario = _http("POST", f"{url}/v1/images/generations", CLIENT_KEY, body)
                sides.append(modes.Side(label, scenario, proc))
            modes.alternate(
                stack,
                sides,
                config.concurrency,
                config.rounds,
                round_s=config.round_s,
                warmup_s=config.warmup_s,
                log=log,
            )
        # Stopped (SIGTERM: a graceful stop writes what is queued): the rows each side wrote.
        logged = {
            side.label: _rows(stack.work / f"{side.label.replace(' ', '-')}-data") for side in sides
        }
        on_side, off_side = sides
        per_request = [
            (a["gateway_cpu_s"] / a["requests"] - b["gateway_cpu_s"] / b["requests"]) * 1000
            for a, b in zip(on_side.rounds, off_side.rounds, strict=True)
            if a["requests"] and b["requests"]
        ]
        return {
            "sides": [
                modes.summarise(side) | {"rows_logged": logged[side.label]} for side in sides
            ],
            "added_cpu_ms_per_request": modes.spread(list(per_request)),
        }


def _rows(data_dir: Path) -> int:
    """The request log's rows in a stopped gateway's SQLite database."""
    with contextlib.closing(sqlite3.connect(data_dir / "mediagate.sqlite3")) as db:
        return int(db.execute("SELECT COUNT(*) FROM request_log").fetchone()[0])


def _in_process(rows: int, url: str | None = None) -> dict[str, Any]:
    """record() and the writer's work per row, on the process' CPU clock, against `url` (a
    PostgreSQL database, emptied of the log first) or a fresh SQLite file."""
    from mediagate.accounting.requestlog import RequestLog
    from mediagate.catalog import load_catalog
    from mediagate.context import RequestContext
    from mediagate.observability.metrics import Metrics
    from mediagate.stores.sql.db import Database
    from mediagate.stores.sql.migrate import upgrade

    route = next(r for r in load_catalog().routes.values() if r.kind == "image")

    def context(i: int) -> RequestContext:
        ctx = RequestContext(request_id=f"req_bench_{i}", endpoint="images.generations")
        ctx.key_name, ctx.model, ctx.route, ctx.cost, ctx.images = "bench", "m", route, 0.04, 1
        ctx.tier, ctx.quality, ctx.n, ctx.upstream_seconds = "1024x1024", "low", 1, 0.2
        ctx.fallbacks = [f"{route.id}=upstream_error"] if i % 10 == 0 else []
        return ctx

    async def measure(path: Path) -> dict[str, Any]:
        database = await Database.open(url or f"sqlite:///{path / 'records.sqlite3'}")
        await upgrade(database)
        await database.transaction(lambda tx: tx.execute("DELETE FROM request_log"))
        log = RequestLog(Metrics(), capacity=rows + 1)
        log.attach(database)
        contexts = [context(i) for i in range(rows)]
        started = time.process_time()
        for ctx in contexts:
            log.record(ctx, 200, 0.25, "POST")
        record_s = time.process_time() - started
        started = time.process_time()
        written = await log.flush()
        flush_s = time.process_time() - started
        await database.close()
        assert written == rows, (written, rows)
        return {
            "engine": database.engine,
            "rows": rows,
            "record_us_per_request": record_s / rows * 1e6,
            "writer_us_per_request": flush_s / rows * 1e6,
            "total_ms_per_request": (record_s + flush_s) / rows * 1000,
        }

    with tempfile.TemporaryDirectory(prefix="mediagate-bench-reqlog-") as tmp:
        return asyncio.run(measure(Path(tmp)))


def run(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"config": asdict(config), "machine": machine()}
    results["in_process"] = [_in_process(config.rows)]
    if config.postgres_url:
        results["in_process"].append(_in_process(config.rows, config.postgres_url))
    for inside in results["in_process"]:
        log(
            f"  in process: record {inside['record_us_per_request']:.1f} µs + writer "
            f"{inside['writer_us_per_request']:.1f} µs = {inside['total_ms_per_request']:.4f} ms "
            f"CPU per request ({inside['rows']} rows, {inside['engine']})"
        )
    results["ab"] = ab = _ab(config, log)
    added = ab["added_cpu_ms_per_request"]
    log(f"  A/B: added {modes.fmt(added, 3, sign=True)} ms CPU per request (median (range))")
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def render(results: dict[str, Any]) -> str:
    ab = results["ab"]
    lines = [
        "The request log's CPU per request (target <= 0.05 ms):",
        "",
        "| measure | CPU per request |",
        "|---|---:|",
    ]
    for inside in results["in_process"]:
        engine = inside["engine"]
        lines += [
            f"| in process: `record` (request path) | {inside['record_us_per_request']:.1f} µs |",
            f"| in process: the writer (encode + batch, {engine}) | "
            f"{inside['writer_us_per_request']:.1f} µs |",
            f"| in process: total, {engine} | {inside['total_ms_per_request']:.4f} ms |",
        ]
    lines += [
        f"| A/B, log on minus off, median (range) of {results['config']['rounds']} rounds | "
        f"{modes.fmt(ab['added_cpu_ms_per_request'], 3, sign=True)} ms |",
        "",
        "| side | requests | rows logged | CPU ms/request | p50 ms | req/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for side in ab["sides"]:
        cpu = side["cpu_ms_per_request"]
        lines.append(
            f"| {side['side']} | {side['requests']} | {side['rows_logged']} | {cpu:.3f} | "
            f"{modes.fmt(side['p50_ms'], 2)} | {modes.fmt(side['rps'], 0)} |"
        )
    return "\n".join(lines)


def main() -> int:

    config = modes.configured(
        QUICK_REQLOG,
        FULL,
        rounds=("BENCH_ROUNDS", int),
        postgres_url=("BENCH_REQLOG_POSTGRES", str),
        concurrency=("BENCH_REQLOG_CONCURRENCY", int),
    )
    out = modes.out_path("reqlog")
    print(f"mediagate request log benchmark; results to {out}")
    results = run(config, log=lambda line: print(line, flush=True))
    modes.save("reqlog", results, render)
    return 0

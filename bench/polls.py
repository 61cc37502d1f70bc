"""`python -m bench polls`: the CPU a video status poll answered from the job's record costs the
gateway, against a floor.

A poll answered from the record is `GET /v1/videos/{id}` while the job's poll interval has not
elapsed: no upstream call, only the gateway's own work (middleware, the client key, the read
from the job store, the JSON, the access log line, the metrics). The floor is a minimal aiohttp
server answering the very same JSON from a dict (`python -m bench.polls floor`), so the figure
to read is the gateway's CPU per poll and its ratio to the floor's.

Processes: the upstream stand-in (bench.standin, only to create the video), the gateway
(`python -m mediagate serve`, the bench's settings plus a poll interval of an hour, so every
poll of the run is answered from the record), the floor, and the load generator (bench.load).
The gateway and the floor share one core, the stand-in and the load generator the other.
Alternating rounds (the order rotating), each process's CPU read from /proc around its own
round; the medians of the rounds' µs per poll.

Environment: `BENCH_QUICK=1` (fewer, shorter rounds), `BENCH_ROUNDS`, `BENCH_POLLS_OUT` (default
bench/polls-results.json), `BENCH_COMPARE_DIR` (another checkout's gateway in the same rounds,
an A/B), `BENCH_POLLS_CONCURRENCY` (default 16).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2

from . import modes
from .procs import Loader, Proc, free_port, serve_gateway, steady_env, wait_port
from .runner import CLIENT_KEY, _http, gateway_env, machine, make_video

# The gateway reads the record while the poll interval has not elapsed: an hour, so no poll
# of the run asks the upstream. The read limiter is off (as in `make bench`): with its default
# of 600 a minute nearly every poll would be a 429; the "read limit on" row keeps it on, at a
# rate the run never reaches, to show what the limiter itself costs.
POLL_SETTINGS = {"MEDIAGATE_VIDEO_POLL_OVERRIDE_MS": "3600000"}
READ_LIMITED = {"MEDIAGATE_READS_PER_MINUTE": "100000000"}


@dataclass(frozen=True)
class Config:
    rounds: int = 7
    round_s: float = 1.5
    warmup_s: float = 0.5
    concurrency: int = 16
    read_limited: bool = True  # a second gateway with the read limiter on, in the same rounds
    compare_dir: str | None = None  # BENCH_COMPARE_DIR: another checkout in the same rounds
    pin: bool = True


FULL = Config()
QUICK_POLLS = Config(rounds=3, round_s=0.7, warmup_s=0.3)


@dataclass
class Side:
    name: str
    proc: Proc
    scenario: dict[str, Any]
    rounds: list[dict[str, Any]]


def _round(loader: Loader, side: Side, concurrency: int, seconds: float) -> dict[str, Any]:
    before = side.proc.cpu_s()
    result = loader.run(side.scenario, concurrency, seconds)
    spent = side.proc.cpu_s() - before
    requests = len(result["latencies_ms"])
    return {
        "requests": requests,
        "errors": result["errors"],
        "error_sample": result["error_sample"],
        "rps": requests / result["elapsed_s"] if result["elapsed_s"] else 0.0,
        "cpu_s": spent,
        "cpu_us_per_poll": spent / requests * 1e6 if requests else float("nan"),
        "p50_ms": statistics.median(result["latencies_ms"]) if requests else float("nan"),
    }


def _row(side: Side, floor: Side | None) -> dict[str, Any]:
    med = statistics.median
    per_poll = [r["cpu_us_per_poll"] for r in side.rounds]
    row: dict[str, Any] = {
        "side": side.name,
        "rounds": len(side.rounds),
        "requests": sum(r["requests"] for r in side.rounds),
        "errors": sum(r["errors"] for r in side.rounds),
        "error_sample": next((r["error_sample"] for r in side.rounds if r["errors"]), []),
        "cpu_us_per_poll": med(per_poll),
        "cpu_us_min": min(per_poll),
        "cpu_us_max": max(per_poll),
        "rps": med(r["rps"] for r in side.rounds),
        "p50_ms": med(r["p50_ms"] for r in side.rounds),
        "per_round": side.rounds,
    }
    if floor is not None and floor is not side:
        ratios = [
            s["cpu_us_per_poll"] / f["cpu_us_per_poll"]
            for s, f in zip(side.rounds, floor.rounds, strict=True)
            if f["cpu_us_per_poll"] > 0
        ]
        row["over_floor"] = med(ratios) if ratios else float("nan")
    return row


@contextlib.contextmanager
def floor_server(work: Path, video: dict[str, Any], cpu: int | None) -> Iterator[tuple[Proc, str]]:
    """The floor: a minimal aiohttp server answering `video` from a dict by its id."""
    port = free_port()
    path = work / "floor-video.json"
    path.write_text(json.dumps(video))
    args = [sys.executable, "-m", "bench.polls", "floor", "--port", str(port), "--video", str(path)]
    proc = Proc("floor", args, work, steady_env(), cpu)
    try:
        wait_port(proc, port)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def run(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {
        "config": asdict(config),
        "machine": machine(),
        "settings": {**POLL_SETTINGS, "MEDIAGATE_READS_PER_MINUTE": "0"},
        "rows": [],
    }
    with modes.stack(image_kb=1024, pin=config.pin) as stack:
        work, loader, gateway_cpu = stack.work, stack.loader, stack.gateway_cpu
        results["pinning"] = {
            "gateway_and_floor": gateway_cpu,
            "upstream_and_load": stack.other_cpu,
        }
        with contextlib.ExitStack() as running:
            sides: list[Side] = []

            def add(name: str, app_dir: str | None = None, **extra: str) -> None:
                env = gateway_env(stack, name.replace(" ", "-"), **POLL_SETTINGS, **extra)
                cwd = Path(app_dir) if app_dir else None
                proc, url = running.enter_context(
                    serve_gateway(name.replace(" ", "-"), work, env, gateway_cpu, cwd)
                )
                _, our_id = make_video(stack.upstream_url, url, 1024)
                scenario = _http("GET", f"{url}/v1/videos/{our_id}", CLIENT_KEY)
                sides.append(Side(name, proc, scenario, []))

            add("gateway")
            if config.read_limited:
                add("gateway, read limit on", **READ_LIMITED)
            if config.compare_dir:
                label = f"{Path(config.compare_dir).name} (BENCH_COMPARE_DIR)"
                add(label, app_dir=config.compare_dir)
            first = sides[0].scenario
            video = httpx2.get(first["url"], headers=first["headers"], timeout=10).json()
            floor_proc, floor_url = running.enter_context(floor_server(work, video, gateway_cpu))
            floor = Side(
                "floor (aiohttp, the JSON from a dict)",
                floor_proc,
                _http("GET", f"{floor_url}/v1/videos/{video['id']}", CLIENT_KEY),
                [],
            )
            sides.append(floor)
            for side in sides:  # warm connections, caches and the allocator
                loader.run(side.scenario, config.concurrency, config.warmup_s)
            for index in range(config.rounds):
                shift = index % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    side.rounds.append(_round(loader, side, config.concurrency, config.round_s))
            for side in sides:
                row = _row(side, floor)
                results["rows"].append(row)
                log(_line(row))
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def _line(row: dict[str, Any]) -> str:
    ratio = f", {row['over_floor']:.2f}x the floor" if "over_floor" in row else ""
    errors = f", {row['errors']} errors {row['error_sample']}" if row["errors"] else ""
    return (
        f"  {row['side']:<40} {row['cpu_us_per_poll']:6.0f} µs CPU/poll "
        f"(rounds {row['cpu_us_min']:.0f}-{row['cpu_us_max']:.0f}){ratio}; "
        f"{row['rps']:.0f} polls/s, p50 {row['p50_ms']:.2f} ms{errors}"
    )


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Video status polls answered from the record, c={results['config']['concurrency']}, "
        f"median of {results['config']['rounds']} alternating rounds:",
        "",
        "| side | CPU µs/poll (median) | rounds' range | x floor | polls/s | p50 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        ratio = f"{row['over_floor']:.2f}" if "over_floor" in row else "1"
        lines.append(
            f"| {row['side']} | {row['cpu_us_per_poll']:.0f} "
            f"| {row['cpu_us_min']:.0f}-{row['cpu_us_max']:.0f} | {ratio} "
            f"| {row['rps']:.0f} | {row['p50_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    quick = modes.quick()
    config = modes.configured(
        QUICK_POLLS,
        FULL,
        rounds=("BENCH_ROUNDS", int),
        compare_dir=("BENCH_COMPARE_DIR", str),
        concurrency=("BENCH_POLLS_CONCURRENCY", int),
    )
    out = modes.out_path("polls")
    print(f"mediagate polls benchmark ({'quick' if quick else 'full'}); results to {out}")
    results = run(config, log=lambda line: print(line, flush=True))
    modes.save("polls", results, render)
    return 0


# -- the floor -------------------------------------------------------------------------------


def _serve_floor(port: int, video_path: Path) -> None:
    from aiohttp import web

    video = json.loads(video_path.read_text())
    jobs = {video["id"]: video}

    async def retrieve(request: web.Request) -> web.Response:
        job = jobs.get(request.match_info["video_id"])
        if job is None:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        return web.json_response(job)

    app = web.Application()
    app.router.add_get("/v1/videos/{video_id}", retrieve)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.polls")
    parser.add_argument("role", choices=["floor"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--video", type=Path, required=True)
    arguments = parser.parse_args()
    _serve_floor(arguments.port, arguments.video)

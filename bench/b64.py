"""`python -m bench b64`: big base64 image answers relayed, the gateway against the floor.

Issue 28's "Base64 as bytes": what the gateway spends relaying megabytes of base64 (one image
answer of 12 or 30 MB of base64 per image, n = 1 or 4, at 1, 4 and 16 concurrent calls),
against the floor (bench/floor.py, a minimal aiohttp pass-through of the same answer), in
alternating rounds of the same run, the order rotating from round to round. The upstream is the
bench stand-in (bench/standin.py), which serves a precomputed answer of genuine base64 of a PNG
(`[bench:huge=MB]` in the prompt, `n` images), so the gateway's checks pass as on a real one.

Each round is a fixed number of calls (at least the concurrency, and about 120 MB): per round
and side, MB/s relayed (bytes the client read over the round's time), CPU ms per MB (user +
system of the server process from /proc/<pid>/stat, over the MB relayed), and the peak RSS of
the server process over the bytes in flight (the kernel's high-water mark, reset before the
round). Figures are medians across rounds, with their spread (min-max); the target is the
gateway's CPU per MB at most 1.3x the floor's (the medians), per case.

The gateway runs with `MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES=0` (no bound on the upstream
answers held: 30 MB x 4 at c=16 is 1.9 GB, more than the default 512 MB, whose queueing this
does not measure). `BENCH_COMPARE_DIR`: another checkout's gateway in the same rounds (an A/B,
the before and after of a change). `BENCH_QUICK=1`: 12 MB only, c=1 and 16, 3 rounds.
`BENCH_ROUNDS`: rounds per case (default 5). `BENCH_B64_OUT`: where the JSON goes (default
bench/b64-results.json).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import modes
from .procs import (
    Loader,
    Proc,
    peak_rss_during,
    serve_gateway,
)
from .runner import CLIENT_KEY, IMAGE_MODEL, MB, UPSTREAM_KEYS, gateway_env

MODEL = IMAGE_MODEL
TARGET = 1.3  # the gateway's CPU per MB over the floor's, at most
# No room bound for upstream answers: 30 MB x 4 at c=16 is 1.9 GB in flight, beyond the default
# 512 MB, whose queueing this does not measure.
UNBOUNDED = {"MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES": "0"}


@dataclass(frozen=True)
class Config:
    sizes_mb: tuple[float, ...] = (12.0, 30.0)  # MB of base64 per image
    ns: tuple[int, ...] = (1, 4)
    concurrencies: tuple[int, ...] = (1, 4, 16)
    rounds: int = 5
    round_mb: float = 120.0  # each side's round relays at least this much (and c calls)
    pin: bool = True  # the servers on one core, the stand-in and the load on the other
    compare_dir: str | None = None


FULL = Config()
QUICK = Config(sizes_mb=(12.0,), concurrencies=(1, 16), rounds=3)


def _scenario(url: str, size_mb: float, n: int) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "prompt": f"a red panda reading a newspaper [bench:huge={size_mb:g}]",
        "n": n,
        "size": "1024x1024",
        "quality": "low",
        "response_format": "b64_json",
    }
    return {
        "kind": "http",
        "method": "POST",
        "url": f"{url}/v1/images/generations",
        "headers": {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
        "body": json.dumps(body),
    }


def _spread(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite)}


def _round(
    loader: Loader, proc: Proc, scenario: dict[str, Any], c: int, calls: int
) -> dict[str, Any]:
    before_cpu = proc.cpu_s()
    rss_before, peak_kb, result = peak_rss_during(
        proc, lambda: loader.run(scenario, c, 600, max_requests=calls)
    )
    cpu_s = proc.cpu_s() - before_cpu
    relayed = result["bytes"] / MB
    elapsed = result["elapsed_s"]
    return {
        "calls": len(result["latencies_ms"]),
        "errors": result["errors"],
        "error_sample": result["error_sample"],
        "mb": relayed,
        "mb_per_s": relayed / elapsed if elapsed else float("nan"),
        "cpu_ms_per_mb": cpu_s * 1000 / relayed if relayed else float("nan"),
        "rss_before_mb": rss_before * 1024 / MB,
        "peak_rss_mb": peak_kb * 1024 / MB,
    }


def measure_case(
    loader: Loader,
    sides: dict[str, tuple[Proc, str]],
    config: Config,
    size_mb: float,
    n: int,
    c: int,
) -> dict[str, Any]:
    answer_mb = size_mb * n
    calls = max(c, math.ceil(config.round_mb / answer_mb))
    in_flight_mb = answer_mb * c
    scenarios = {name: _scenario(url, size_mb, n) for name, (_, url) in sides.items()}
    for name in sides:  # warm up: connections, allocator, caches
        loader.run(scenarios[name], c, 600, max_requests=c)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(config.rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            proc = sides[name][0]
            rounds[name].append(_round(loader, proc, scenarios[name], c, calls))
    row: dict[str, Any] = {
        "size_mb": size_mb,
        "n": n,
        "concurrency": c,
        "calls_per_round": calls,
        "in_flight_mb": in_flight_mb,
        "sides": {},
    }
    for name, its in rounds.items():
        row["sides"][name] = {
            "errors": sum(r["errors"] for r in its),
            "error_sample": next((r["error_sample"] for r in its if r["errors"]), []),
            "mb_per_s": _spread([r["mb_per_s"] for r in its]),
            "cpu_ms_per_mb": _spread([r["cpu_ms_per_mb"] for r in its]),
            "peak_rss_over_in_flight": _spread([r["peak_rss_mb"] / in_flight_mb for r in its]),
            "rounds": its,
        }
    floor = row["sides"]["floor"]["cpu_ms_per_mb"]["median"]
    gateway = row["sides"]["mediagate"]["cpu_ms_per_mb"]["median"]
    row["cpu_ratio"] = gateway / floor if floor else float("nan")
    row["met"] = bool(row["cpu_ratio"] <= TARGET)
    # The same ratio round by round (each gateway round over the floor's of the same round).
    row["cpu_ratio_rounds"] = _spread(
        [
            g["cpu_ms_per_mb"] / f["cpu_ms_per_mb"]
            for g, f in zip(rounds["mediagate"], rounds["floor"], strict=True)
            if f["cpu_ms_per_mb"]
        ]
    )
    return row


def run(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": asdict(config),
        "target": f"gateway CPU per MB <= {TARGET}x the floor's (medians of alternating rounds)",
        "cases": [],
    }
    started = time.monotonic()
    with modes.stack(image_kb=1024, pin=config.pin) as stack:
        work, loader = stack.work, stack.loader
        server_cpu = stack.gateway_cpu
        results["pinning"] = {"servers": server_cpu, "upstream_and_load": stack.other_cpu}
        with contextlib.ExitStack() as running:
            sides: dict[str, tuple[Proc, str]] = {}
            key = UPSTREAM_KEYS["official"]
            sides["floor"] = running.enter_context(modes.floor(stack, key=key))
            env = gateway_env(stack, "gateway", **UNBOUNDED)
            sides["mediagate"] = running.enter_context(
                serve_gateway("gateway", work, env, server_cpu)
            )
            if config.compare_dir:
                env = gateway_env(stack, "compared", **UNBOUNDED)
                cwd = Path(config.compare_dir)
                sides[f"{cwd.name} (BENCH_COMPARE_DIR)"] = running.enter_context(
                    serve_gateway("compared", work, env, server_cpu, cwd=cwd)
                )
            for size_mb in config.sizes_mb:
                for n in config.ns:
                    for c in config.concurrencies:
                        row = measure_case(loader, sides, config, size_mb, n, c)
                        results["cases"].append(row)
                        log(_line(row))
    results["seconds"] = time.monotonic() - started
    return results


def _line(row: dict[str, Any]) -> str:
    parts = [f"{row['size_mb']:g} MB x{row['n']} c={row['concurrency']}:"]
    for name, side in row["sides"].items():
        cpu = side["cpu_ms_per_mb"]
        parts.append(
            f"{name} {side['mb_per_s']['median']:.0f} MB/s, {cpu['median']:.2f} "
            f"({cpu['min']:.2f}-{cpu['max']:.2f}) ms/MB, peak "
            f"{side['peak_rss_over_in_flight']['median']:.2f}x;"
        )
    parts.append(f"ratio {row['cpu_ratio']:.2f} ({'met' if row['met'] else 'MISSED'})")
    return " ".join(parts)


def render(results: dict[str, Any]) -> str:
    names = list(results["cases"][0]["sides"]) if results["cases"] else []
    head = "| case | " + " | ".join(
        f"{name} MB/s | {name} CPU ms/MB (min-max) | {name} peak RSS / in flight" for name in names
    )
    lines = [
        head + " | CPU ratio (rounds min-max) | target |",
        "|---|" + "---:|" * (3 * len(names) + 2),
    ]
    for row in results["cases"]:
        cells = [f"{row['size_mb']:g} MB x{row['n']}, c={row['concurrency']}"]
        for name in names:
            side = row["sides"][name]
            cpu = side["cpu_ms_per_mb"]
            cells += [
                f"{side['mb_per_s']['median']:.0f}",
                f"{cpu['median']:.2f} ({cpu['min']:.2f}-{cpu['max']:.2f})",
                f"{side['peak_rss_over_in_flight']['median']:.2f}x",
            ]
        ratio = row["cpu_ratio_rounds"]
        cells.append(f"{row['cpu_ratio']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})")
        cells.append("met" if row["met"] else "MISSED")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    config = modes.configured(
        QUICK, FULL, compare_dir=("BENCH_COMPARE_DIR", str), rounds=("BENCH_ROUNDS", int)
    )
    results = run(config)
    modes.save("b64", results, render)
    print(f"written to {modes.out_path('b64')}")
    errors = sum(side["errors"] for row in results["cases"] for side in row["sides"].values())
    return 1 if errors else 0

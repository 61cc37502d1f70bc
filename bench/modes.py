"""What the issue-28 bench modes share: the processes, the sides, alternating rounds, the output.

A mode is a module `bench/<mode>.py` with a `main() -> int`, run by `python -m bench <mode>`
(bench/__main__.py), writing its JSON to `bench/<mode>-results.json` (`out_path`). The pieces
here are the pass-through bench's own (bench.runner, bench.procs), reused, not copied:

- `stack(...)`: the stand-in upstream and the load generator, pinned as `make bench` pins them
  (a `bench.runner.Stack`, so `bench.runner.gateway(stack, name)` serves a gateway on it);
- `floor(stack)`: the floor, `python -m bench.floor` (a minimal aiohttp pass-through), in front
  of the same upstream, on the gateway's core;
- `litellm(stack)`: LiteLLM's proxy as a third side when BENCH_LITELLM is set (installed into
  bench/.litellm-venv when it is `1`), else the reason it is not there;
- `alternate(...)`: rounds in which every side runs in turn, the order rotating, each side's
  proxy measured for CPU (and RSS, when asked) during its own rounds only; `summarise` gives
  their medians and the spread across rounds (how noisy the machine was).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from .procs import Loader, Proc, cpus, free_port, peak_rss_during, steady_env, wait_port
from .runner import MB, Config, Stack, _summary, litellm_proxy, litellm_wanted, machine

Log = Callable[[str], None]
C = TypeVar("C")
HERE = Path(__file__).resolve().parent


def quick() -> bool:
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def configured(quick_config: C, full_config: C, **overrides: tuple[str, Callable[[str], Any]]) -> C:
    """The mode's quick (BENCH_QUICK) or full config, each field in `overrides` replaced by the
    environment variable named beside it when that is set (`rounds=("BENCH_ROUNDS", int)`)."""
    config = quick_config if quick() else full_config
    changes = {
        name: parse(os.environ[variable])
        for name, (variable, parse) in overrides.items()
        if os.environ.get(variable)
    }
    return replace(config, **changes) if changes else config  # type: ignore[type-var]


def out_path(mode: str) -> Path:
    """BENCH_<MODE>_OUT, else bench/<mode>-results.json."""
    given = os.environ.get(f"BENCH_{mode.upper()}_OUT")
    return Path(given) if given else HERE / f"{mode}-results.json"


def save(mode: str, results: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """A mode's results written to `out_path(mode)` as JSON, and its tables printed."""
    out_path(mode).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(render(results))


def commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "log", "-1", "--format=%h %cs"], capture_output=True, text=True, cwd=HERE
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


def header(mode: str, config: Any) -> dict[str, Any]:
    """What every mode's JSON starts with: the mode, its configuration, machine and commit."""
    from dataclasses import asdict

    return {
        "mode": mode,
        "config": asdict(config),
        "machine": machine(),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


@contextlib.contextmanager
def stack(image_kb: int = 64, video_kb: int = 1024, pin: bool = True) -> Iterator[Stack]:
    """The stand-in upstream and the load generator; the gateway's core (when pinned) is left
    for the proxy under test."""
    available = cpus()
    pinned = pin and len(available) >= 2
    gateway_cpu, other_cpu = (available[-1], available[0]) if pinned else (None, None)
    with tempfile.TemporaryDirectory(prefix="mediagate-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        args = [sys.executable, "-m", "bench.standin", "--port", str(port)]
        args += ["--image-kb", str(image_kb), "--video-kb", str(video_kb)]
        upstream = Proc("upstream", args, work, steady_env(), cpu=other_cpu)
        loader = Loader(work, other_cpu)
        try:
            wait_port(upstream, port)
            yield Stack(Config(pin=pinned), work, port, loader, upstream, gateway_cpu, other_cpu)
        finally:
            loader.stop()
            upstream.stop()


@contextlib.contextmanager
def floor_process(
    work: Path, upstream: str, cpu: int | None, name: str = "floor", key: str | None = None
) -> Iterator[tuple[Proc, str]]:
    """`python -m bench.floor` in front of `upstream` (a base URL without /v1): its process
    and URL (with `key`, the floor sends that upstream key in place of the client's)."""
    port = free_port()
    args = [sys.executable, "-m", "bench.floor", "--upstream", upstream, "--port", str(port)]
    args += ["--key", key] if key else []
    proc = Proc(name, args, work, steady_env(), cpu)
    try:
        wait_port(proc, port)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def floor(
    stack: Stack, name: str = "floor", key: str | None = None
) -> contextlib.AbstractContextManager[tuple[Proc, str]]:
    """The floor in front of the stack's stand-in, on the gateway's core."""
    return floor_process(stack.work, stack.upstream_url, stack.gateway_cpu, name, key)


@contextlib.contextmanager
def litellm(stack: Stack, log: Log) -> Iterator[tuple[Proc, str] | str]:
    """LiteLLM's proxy (bench.runner.litellm_proxy) when BENCH_LITELLM is set, else why not."""
    if not litellm_wanted():
        yield "skipped (set BENCH_LITELLM=1 to install it and add it as a side)"
        return
    with litellm_proxy(stack) as found:
        if isinstance(found, str):
            log(f"LiteLLM: {found}")
        yield found


@dataclass
class Side:
    """One side of a mode's rounds: a scenario for bench.load, and the process it costs."""

    label: str
    scenario: dict[str, Any]
    proc: Proc | None = None  # None: direct to the upstream
    rounds: list[dict[str, Any]] = field(default_factory=list)


def alternate(
    stack: Stack,
    sides: list[Side],
    concurrency: int,
    rounds: int,
    round_s: float = 1.0,
    max_requests: int = 0,
    warmup_s: float = 0.2,
    rss: bool = False,
    log: Log | None = None,
) -> None:
    """`rounds` rounds in which each side runs once (`round_s`, or `max_requests` calls), the
    order rotating from round to round; each round's summary appended to its side's rounds.
    With `rss`, each round also records its proxy's RSS before it and its peak during it."""
    for side in sides:
        if warmup_s:
            stack.loader.run(side.scenario, concurrency, warmup_s, max_requests=max_requests)
    for index in range(rounds):
        shift = index % len(sides)
        for side in sides[shift:] + sides[:shift]:
            proc = side.proc
            before_cpu = proc.cpu_s() if proc else None

            def work(side: Side = side) -> dict[str, Any]:
                limit = round_s if not max_requests else 3600.0
                return stack.loader.run(side.scenario, concurrency, limit, max_requests)

            if rss and proc is not None:
                before, peak, result = peak_rss_during(proc, work)
            else:
                before, peak, result = 0, 0, work()
            spent = proc.cpu_s() - before_cpu if proc and before_cpu is not None else None
            summary = _summary(result, spent)
            summary["complete_p50_ms"] = (
                statistics.median(result["complete_ms"]) if result.get("complete_ms") else None
            )
            summary["bytes"] = result["bytes"]
            if rss and proc is not None:
                summary["rss_before_mb"] = before * 1024 / MB
                summary["rss_peak_mb"] = peak * 1024 / MB
                summary["rss_growth_mb"] = (peak - before) * 1024 / MB
            side.rounds.append(summary)
            if log is not None:
                log(
                    f"    round {index + 1} {side.label:<10} p50 {summary['p50_ms']:8.2f} ms "
                    f"{summary['mb_per_s']:8.1f} MB/s errors {summary['errors']}"
                )


def spread(values: list[float | None]) -> dict[str, float]:
    """min / median / max of a figure across rounds: the median to read, the range for noise."""
    clean = [v for v in values if v is not None]
    if not clean:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"min": min(clean), "median": statistics.median(clean), "max": max(clean)}


def summarise(side: Side, baseline: Side | None = None) -> dict[str, Any]:
    """A side's medians across its rounds (and the range), and what it adds to `baseline`
    (the direct side) round by round."""
    rounds = side.rounds
    requests = sum(r["requests"] for r in rounds)
    cpu = [r["gateway_cpu_s"] for r in rounds if r["gateway_cpu_s"] is not None]
    row: dict[str, Any] = {
        "side": side.label,
        "rounds": len(rounds),
        "requests": requests,
        "errors": sum(r["errors"] for r in rounds),
        "error_sample": next((r["error_sample"] for r in rounds if r["errors"]), []),
        "p50_ms": spread([r["p50_ms"] for r in rounds]),
        "p99_ms": spread([r["p99_ms"] for r in rounds]),
        "mb_per_s": spread([r["mb_per_s"] for r in rounds]),
        "rps": spread([r["rps"] for r in rounds]),
        "cpu_ms_per_request": (sum(cpu) / requests * 1000) if cpu and requests else None,
    }
    if any(r.get("complete_p50_ms") is not None for r in rounds):
        row["complete_p50_ms"] = spread([r.get("complete_p50_ms") for r in rounds])
    if any("rss_growth_mb" in r for r in rounds):
        row["rss_growth_mb"] = spread([r["rss_growth_mb"] for r in rounds])
        row["rss_before_mb"] = spread([r["rss_before_mb"] for r in rounds])
    if baseline is not None and baseline is not side:
        added = [t["p50_ms"] - d["p50_ms"] for d, t in zip(baseline.rounds, rounds, strict=True)]
        row["added_p50_ms"] = spread(added)
    return row


def fmt(figure: dict[str, float] | None, digits: int = 1, sign: bool = False) -> str:
    """A figure as `median (min-max)`."""
    if not figure:
        return "-"
    plus = "+" if sign else ""
    d = digits
    return (
        f"{figure['median']:{plus}.{d}f} ({figure['min']:{plus}.{d}f}-{figure['max']:{plus}.{d}f})"
    )

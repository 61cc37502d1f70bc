"""`python -m bench startup`: how fast a gateway starts, and what it holds idle.

- cold start: from spawning `python -m mediagate serve` (the embedded default store, SQLite, a
  fresh data directory each time) to the first 200 of `GET /v1/models` with a client key,
  polled every 5 ms; min and median of N spawns;
- `import mediagate.app`: the wall time of the import in a fresh interpreter (min and median of
  N), and `python -X importtime`'s cumulative figure for it, with the heaviest modules;
- idle RSS: the served process's resident memory a moment after its first answer.

Bytecode as a deployment has it: the container's `pip install` compiles the package, so a
replica never compiles a module at start. A checkout run from its sources (an editable install,
often with PYTHONDONTWRITEBYTECODE=1 in a developer's environment) would compile every module of
mediagate at every start (~200-300 ms on a 2-core machine): the children run with their
bytecode kept in a cache of the bench's own (PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE
unset), filled by one spawn and one import per side that are not counted.

The gateway runs with the bench's settings (bench.runner.gateway_env) in front of the upstream
stand-in, pinned to one core when there are two. Environment: `BENCH_QUICK=1` (fewer spawns),
`BENCH_STARTUP_OUT` (default bench/startup-results.json), `BENCH_COMPARE_DIR` (another
checkout, spawned alternately with this one: an A/B in the same run).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import modes
from .procs import Proc, free_port
from .runner import CLIENT_KEY, Stack, gateway_env, machine

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    spawns: int = 7
    imports: int = 7
    settle_s: float = 1.0  # after the first answer, before reading the idle RSS
    compare_dir: str | None = None
    pin: bool = True


FULL = Config()
QUICK_STARTUP = Config(spawns=3, imports=3, settle_s=0.5)


def _first_200(port: int, proc: Proc, deadline_s: float = 60.0) -> float:
    """Seconds from now until GET /v1/models answers 200 (the process must stay alive)."""
    started = time.perf_counter()
    while True:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
                answer = conn.getresponse()
                answer.read()
                if answer.status == 200:
                    return time.perf_counter() - started
            finally:
                conn.close()
        if time.perf_counter() - started > deadline_s:
            raise RuntimeError(f"{proc.name} did not answer:\n{proc.log_tail()}")
        time.sleep(0.005)


def _compiled(env: dict[str, str], pycache: Path) -> dict[str, str]:
    """The environment with bytecode written to, and read from, the bench's cache."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def spawn_once(
    stack: Stack, name: str, settle_s: float, cpu: int | None, cwd: Path | None
) -> dict[str, Any]:
    env = _compiled(gateway_env(stack, name), stack.work / "pycache")
    port = free_port()
    args = [sys.executable, "-m", "mediagate", "serve", "--host", "127.0.0.1", "--port", str(port)]
    begun = time.perf_counter()
    proc = Proc(name, args, stack.work, env, cpu, cwd=cwd)
    try:
        _first_200(port, proc)
        seconds = time.perf_counter() - begun
        first_cpu_s = proc.cpu_s()
        time.sleep(settle_s)
        return {"first_200_s": seconds, "cpu_s": first_cpu_s, "idle_rss_mb": proc.rss_kb() / 1024}
    finally:
        proc.stop()


def import_once(cwd: Path, cpu: int | None, pycache: Path) -> dict[str, Any]:
    code = (
        "import time; t = time.perf_counter(); import mediagate.app; print(time.perf_counter() - t)"
    )
    plain = _python(["-c", code], cwd, cpu, pycache)
    timed = _python(
        ["-X", "importtime", "-c", "import mediagate.app"], cwd, cpu, pycache, stderr=True
    )
    modules = _importtime(timed)
    return {
        "import_s": float(plain.strip()),
        "importtime_s": modules.get("mediagate.app", (0, 0))[1] / 1e6,
        "modules": modules,
    }


def _python(
    args: list[str], cwd: Path, cpu: int | None, pycache: Path, stderr: bool = False
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAGATE_", "BENCH_"))}
    env = _compiled(env, pycache)
    command = [sys.executable, *args]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stderr if stderr else done.stdout


def _importtime(text: str) -> dict[str, tuple[int, int]]:
    """`-X importtime`'s lines: module -> (self µs, cumulative µs)."""
    found: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        found[name.strip()] = (int(own), int(cumulative))
    return found


def _heaviest(modules: list[dict[str, tuple[int, int]]], top: int = 12) -> list[dict[str, Any]]:
    """The top-level packages whose own import time is largest (median over the runs)."""
    per_package: dict[str, list[int]] = {}
    for run in modules:
        sums: dict[str, int] = {}
        for name, (own, _) in run.items():
            package = name.split(".")[0]
            if package == "mediagate":
                package = ".".join(name.split(".")[:2])
            sums[package] = sums.get(package, 0) + own
        for package, total in sums.items():
            per_package.setdefault(package, []).append(total)
    ranked = sorted(per_package.items(), key=lambda kv: -statistics.median(kv[1]))[:top]
    return [{"package": k, "self_ms": statistics.median(v) / 1000} for k, v in ranked]


def _summary(
    name: str, spawns: list[dict[str, Any]], imports: list[dict[str, Any]]
) -> dict[str, Any]:
    med = statistics.median
    first = [s["first_200_s"] for s in spawns]
    plain = [i["import_s"] for i in imports]
    timed = [i["importtime_s"] for i in imports]
    return {
        "side": name,
        "spawns": len(spawns),
        "first_200_min_s": min(first),
        "first_200_median_s": med(first),
        "first_200_max_s": max(first),
        "cpu_to_first_200_median_s": med(s["cpu_s"] for s in spawns),
        "idle_rss_median_mb": med(s["idle_rss_mb"] for s in spawns),
        "import_min_ms": min(plain) * 1000,
        "import_median_ms": med(plain) * 1000,
        "importtime_min_ms": min(timed) * 1000,
        "importtime_median_ms": med(timed) * 1000,
        "heaviest_imports": _heaviest([i["modules"] for i in imports]),
        "per_spawn": spawns,
    }


def run(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.monotonic()
    sides: dict[str, Path | None] = {"this checkout": None}
    if config.compare_dir:
        sides[f"{Path(config.compare_dir).name} (BENCH_COMPARE_DIR)"] = Path(config.compare_dir)
    spawns: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    imports: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    with modes.stack(image_kb=1024, pin=config.pin) as stack:
        gateway_cpu, other_cpu = stack.gateway_cpu, stack.other_cpu
        names = list(sides)
        pycache = stack.work / "pycache"
        for name in names:  # not counted: compiles each side's modules into the cache
            spawn_once(stack, f"gateway-warm-{names.index(name)}", 0.0, gateway_cpu, sides[name])
            import_once(sides[name] or ROOT, gateway_cpu, pycache)
        for index in range(max(config.spawns, config.imports)):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                cwd = sides[name]
                if index < config.spawns:
                    label = f"gateway-{len(spawns[name])}-{names.index(name)}"
                    spawns[name].append(spawn_once(stack, label, config.settle_s, gateway_cpu, cwd))
                if index < config.imports:
                    imports[name].append(import_once(cwd or ROOT, gateway_cpu, pycache))
    rows = [_summary(name, spawns[name], imports[name]) for name in sides]
    for row in rows:
        log(_line(row))
    return {
        "config": asdict(config),
        "machine": machine(),
        "pinning": {"gateway": gateway_cpu, "upstream_and_poller": other_cpu},
        "rows": rows,
        "seconds": round(time.monotonic() - started, 1),
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"  {row['side']:<32} first 200 in {row['first_200_min_s']:.2f} s min, "
        f"{row['first_200_median_s']:.2f} s median ({row['cpu_to_first_200_median_s']:.2f} s "
        f"CPU); import mediagate.app {row['import_min_ms']:.0f} ms min, "
        f"{row['import_median_ms']:.0f} ms median (importtime {row['importtime_median_ms']:.0f}"
        f" ms); idle RSS {row['idle_rss_median_mb']:.0f} MB"
    )


def render(results: dict[str, Any]) -> str:
    lines = [
        "Start-up (embedded SQLite store), min / median of "
        f"{results['config']['spawns']} spawns and {results['config']['imports']} imports:",
        "",
        "| side | first 200, s | CPU to it, s | import mediagate.app, ms | -X importtime, ms "
        "| idle RSS, MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['side']} | {row['first_200_min_s']:.2f} / {row['first_200_median_s']:.2f} "
            f"| {row['cpu_to_first_200_median_s']:.2f} "
            f"| {row['import_min_ms']:.0f} / {row['import_median_ms']:.0f} "
            f"| {row['importtime_min_ms']:.0f} / {row['importtime_median_ms']:.0f} "
            f"| {row['idle_rss_median_mb']:.0f} |"
        )
    heaviest = results["rows"][0]["heaviest_imports"]
    lines += [
        "",
        "Heaviest imports (own time, median): "
        + ", ".join(f"{h['package']} {h['self_ms']:.0f} ms" for h in heaviest),
    ]
    return "\n".join(lines)


def main() -> int:
    quick = modes.quick()
    config = QUICK_STARTUP if quick else FULL
    if os.environ.get("BENCH_COMPARE_DIR"):
        config = replace(config, compare_dir=os.environ["BENCH_COMPARE_DIR"])
    out = modes.out_path("startup")
    print(f"mediagate start-up benchmark ({'quick' if quick else 'full'}); results to {out}")
    results = run(config, log=lambda line: print(line, flush=True))
    modes.save("startup", results, render)
    return 0

"""`python -m bench slow`: slow calls in flight, as generations are (issue 28).

Bursts of calls against an upstream that takes its time (the stand-in, `bench.standin`, asked
to sleep by `[bench:sleep=S]`), each burst all at once (one connection per call), with the
gateway's DEFAULT settings (nothing raised: the process raises its own file limit), in the
same run as:

- direct: the same calls straight to the stand-in (the baseline of "added");
- the floor: bench/floor.py, a minimal aiohttp pass-through, what any proxy costs.

Per burst size, alternating rounds (the order rotating), a fresh gateway and floor per round
(warmed by a small burst first), so what one burst left in memory is not the next one's
baseline. Per side and round: all served?, p50/p99, and for the floor and the gateway the CPU
per call and the RSS per call in flight (peak RSS during the burst less the RSS before, over
the calls); for the gateway also what its /metrics saw (calls in flight and upstream calls
waiting mid-burst, the wait for a slot summed over the burst, calls refused). Medians across
rounds are what the table and the targets read.

Environment: `BENCH_QUICK=1` (a 2 s upstream, bursts of 100 and 400, one round: about a
minute); `BENCH_ROUNDS` (default 2, quick 1); `BENCH_SLOW_OUT` (default bench/slow-results.json).
The full run (250, 1,000 and 2,000 calls of 20 s, 1,000 of 10 s) takes about 8 minutes.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2

from . import modes
from .procs import (
    Loader,
    Proc,
    cpus,
    free_port,
    peak_rss_during,
    serve_gateway,
    steady_env,
    wait_port,
)
from .runner import CLIENT_KEY, IMAGE_MODEL, UPSTREAM_KEYS, _http, _percentile, image_body, machine

KB = 1024


@dataclass(frozen=True)
class Config:
    bursts: tuple[tuple[int, float], ...]  # (calls at once, the upstream's service seconds)
    rounds: int = 2
    image_kb: int = 4  # the image each call answers (not the subject here)
    warmup_calls: int = 20
    pin: bool = True  # the gateway or floor on one core, the rest on the other


FULL = Config(bursts=((250, 20.0), (1000, 10.0), (1000, 20.0), (2000, 20.0)))
QUICK = Config(bursts=((100, 2.0), (400, 2.0)), rounds=1)


def raise_file_limit() -> int:
    """This process's soft RLIMIT_NOFILE raised to the hard limit (the stand-in, the floor and
    the load generator inherit it: a burst of 2,000 holds 2,000 sockets in each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def gateway_env(work: Path, upstream: str, port: int) -> dict[str, str]:
    """The DEFAULT settings: only what any deployment must say (where the upstream is, its
    keys, a client key, a data directory)."""
    data = work / f"gateway-data-{time.monotonic_ns()}"
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAGATE_", "BENCH_"))}
    env.update(
        {
            "MEDIAGATE_UPSTREAM_URL": f"{upstream}/v1",
            "MEDIAGATE_KEY_DEFAULT": UPSTREAM_KEYS["default"],
            "MEDIAGATE_KEY_OPENAIOFFICIAL": UPSTREAM_KEYS["official"],
            "MEDIAGATE_API_KEYS": f"bench:{CLIENT_KEY}",
            "MEDIAGATE_FETCH_ALLOW_HOSTS": f"127.0.0.1:{port}",
            "MEDIAGATE_DATA_DIR": str(data),
            # The stand-in has no model lists: no catalog check (not a capacity setting).
            "MEDIAGATE_CATALOG_CHECK_INTERVAL_S": "0",
        }
    )
    return env


# -- one burst -------------------------------------------------------------------------------


def _scenarios(up: str, fl: str, gw: str, service_s: float) -> dict[str, dict[str, Any]]:
    prompt = f"a red panda reading a newspaper [bench:sleep={service_s:g}]"
    # Quality high: the stand-in's usage (4,160 output tokens) is a high-quality 1024x1024
    # image's, so the gateway believes it (at low, every call would log that it booked the
    # estimate instead: a log line and a counter per call that no real call costs).
    body = image_body(IMAGE_MODEL, prompt) | {"quality": "high"}
    upstream_body = body | {"response_format": "b64_json"}
    key = UPSTREAM_KEYS["default"]
    return {
        "direct": _http("POST", f"{up}/v1/images/generations", key, upstream_body),
        "floor": _http("POST", f"{fl}/v1/images/generations", key, upstream_body),
        "gateway": _http("POST", f"{gw}/v1/images/generations", CLIENT_KEY, body),
    }


def scrape(url: str) -> dict[str, float]:
    """The gateway's capacity figures from its /metrics, summed over their labels."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "mediagate_calls_in_flight",
        "mediagate_max_inflight",
        "mediagate_calls_refused_total",
        "mediagate_upstream_calls_in_flight",
        "mediagate_upstream_calls_waiting",
        "mediagate_upstream_call_wait_seconds_sum",
        "mediagate_upstream_call_wait_seconds_count",
        "process_max_fds",
    }
    seen = dict.fromkeys(wanted, 0.0)
    text = httpx2.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                seen[sample.name] += sample.value
    return seen


def burst(
    loader: Loader,
    scenario: dict[str, Any],
    calls: int,
    service_s: float,
    proc: Proc | None,
    metrics_url: str | None,
) -> dict[str, Any]:
    """`calls` calls at once, each its own connection; what they took and cost."""

    def run() -> dict[str, Any]:
        return loader.run(scenario, calls, duration_s=3600, max_requests=calls)

    mid: dict[str, float] = {}
    sampler = None
    if proc is not None:

        def sample() -> None:
            time.sleep(service_s / 2)  # every call sent and waiting for its answer
            with contextlib.suppress(OSError, KeyError, ValueError):
                mid["rss_kb"] = proc.rss_kb()
            if metrics_url is not None:
                with contextlib.suppress(httpx2.HTTPError):
                    mid.update(scrape(metrics_url))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    cpu_before = proc.cpu_s() if proc else 0.0
    if proc is None:
        before = peak = 0
        result = run()
    else:
        before, peak, result = peak_rss_during(proc, run)
    cpu = proc.cpu_s() - cpu_before if proc else float("nan")
    if sampler is not None:
        sampler.join()
    latencies = result["latencies_ms"]
    row: dict[str, Any] = {
        "calls": calls,
        "served": len(latencies),
        "errors": result["errors"],
        "error_sample": result["error_sample"],
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "cpu_ms_per_call": cpu * 1000 / calls if proc else float("nan"),
        "rss_before_mb": before / KB,
        "peak_rss_mb": peak / KB,
        "rss_kb_per_call": (peak - before) / calls if proc else float("nan"),
        # Mid-burst (every call in flight, none answered): what the calls hold, without the
        # arrival's transient peak.
        "rss_mid_kb_per_call": (mid.get("rss_kb", float("nan")) - before) / calls
        if proc
        else float("nan"),
    }
    if metrics_url is not None:
        after = scrape(metrics_url)
        row["mid_burst"] = {
            "calls_in_flight": mid.get("mediagate_calls_in_flight", float("nan")),
            "upstream_calls_in_flight": mid.get("mediagate_upstream_calls_in_flight", float("nan")),
            "upstream_calls_waiting": mid.get("mediagate_upstream_calls_waiting", float("nan")),
        }
        row["max_inflight"] = after["mediagate_max_inflight"]
        row["max_fds"] = after["process_max_fds"]
        row["refused"] = after["mediagate_calls_refused_total"]
        row["pool_wait_s"] = after["mediagate_upstream_call_wait_seconds_sum"]
        row["upstream_calls"] = after["mediagate_upstream_call_wait_seconds_count"]
    return row


# -- the run ---------------------------------------------------------------------------------


def _round(
    config: Config,
    work: Path,
    loader: Loader,
    up: str,
    standin_port: int,
    calls: int,
    service_s: float,
    index: int,
    gateway_cpu: int | None,
) -> dict[str, dict[str, Any]]:
    with (
        modes.floor_process(work, up, gateway_cpu) as (floor_proc, fl),
        serve_gateway("gateway", work, gateway_env(work, up, standin_port), gateway_cpu) as (
            gateway_proc,
            gw,
        ),
    ):
        scenarios = _scenarios(up, fl, gw, service_s)
        warm = _scenarios(up, fl, gw, 0.01)
        for side in ("floor", "gateway"):  # connections, caches and the allocator warmed
            loader.run(warm[side], config.warmup_calls, 3600, max_requests=config.warmup_calls)
        sides: dict[str, tuple[Proc | None, str | None]] = {
            "direct": (None, None),
            "floor": (floor_proc, None),
            "gateway": (gateway_proc, gw),
        }
        names = list(sides)
        shift = index % len(names)
        rows: dict[str, dict[str, Any]] = {}
        for name in names[shift:] + names[:shift]:
            proc, url = sides[name]
            rows[name] = burst(loader, scenarios[name], calls, service_s, proc, url)
        # The gateway's prior warm-up calls are in its counters: only the burst's are wanted.
        rows["gateway"]["upstream_calls"] -= config.warmup_calls
        return rows


def _median(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else float("nan")


def _summary(
    calls: int, service_s: float, rounds: list[dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"calls": calls, "service_s": service_s, "rounds": rounds}
    direct = [r["direct"] for r in rounds]
    for side in ("direct", "floor", "gateway"):
        rows = [r[side] for r in rounds]
        added_p50 = [s["p50_ms"] - d["p50_ms"] for s, d in zip(rows, direct, strict=True)]
        added_p99 = [s["p99_ms"] - d["p99_ms"] for s, d in zip(rows, direct, strict=True)]
        out[side] = {
            "all_served": all(r["served"] == calls and r["errors"] == 0 for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "p50_ms": _median(rows, "p50_ms"),
            "p99_ms": _median(rows, "p99_ms"),
            "added_p50_ms": statistics.median(added_p50),
            "added_p99_ms": statistics.median(added_p99),
            "added_p50_ms_range": [min(added_p50), max(added_p50)],
            "cpu_ms_per_call": _median(rows, "cpu_ms_per_call"),
            "rss_kb_per_call": _median(rows, "rss_kb_per_call"),
            "rss_mid_kb_per_call": _median(rows, "rss_mid_kb_per_call"),
            "rss_kb_per_call_range": [
                min(r["rss_kb_per_call"] for r in rows),
                max(r["rss_kb_per_call"] for r in rows),
            ],
        }
    gateway_rows = [r["gateway"] for r in rounds]
    out["gateway"] |= {
        "pool_wait_s": max(r["pool_wait_s"] for r in gateway_rows),
        "waiting_mid_burst": max(r["mid_burst"]["upstream_calls_waiting"] for r in gateway_rows),
        "in_flight_mid_burst": min(r["mid_burst"]["calls_in_flight"] for r in gateway_rows),
        "refused": max(r["refused"] for r in gateway_rows),
        "max_inflight": gateway_rows[0]["max_inflight"],
        "max_fds": gateway_rows[0]["max_fds"],
    }
    out["gateway_over_floor_p50_ms"] = out["gateway"]["added_p50_ms"] - out["floor"]["added_p50_ms"]
    return out


def run(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    ceiling = raise_file_limit()
    largest = max(calls for calls, _ in config.bursts)
    if ceiling < largest + 256:
        raise RuntimeError(f"a burst of {largest} needs more file descriptors than {ceiling}")
    import tempfile

    from .procs import wait_http

    cores = cpus()
    pinned = config.pin and len(cores) >= 2
    gateway_cpu, other_cpu = (cores[0], cores[1]) if pinned else (None, None)
    results: dict[str, Any] = {
        "config": asdict(config),
        "machine": machine(),
        "nofile": ceiling,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bursts": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        work = Path(tmp)
        port = free_port()
        args = [sys.executable, "-m", "bench.standin", "--port", str(port)]
        args += ["--image-kb", str(config.image_kb)]
        standin = Proc("standin", args, work, steady_env(), other_cpu)
        loader = Loader(work, other_cpu)
        up = f"http://127.0.0.1:{port}"
        try:
            wait_port(standin, port)
            wait_http(standin, f"{up}/files/bench.png")
            for calls, service_s in config.bursts:
                rounds = []
                for index in range(config.rounds):
                    rows = _round(
                        config, work, loader, up, port, calls, service_s, index, gateway_cpu
                    )
                    rounds.append(rows)
                    log(_round_line(calls, service_s, index, rows))
                results["bursts"].append(_summary(calls, service_s, rounds))
        finally:
            loader.stop()
            standin.stop()
    results["targets"] = targets(results)
    return results


def _round_line(calls: int, service_s: float, index: int, rows: dict[str, dict[str, Any]]) -> str:
    d, f, g = rows["direct"], rows["floor"], rows["gateway"]
    return (
        f"  {calls:>5} x {service_s:g} s, round {index + 1}: served {d['served']}/{f['served']}/"
        f"{g['served']} (direct/floor/gateway); p50 {d['p50_ms']:.0f}/{f['p50_ms']:.0f}/"
        f"{g['p50_ms']:.0f} ms, p99 {d['p99_ms']:.0f}/{f['p99_ms']:.0f}/{g['p99_ms']:.0f} ms; "
        f"RSS/call (peak, mid-burst) floor {f['rss_kb_per_call']:.1f}, "
        f"{f['rss_mid_kb_per_call']:.1f} KB, gateway {g['rss_kb_per_call']:.1f}, "
        f"{g['rss_mid_kb_per_call']:.1f} KB; "
        f"CPU/call floor {f['cpu_ms_per_call']:.2f} ms, gateway {g['cpu_ms_per_call']:.2f} ms; "
        f"pool wait {g['pool_wait_s']:g} s, waiting mid-burst "
        f"{g['mid_burst']['upstream_calls_waiting']:g}"
    )


def _find(results: dict[str, Any], calls: int, service_s: float) -> dict[str, Any] | None:
    for entry in results["bursts"]:
        if entry["calls"] == calls and entry["service_s"] == service_s:
            found: dict[str, Any] = entry
            return found
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 28's targets, where this run has the burst they name (the largest one stands in
    for the 2,000 of 20 s and the RSS figure in a quick run)."""
    out: list[dict[str, Any]] = []
    ten = _find(results, 1000, 10.0)
    if ten is not None:
        g = ten["gateway"]
        out.append(
            {
                "target": "1,000 calls of 10 s: all served, added p50 <= 500 ms, no pool wait",
                "value": f"served {g['all_served']}, +{g['added_p50_ms']:.0f} ms, "
                f"wait {g['pool_wait_s']:g} s",
                "met": g["all_served"] and g["added_p50_ms"] <= 500 and g["pool_wait_s"] == 0,
            }
        )
    largest = max(results["bursts"], key=lambda e: (e["calls"], e["service_s"]))
    g, f = largest["gateway"], largest["floor"]
    name = f"{largest['calls']:,} calls of {largest['service_s']:g} s"
    out.append(
        {
            "target": f"{name}: all served, added p50 <= the floor's + 500 ms",
            "value": f"served {g['all_served']}, gateway +{g['added_p50_ms']:.0f} ms, "
            f"floor +{f['added_p50_ms']:.0f} ms",
            "met": g["all_served"] and largest["gateway_over_floor_p50_ms"] <= 500,
        }
    )
    out.append(
        {
            "target": f"{name}: RSS per call in flight <= 40 KB",
            "value": f"{g['rss_kb_per_call']:.1f} KB at the peak, {g['rss_mid_kb_per_call']:.1f} "
            f"mid-burst (floor {f['rss_kb_per_call']:.1f}, {f['rss_mid_kb_per_call']:.1f})",
            "met": g["rss_kb_per_call"] <= 40,
        }
    )
    return out


def render(results: dict[str, Any]) -> str:
    lines = [
        "| burst | side | all served | p50 / p99 s | added p50 / p99 ms | CPU ms/call "
        "| RSS KB/call in flight: peak (range) | mid-burst |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for entry in results["bursts"]:
        burst_name = f"{entry['calls']:,} x {entry['service_s']:g} s"
        for side in ("direct", "floor", "gateway"):
            s = entry[side]
            lo, hi = s["rss_kb_per_call_range"]
            rss = "" if side == "direct" else f"{s['rss_kb_per_call']:.1f} ({lo:.1f}-{hi:.1f})"
            cpu = "" if side == "direct" else f"{s['cpu_ms_per_call']:.2f}"
            mid = "" if side == "direct" else f"{s['rss_mid_kb_per_call']:.1f}"
            lines.append(
                f"| {burst_name} | {side} | {'yes' if s['all_served'] else 'NO'} "
                f"| {s['p50_ms'] / 1000:.2f} / {s['p99_ms'] / 1000:.2f} "
                f"| {s['added_p50_ms']:+.0f} / {s['added_p99_ms']:+.0f} | {cpu} | {rss} | {mid} |"
            )
    lines += [
        "",
        "| burst | gateway pool wait s | upstream calls waiting mid-burst "
        "| calls in flight mid-burst | refused | MEDIAGATE_MAX_INFLIGHT (fds) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for entry in results["bursts"]:
        g = entry["gateway"]
        lines.append(
            f"| {entry['calls']:,} x {entry['service_s']:g} s | {g['pool_wait_s']:g} "
            f"| {g['waiting_mid_burst']:g} | {g['in_flight_mid_burst']:g} | {g['refused']:g} "
            f"| {g['max_inflight']:,.0f} ({g['max_fds']:,.0f}) |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for target in results["targets"]:
        lines.append(
            f"| {target['target']} | {target['value']} | {'met' if target['met'] else 'MISSED'} |"
        )
    return "\n".join(lines)


def main() -> int:
    quick = modes.quick()
    config = modes.configured(QUICK, FULL, rounds=("BENCH_ROUNDS", int))
    out = modes.out_path("slow")
    print(f"slow calls in flight ({'quick' if quick else 'full'}); results to {out}", flush=True)
    results = run(config, lambda line: print(line, flush=True))
    modes.save("slow", results, render)
    return 0 if all(t["met"] for t in results["targets"]) else 1

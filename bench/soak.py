"""`python -m bench soak`: ten minutes of mixed traffic, the gateway's RSS and errors (issue 28).

One gateway in front of the stand-in, driven by `concurrency` clients, each starting a call at
most every `pace_ms`, taking in turn (one list, weighted by repetition):

- image generations (gpt-image-1, 64 KiB images, base64 answered) x4;
- video status polls (`GET /v1/videos/{id}`, one completed job) x4;
- video creates (`POST /v1/videos`, muse-video: a new job in the store each time) x1;
- video content downloads (`GET /v1/videos/{id}/content`, `download_mb` MB) x1.

The gateway's RSS is sampled every second; the figures are its RSS at minutes 1, 5 and 10 (at
10%, 50% and 100% of a shortened run), each the median of the samples in the 5 s before that
mark. The issue's target: those three within 10% of each other (largest over smallest ≤ 1.10),
and 0 errors. Writes bench/soak-results.json (BENCH_SOAK_OUT).

`BENCH_SOAK_S` sets the length in seconds (default 600); `BENCH_QUICK=1` makes it 120.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import modes
from .modes import Log
from .runner import (
    CLIENT_KEY,
    IMAGE_MODEL,
    MB,
    PROMPT,
    VIDEO_MODEL,
    _http,
    _percentile,
    gateway,
    image_body,
    make_video,
)

MODE = "soak"
MARKS = (0.1, 0.5, 1.0)  # minutes 1, 5 and 10 of ten


@dataclass(frozen=True)
class Config:
    duration_s: float = 600.0
    concurrency: int = 8
    pace_ms: float = 25.0  # each client starts a call at most this often (<= 320 calls/s)
    download_mb: int = 4
    created_video_kb: int = 256  # the content size of the videos the soak creates
    sample_s: float = 1.0
    window_s: float = 5.0  # each mark's RSS: the median of the samples this long before it
    limit: float = 1.10  # largest over smallest RSS at the marks
    pin: bool = True


FULL = Config()
QUICK = Config(duration_s=120.0)


def mix(gw: str, video_id: str, config: Config) -> dict[str, Any]:
    """The calls the clients take in turn (weights by repetition)."""
    generate = _http("POST", f"{gw}/v1/images/generations", CLIENT_KEY, image_body(IMAGE_MODEL))
    poll = _http("GET", f"{gw}/v1/videos/{video_id}", CLIENT_KEY)
    prompt = f"{PROMPT} [bench:bytes={config.created_video_kb * 1024}]"
    video = {"model": VIDEO_MODEL, "prompt": prompt, "size": "720x1280", "seconds": "4"}
    create = _http("POST", f"{gw}/v1/videos", CLIENT_KEY, video)
    download = _http("GET", f"{gw}/v1/videos/{video_id}/content", CLIENT_KEY)
    order = [generate, poll, generate, poll, create, generate, poll, generate, poll, download]
    return {"kind": "mix", "scenarios": order}


def at_mark(samples: list[tuple[float, float]], mark_s: float, window_s: float) -> float:
    """The median RSS (MB) of the samples in the `window_s` before `mark_s`."""
    near = [rss for t, rss in samples if mark_s - window_s <= t <= mark_s]
    if not near:  # a run shorter than a sample: the closest one
        near = [min(samples, key=lambda s: abs(s[0] - mark_s))[1]]
    return statistics.median(near)


def run(config: Config, log: Log = print) -> dict[str, Any]:
    results = modes.header(MODE, config)
    samples: list[tuple[float, float]] = []
    with modes.stack(pin=config.pin) as stack, gateway(stack, "gateway") as (proc, gw):
        _, video_id = make_video(stack.upstream_url, gw, config.download_mb * MB)
        scenario = mix(gw, video_id, config)
        results["idle_rss_mb"] = proc.rss_kb() * 1024 / MB
        cpu_before = proc.cpu_s()
        done = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not done.wait(config.sample_s):
                try:
                    samples.append((time.monotonic() - started, proc.rss_kb() * 1024 / MB))
                except (OSError, KeyError, ValueError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        log(f"soak: {config.duration_s:g} s of mixed traffic at c={config.concurrency}")
        try:
            result = stack.loader.run(
                scenario, config.concurrency, config.duration_s, pace_ms=config.pace_ms
            )
        finally:
            done.set()
            sampler.join()
        results["gateway_cpu_s"] = proc.cpu_s() - cpu_before
        results["gateway_alive"] = proc.alive()
    marks = [
        {
            "at_s": round(fraction * config.duration_s, 1),
            "rss_mb": at_mark(samples, fraction * config.duration_s, config.window_s),
        }
        for fraction in MARKS
    ]
    rss = [mark["rss_mb"] for mark in marks]
    ratio = max(rss) / min(rss) if samples and min(rss) > 0 else float("nan")
    latencies = result["latencies_ms"]
    results.update(
        {
            "requests": len(latencies),
            "rps": len(latencies) / result["elapsed_s"] if result["elapsed_s"] else 0.0,
            "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99),
            "mb_read": result["bytes"] / MB,
            "errors": result["errors"],
            "error_sample": result["error_sample"],
            "marks": marks,
            "rss_ratio": ratio,
            "peak_rss_mb": max((rss for _, rss in samples), default=float("nan")),
            "samples": [[round(t, 1), round(r, 2)] for t, r in samples],
            "met": bool(result["errors"] == 0 and ratio <= config.limit),
        }
    )
    return results


def render(results: dict[str, Any]) -> str:
    config = results["config"]
    marks = " / ".join(f"{m['rss_mb']:.1f}" for m in results["marks"])
    at = " / ".join(f"{m['at_s']:g}" for m in results["marks"])
    return "\n".join(
        [
            f"Soak: {config['duration_s']:g} s of mixed traffic (generations, polls, video "
            f"creates, {config['download_mb']} MB downloads) at c={config['concurrency']}; "
            f"{results['commit']}, {results['date']}",
            "",
            "| requests | req/s | p50 / p99 ms | errors | idle RSS MB | RSS MB at "
            f"{at} s | largest / smallest | peak RSS MB | target (≤ {config['limit']:.2f}x, "
            "0 errors) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {results['requests']:,} | {results['rps']:.0f} | {results['p50_ms']:.2f} / "
            f"{results['p99_ms']:.2f} | {results['errors']} | {results['idle_rss_mb']:.1f} | "
            f"{marks} | {results['rss_ratio']:.3f} | {results['peak_rss_mb']:.1f} | "
            f"{'met' if results['met'] else 'MISSED'} |",
        ]
    )


def main() -> int:
    config = modes.configured(QUICK, FULL, duration_s=("BENCH_SOAK_S", float))
    out = modes.out_path(MODE)
    print(f"bench soak ({config.duration_s:g} s); results to {out}", flush=True)
    results = run(config, log=lambda line: print(line, flush=True))
    modes.save(MODE, results, render)
    return 0 if results["met"] else 1

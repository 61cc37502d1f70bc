"""`python -m bench download`: 200 MB video content downloads at concurrency 4 (issue 28).

One completed video of `size_mb` MB (the stand-in streams it from one precomputed block, so the
upstream holds no copy) downloaded by 4 clients at once, `GET /v1/videos/{id}/content`, in
alternating rounds on each side:

- direct: the stand-in itself (its video id, the upstream key);
- floor: `bench.floor` streaming the same content through (aiohttp, chunk by chunk);
- mediagate: the gateway's own video id for the same content (bench.runner.make_video, as the
  pass-through bench's content pair does), streamed through its content route;
- LiteLLM: when BENCH_LITELLM is set, a video created through its proxy and downloaded from it.

Each round is the 4 downloads, once each. Figures: MB/s (bytes over the round's time, median
of the rounds, with their range; on a shared machine the noisiest figure), each proxy's CPU
per download and per MB (the steadiest), and its RSS growth (its peak during the round over
its RSS before, kernel high-water mark), and its CPU per download. Writes
bench/download-results.json (BENCH_DOWNLOAD_OUT). `BENCH_QUICK=1`: 3 rounds;
`BENCH_DOWNLOAD_MB` sets the size (default 200).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import httpx2

from . import modes
from .modes import Log, Side, fmt
from .runner import (
    CLIENT_KEY,
    LITELLM_KEY,
    MB,
    PROMPT,
    UPSTREAM_KEYS,
    VIDEO_MODEL,
    Stack,
    _http,
    _litellm_version,
    gateway,
    make_video,
)

MODE = "download"


@dataclass(frozen=True)
class Config:
    size_mb: int = 200
    concurrency: int = 4
    rounds: int = 5
    pin: bool = True


FULL = Config()
QUICK = Config(rounds=3)


def litellm_video(url: str, size: int) -> str:
    """A completed video of `size` bytes created through LiteLLM's proxy: its id there."""
    prompt = f"{PROMPT} [bench:bytes={size}]"
    with httpx2.Client(timeout=60) as http:
        made = http.post(
            f"{url}/v1/videos",
            headers={"Authorization": f"Bearer {LITELLM_KEY}"},
            json={"model": VIDEO_MODEL, "prompt": prompt, "seconds": "4", "size": "720x1280"},
        )
        made.raise_for_status()
        video_id: str = made.json()["id"]
    return video_id


def _litellm_side(stack: Stack, found: tuple[Any, str] | str, size: int) -> Side | str:
    if isinstance(found, str):
        return found
    proc, url = found
    try:
        video_id = litellm_video(url, size)
    except (httpx2.HTTPError, KeyError, ValueError) as exc:
        return f"cannot create a video through it: {type(exc).__name__}: {str(exc)[:200]}"
    scenario = _http("GET", f"{url}/v1/videos/{video_id}/content", LITELLM_KEY)
    return Side("LiteLLM", scenario, proc)


def run(config: Config, log: Log = print) -> dict[str, Any]:
    results = modes.header(MODE, config)
    size = config.size_mb * MB
    with modes.stack(pin=config.pin) as stack, contextlib.ExitStack() as on:
        up = stack.upstream_url
        key = UPSTREAM_KEYS["default"]  # Muse's token group
        floor_proc, floor_url = on.enter_context(modes.floor(stack))
        gw_proc, gw = on.enter_context(gateway(stack, "gateway"))
        upstream_id, our_id = make_video(up, gw, size)
        content = f"/v1/videos/{upstream_id}/content"
        sides = [
            Side("direct", _http("GET", up + content, key)),
            Side("floor", _http("GET", floor_url + content, key), floor_proc),
            Side(
                "mediagate", _http("GET", f"{gw}/v1/videos/{our_id}/content", CLIENT_KEY), gw_proc
            ),
        ]
        theirs = _litellm_side(stack, on.enter_context(modes.litellm(stack, log)), size)
        if isinstance(theirs, str):
            results["litellm"] = {"status": theirs}
        else:
            assert theirs.proc is not None
            results["litellm"] = {"status": "measured", "version": _litellm_version(theirs.proc)}
            sides.append(theirs)
        results["idle_rss_mb"] = {s.label: s.proc.rss_kb() * 1024 / MB for s in sides if s.proc}
        log(f"download: {config.size_mb} MB x{config.concurrency}, {len(sides)} sides")
        modes.alternate(
            stack,
            sides,
            config.concurrency,
            config.rounds,
            max_requests=config.concurrency,
            warmup_s=0,
            rss=True,
            log=log,
        )
    results["sides"] = [modes.summarise(side, sides[0]) for side in sides]
    results["rounds"] = {side.label: side.rounds for side in sides}
    for row in results["sides"]:
        row["bytes_each_round"] = size * config.concurrency
    return results


def render(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"{config['size_mb']} MB video content downloads at c={config['concurrency']}; median "
        f"(min-max) of {config['rounds']} alternating rounds; {results['commit']}, "
        f"{results['date']}",
        "",
        "| side | MB/s | RSS growth MB | idle RSS MB | CPU ms/download | CPU ms/MB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    idle = results.get("idle_rss_mb") or {}
    size_mb = config["size_mb"]
    for row in results["sides"]:
        cpu = row["cpu_ms_per_request"]
        base = idle.get(row["side"])
        lines.append(
            f"| {row['side']} | {fmt(row['mb_per_s'], 0)} | {fmt(row.get('rss_growth_mb'))} "
            f"| {'-' if base is None else f'{base:.0f}'} | {'-' if cpu is None else f'{cpu:.0f}'} "
            f"| {'-' if cpu is None else f'{cpu / size_mb:.2f}'} | {row['errors']} |"
        )
    status = (results.get("litellm") or {}).get("status")
    if status and status != "measured":
        lines.append(f"| LiteLLM | {status} | | | | | |")
    return "\n".join(lines)


def main() -> int:
    config = modes.configured(QUICK, FULL, size_mb=("BENCH_DOWNLOAD_MB", int))
    out = modes.out_path(MODE)
    print(f"bench download ({'quick' if modes.quick() else 'full'}); results to {out}", flush=True)
    results = run(config, log=lambda line: print(line, flush=True))
    modes.save(MODE, results, render)
    return 1 if any(row["errors"] for row in results["sides"]) else 0

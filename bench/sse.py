"""`python -m bench sse`: the SSE relay, what a proxy adds to the first event (issue 28).

A streamed image generation (`"stream": true`, `partial_images`) on a route whose upstream
streams (gpt-image-2's official route: `stream: passthrough` in the catalog): the stand-in
answers the official event stream, `partial_images` partial events then the completed one, each
`gap_ms` after the one before, as a real generation sends its drafts. Measured at concurrency 8
(the issue's figure) and 1 (the relay alone: at 8 the streams run in step, so each first event
also waits behind the other seven), in alternating rounds, on each side:

- direct: the stand-in itself, with the upstream key;
- floor: `bench.floor` (a minimal aiohttp pass-through) relaying the same stream;
- mediagate: the client's request through the gateway (checked, priced, relayed event by event);
- LiteLLM: its proxy, when BENCH_LITELLM is set (the reference run answered HTTP 500).

The figure is the time to the first event (its `data:` line and the blank line ending it, as an
SSE client sees it), and what each proxy adds to it over direct, round by round; also the whole
stream's time and the proxy's CPU per stream. Writes bench/sse-results.json (BENCH_SSE_OUT).
`BENCH_QUICK=1`: 3 short rounds; `BENCH_SSE_GAP_MS` sets the gap between events (default 50).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Any

from . import modes
from .modes import Log, Side, fmt
from .runner import (
    CLIENT_KEY,
    LITELLM_KEY,
    PROMPT,
    UPSTREAM_KEYS,
    _http,
    _litellm_version,
    gateway,
)

MODE = "sse"
MODEL = "gpt-image-2"  # its official route relays the upstream's stream (catalog: passthrough)
LITELLM_MODEL = "gpt-image-1"  # what bench.runner's LiteLLM config names


@dataclass(frozen=True)
class Config:
    # 8: the issue's figure; 1: the relay's own cost, without the other streams' events (at
    # c=8 the streams run in step, so each first event waits behind the other seven).
    concurrencies: tuple[int, ...] = (8, 1)
    rounds: int = 5
    round_s: float = 2.0
    warmup_s: float = 0.5
    gap_ms: float = 50.0  # between the events (the first comes this long after the request)
    partial_images: int = 2
    image_kb: int = 256  # the completed image; the partial ones are a quarter of it
    pin: bool = True


FULL = Config()
QUICK = Config(rounds=3, round_s=1.0, warmup_s=0.3)


def body(model: str, gap_ms: float, partial_images: int) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": f"{PROMPT} [bench:gap_ms={gap_ms:g}]",
        "size": "1024x1024",
        "quality": "low",
        "stream": True,
        "partial_images": partial_images,
    }


def streamed(scenario: dict[str, Any]) -> dict[str, Any]:
    return scenario | {"first_event": True}


def run(config: Config, log: Log = print) -> dict[str, Any]:
    results = modes.header(MODE, config)
    results["litellm"] = None
    request = body(MODEL, config.gap_ms, config.partial_images)
    with (
        modes.stack(image_kb=config.image_kb, pin=config.pin) as stack,
        contextlib.ExitStack() as on,
    ):
        up = stack.upstream_url
        key = UPSTREAM_KEYS["official"]
        floor_proc, floor_url = on.enter_context(modes.floor(stack))
        gw_proc, gw = on.enter_context(gateway(stack, "gateway"))
        url = "/v1/images/generations"
        sides = [
            Side("direct", streamed(_http("POST", up + url, key, request))),
            Side("floor", streamed(_http("POST", floor_url + url, key, request)), floor_proc),
            Side("mediagate", streamed(_http("POST", gw + url, CLIENT_KEY, request)), gw_proc),
        ]
        found = on.enter_context(modes.litellm(stack, log))
        if isinstance(found, str):
            results["litellm"] = {"status": found}
        else:
            theirs = body(LITELLM_MODEL, config.gap_ms, config.partial_images)
            scenario = streamed(_http("POST", found[1] + url, LITELLM_KEY, theirs))
            check = stack.loader.run(scenario, 1, 30, max_requests=1)
            if check["errors"]:
                results["litellm"] = {
                    "status": f"cannot: {check['error_sample']}",
                    "version": _litellm_version(found[0]),
                }
                log(f"LiteLLM: {results['litellm']['status']}")
            else:
                results["litellm"] = {"status": "measured", "version": _litellm_version(found[0])}
                sides.append(Side("LiteLLM", scenario, found[0]))
        results["sides"], results["rounds"] = [], {}
        for concurrency in config.concurrencies:
            log(f"sse: {len(sides)} sides at c={concurrency}, {config.rounds} rounds")
            ours = [Side(side.label, side.scenario, side.proc) for side in sides]
            modes.alternate(
                stack,
                ours,
                concurrency,
                config.rounds,
                config.round_s,
                warmup_s=config.warmup_s,
                log=log,
            )
            for side in ours:
                row = modes.summarise(side, ours[0]) | {"concurrency": concurrency}
                results["sides"].append(row)
                results["rounds"][f"{side.label}, c={concurrency}"] = side.rounds
    return results


def render(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"SSE relay: {config['partial_images']} partial images "
        f"then the completed one, {config['gap_ms']:g} ms apart; median (min-max) of "
        f"{config['rounds']} alternating rounds; {results['commit']}, {results['date']}",
        "",
        "| side | conc. | first event p50 ms | added to the first event ms "
        "| whole stream p50 ms | CPU ms/stream | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["sides"]:
        cpu = row["cpu_ms_per_request"]
        lines.append(
            f"| {row['side']} | {row['concurrency']} | {fmt(row['p50_ms'])} "
            f"| {fmt(row.get('added_p50_ms'), sign=True)} "
            f"| {fmt(row.get('complete_p50_ms'))} | {'-' if cpu is None else f'{cpu:.2f}'} "
            f"| {row['errors']} |"
        )
    status = (results.get("litellm") or {}).get("status")
    if status and status != "measured":
        lines.append(f"| LiteLLM | | {status} | | | | |")
    return "\n".join(lines)


def main() -> int:
    config = QUICK if modes.quick() else FULL
    if os.environ.get("BENCH_SSE_GAP_MS"):
        config = replace(config, gap_ms=float(os.environ["BENCH_SSE_GAP_MS"]))
    out = modes.out_path(MODE)
    print(f"bench sse ({'quick' if modes.quick() else 'full'}); results to {out}", flush=True)
    results = run(config, log=lambda line: print(line, flush=True))
    modes.save(MODE, results, render)
    return 1 if any(row["errors"] for row in results["sides"]) else 0

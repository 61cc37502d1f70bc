"""The benchmark's results as Markdown tables (what docs/performance.md quotes)."""

from __future__ import annotations

import math
from typing import Any


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def _int(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def pairs_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | conc. | direct p50 / p99 ms | through p50 / p99 ms | added p50 / p99 ms "
        "| req/s direct / through | gateway CPU µs/req | gateway CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        errors = f" ({row['errors']} errors)" if row["errors"] else ""
        lines.append(
            f"| {row['pair']}{errors} | {row['concurrency']} "
            f"| {_ms(row['direct_p50_ms'])} / {_ms(row['direct_p99_ms'])} "
            f"| {_ms(row['through_p50_ms'])} / {_ms(row['through_p99_ms'])} "
            f"| {_signed(row['added_p50_ms'])} / {_signed(row['added_p99_ms'])} "
            f"| {_int(row['direct_rps'])} / {_int(row['through_rps'])} "
            f"| {_int(row['gateway_cpu_us'])} | {row['gateway_cpu_util'] * 100:.0f}% |"
        )
    return "\n".join(lines)


def memory_table(memory: dict[str, Any]) -> str:
    lines = [
        "| case | RSS before MB | peak RSS MB | growth MB | note |",
        "|---|---:|---:|---:|---|",
    ]
    video = memory.get("video")
    if video:
        lines.append(
            f"| {video['case']} | {video['rss_before_mb']:.0f} | {video['peak_rss_mb']:.0f} "
            f"| {video['peak_delta_mb']:+.1f} | {video['through_mb_per_s']:.0f} MB/s through "
            f"({video['direct_mb_per_s']:.0f} direct), gateway {video['gateway_cpu_s']:.2f} s CPU |"
        )
    b64 = memory.get("b64")
    if b64:
        lines.append(
            f"| {b64['case']} | {b64['rss_before_mb']:.0f} | {b64['peak_rss_mb']:.0f} "
            f"| {b64['peak_delta_mb']:+.0f} | {b64['bytes_in_flight_mb']:.0f} MB in flight: "
            f"peak = {b64['peak_over_in_flight']:.2f}x |"
        )
    return "\n".join(lines)


def targets_table(targets: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | limit | |", "|---|---:|---:|---|"]
    for target in targets:
        lines.append(
            f"| {target['target']} | {target['value']:.2f} {target['unit']} "
            f"| {'≥' if target.get('at_least') else '≤'} {target['limit']:g} {target['unit']} "
            f"| {'met' if target['met'] else 'MISSED'} |"
        )
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    config = results["config"]
    parts = [
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"Linux {machine['kernel']}, Python {machine['python']}; gateway pinned to CPU "
        f"{results['pinning']['gateway']}, upstream and load generator to CPU "
        f"{results['pinning']['upstream_and_load']}. {config['rounds']} alternating rounds of "
        f"{config['round_s']:g} s per side; medians across rounds. Images {config['image_kb']} "
        f"KiB, video content {config['video_kb']} KiB.",
        "",
        pairs_table(results["pairs"]),
    ]
    if results.get("variants"):
        parts += ["", pairs_table(results["variants"])]
    if results.get("client_loop"):
        parts += ["", pairs_table(results["client_loop"])]
    litellm = results.get("litellm")
    if litellm is not None and litellm.get("status") != "measured":
        parts += ["", f"LiteLLM: {litellm['status']}"]
    if results.get("others"):
        who = f"LiteLLM {litellm.get('version')}" if litellm and litellm.get("version") else ""
        title = "Other proxies in the same rounds" + (f" ({who})" if who else "")
        parts += ["", f"{title}:", "", pairs_table(results["others"])]
    if results.get("memory"):
        parts += ["", memory_table(results["memory"])]
    parts += ["", targets_table(results.get("targets", []))]
    return "\n".join(parts)

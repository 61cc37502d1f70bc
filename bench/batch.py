"""A 1,000-line images batch through the gateway (issue 27): `python -m bench batch`,
`make bench-batch`.

One gateway process (`python -m mediagate serve`, SQLite, as the newcomer runs it) in front of
the bench's stand-in upstream (bench.standin: precomputed answers of `image_kb` KiB images; the
simulator draws every image, and on one process its drawing, not the gateway, would be what
is measured), each in a process of its own, so the RSS measured is the gateway's alone. For
each batch concurrency (MEDIAGATE_BATCH_CONCURRENCY) it uploads a JSONL of `lines` image
generations whose prompts ask the stand-in to take `latency_s` per image (`[bench:sleep]`,
standing in for a generation's time), creates the batch with the real `openai` SDK, and waits
for it, measuring: the upload and the create (every line judged and priced), the wall time to
`completed`, the upstream calls in flight (`mediagate_upstream_calls_in_flight`, sampled every
20 ms: the most seen), the gateway's peak RSS (VmHWM, reset first) and its growth over idle,
and checks the output file holds every line once. Results: bench/batch-results.json and a
Markdown table.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai

from .memory import gateway
from .modes import configured, header, save
from .procs import Proc, free_port, steady_env, wait_port

KEY = "sk-bench-batcher-" + "2" * 24
MODEL = "gpt-image-2-web"
_IN_FLIGHT = re.compile(r"^mediagate_upstream_calls_in_flight\{[^}]*\} ([0-9.e+]+)$", re.M)


@dataclass(frozen=True)
class Config:
    lines: int = 1000
    latency_s: float = 0.5
    concurrencies: tuple[int, ...] = (8, 64)
    image_kb: int = 64


QUICK = Config(lines=40, latency_s=0.05, concurrencies=(8,), image_kb=16)


def _keys_file(path: Path) -> Path:
    import hashlib

    digest = hashlib.sha256(KEY.encode()).hexdigest()
    path.write_text(json.dumps({"keys": [{"name": "batcher", "sha256": digest}]}))
    return path


def _jsonl(config: Config) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"shot-{i}",
                "method": "POST",
                "url": "/v1/images/generations",
                "body": {
                    "model": MODEL,
                    "prompt": f"product shot {i} [bench:sleep={config.latency_s}]",
                },
            }
        ).encode()
        + b"\n"
        for i in range(config.lines)
    )


@contextlib.contextmanager
def standin(work: Path, image_kb: int) -> Iterator[str]:
    """The stand-in upstream in a process of its own: its URL."""
    port = free_port()
    args = [sys.executable, "-m", "bench.standin", "--port", str(port)]
    proc = Proc("standin", [*args, "--image-kb", str(image_kb)], work, steady_env())
    try:
        wait_port(proc, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def _in_flight(url: str) -> float:
    text = httpx2.get(f"{url}/metrics", timeout=5).text
    return sum(float(v) for v in _IN_FLIGHT.findall(text))


def _run(work: Path, sim_url: str, config: Config, concurrency: int) -> dict[str, Any]:
    name = f"batch-c{concurrency}"
    keys = _keys_file(work / f"{name}-keys.json")
    extra = {
        "MEDIAGATE_KEYS_FILE": str(keys),
        "MEDIAGATE_BATCH_CONCURRENCY": str(concurrency),
        "MEDIAGATE_BATCH_POLL_INTERVAL_S": "0.2",
    }
    with gateway(work, sim_url, name, **extra) as (proc, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=600)
        idle_kb = proc.rss_kb()
        exact = proc.reset_hwm()
        seen = {"in_flight": 0.0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(httpx2.HTTPError):
                    seen["in_flight"] = max(seen["in_flight"], _in_flight(url))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        upload = client.files.create(
            file=("shots.jsonl", io.BytesIO(_jsonl(config))), purpose="batch"
        )
        uploaded = time.perf_counter()
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/images/generations", completion_window="24h"
        )
        created = time.perf_counter()
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.1)
            batch = client.batches.retrieve(batch.id)
        finished = time.perf_counter()
        done.set()
        sampler.join()
        peak_kb = proc.hwm_kb() if exact else proc.rss_kb()
        output = client.files.content(batch.output_file_id).text if batch.output_file_id else ""
        ids = [json.loads(line)["custom_id"] for line in output.splitlines()]
        return {
            "concurrency": concurrency,
            "lines": config.lines,
            "status": batch.status,
            "completed": batch.request_counts.completed if batch.request_counts else 0,
            "failed": batch.request_counts.failed if batch.request_counts else 0,
            "every_line_once": sorted(ids) == sorted(f"shot-{i}" for i in range(config.lines)),
            "upload_s": round(uploaded - started, 3),
            "create_s": round(created - uploaded, 3),
            "run_s": round(finished - created, 2),
            "floor_s": round(config.lines * config.latency_s / concurrency, 2),
            "upstream_in_flight_max": seen["in_flight"],
            "idle_rss_mb": round(idle_kb / 1024, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "output_mb": round(len(output) / 1e6, 1),
            "cost_usd": getattr(batch, "cost_usd", None),
        }


def render(results: dict[str, Any]) -> str:
    rows = [
        "| concurrency | lines | status | upload | create (judge + price) | run "
        "| floor (lines x latency / c) | upstream in flight, max | RSS idle -> peak | output |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        rows.append(
            f"| {r['concurrency']} | {r['lines']} | {r['status']} ({r['completed']} ok, "
            f"{r['failed']} failed{', each once' if r['every_line_once'] else ', NOT each once'}) "
            f"| {r['upload_s']} s | {r['create_s']} s | {r['run_s']} s | {r['floor_s']} s "
            f"| {r['upstream_in_flight_max']:.0f} | {r['idle_rss_mb']} -> {r['peak_rss_mb']} MB "
            f"| {r['output_mb']} MB |"
        )
    return "\n".join(rows)


def main() -> int:
    config = configured(QUICK, Config())
    results = header("batch", config)
    runs = []
    with tempfile.TemporaryDirectory(prefix="mediagate-bench-batch-") as tmp:
        work = Path(tmp)
        with standin(work, config.image_kb) as sim_url:
            for concurrency in config.concurrencies:
                runs.append(_run(work, sim_url, config, concurrency))
                print(json.dumps(runs[-1]), flush=True)
    results["runs"] = runs
    save("batch", results, render)
    return 0 if all(r["status"] == "completed" and r["every_line_once"] for r in runs) else 1

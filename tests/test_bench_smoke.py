"""The benchmark (`make bench`) in a tiny configuration, so it cannot rot: the same processes
(stand-in upstream, gateway, load generator), every pair, the variants, both memory cases, the
targets, the JSON and the tables, in a few seconds. The numbers themselves are not checked."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from bench.report import render
from bench.runner import Config, run

SMOKE = Config(
    rounds=2,
    round_s=0.05,
    warmup_s=0.02,
    concurrencies=(1, 4),
    image_kb=16,
    video_kb=64,
    huge_b64_mb=0.5,
    huge_concurrency=3,
    huge_repeats=1,
    big_video_mb=4,
    variant_concurrencies=(2,),
    client_loop_concurrency=2,
    # An A/B against a checkout: this one again (its rows land beside LiteLLM's).
    compare_dir=str(Path(__file__).resolve().parent.parent),
    litellm=False,
    pin=False,
)
PAIRS = {
    "gpt-image-1 (pass-through)",
    "sora_image (chat + download)",
    "video status",
    "video content",
}


def test_the_benchmark_measures_every_pair_and_reports_every_target() -> None:
    results = run(SMOKE, log=lambda line: None)

    rows = results["pairs"]
    assert {(r["pair"], r["concurrency"]) for r in rows} == {
        (pair, c) for pair in PAIRS for c in SMOKE.concurrencies
    }
    compared = [r["pair"] for r in results["others"]]
    other = f"gpt-image-1 via {Path(str(SMOKE.compare_dir)).name} (BENCH_COMPARE_DIR)"
    assert compared == [other] * len(SMOKE.concurrencies) + [f"{other}, httpx2 client loop"]
    (looped,) = results["client_loop"]  # the pass-through pair again, through an httpx2 client
    assert looped["concurrency"] == SMOKE.client_loop_concurrency
    for row in [*rows, *results["variants"], looped]:
        assert row["errors"] == 0, (row["pair"], row["error_sample"])
        assert row["rounds"] == SMOKE.rounds
        for figure in ("direct_p50_ms", "through_p99_ms", "added_p50_ms", "through_rps"):
            assert math.isfinite(row[figure]), (row["pair"], figure)
        assert row["gateway_cpu_us"] >= 0  # /proc counts in 10 ms ticks: a tiny round may be 0
    assert any(row["gateway_cpu_us"] > 0 for row in rows)
    assert any("warning" in r["variant"] for r in results["variants"])

    memory = results["memory"]
    assert memory["video"]["bytes"] == SMOKE.big_video_mb * 1_000_000
    assert memory["video"]["errors"] == 0 and memory["b64"]["errors"] == 0
    assert memory["b64"]["peak_rss_mb"] >= memory["b64"]["rss_before_mb"] > 0
    assert len(results["targets"]) == 6
    assert all(isinstance(t["met"], bool) for t in results["targets"])

    table = render(json.loads(json.dumps(results)))  # what `make bench` writes, read back
    for pair in PAIRS:
        assert pair in table
    assert "MISSED" in table or "met" in table


def test_the_memory_benchmark_runs_both_attacks_and_the_honest_load() -> None:
    """`make bench-memory` (bench/memory.py) in a tiny configuration: the simulator and the
    gateways as processes, both attacks answered as they should be, RSS sampled often."""
    from bench.memory import Config as MemoryConfig
    from bench.memory import render as render_memory
    from bench.memory import run as run_memory

    tiny = MemoryConfig(
        bodies=3, body_mib=1, bombs=2, bomb_mib=8, answers=2, answer_mib=1, room_mib=4, settle_s=0.1
    )
    results = run_memory(tiny, log=lambda line: None)
    bodies, bombs = results["attacks"]
    assert set(bodies["answers"]) <= {"429 insufficient_quota", "429 concurrency_limit_exceeded"}
    assert sum(bodies["answers"].values()) == tiny.bodies
    assert bombs["answers"] == {"502 bad_upstream_response": tiny.bombs}
    assert [row["answers"] for row in results["answers"]] == [{"200": tiny.answers}] * 2
    for row in [bodies, bombs, *results["answers"]]:
        assert row["samples"] > 0 and row["peak_rss_mb"] > 0 and row["idle_rss_mb"] > 0
    assert results["victim_after"]["status"] == 200
    assert "gzip bombs" in render_memory(json.loads(json.dumps(results)))


def test_the_sse_mode_times_the_first_event_on_every_side() -> None:
    """`python -m bench sse`, tiny: the stand-in streams partial images, and the direct, floor
    and gateway sides each deliver whole streams, their first event timed."""
    from bench import sse

    tiny = sse.Config(concurrencies=(2,), rounds=1, round_s=0.2, warmup_s=0.05, gap_ms=5)
    results = sse.run(replace(tiny, image_kb=8, pin=False), log=lambda line: None)
    assert [row["side"] for row in results["sides"]] == ["direct", "floor", "mediagate"]
    for row in results["sides"]:
        assert row["errors"] == 0, row["error_sample"]
        assert row["requests"] > 0
        # The first event comes before the stream ends (two partial images, then the image).
        assert row["p50_ms"]["median"] < row["complete_p50_ms"]["median"]
    assert "skipped" in results["litellm"]["status"]
    assert "mediagate" in sse.render(json.loads(json.dumps(results)))


def test_the_download_mode_streams_the_whole_video_through_each_side() -> None:
    from bench import download

    tiny = download.Config(size_mb=2, concurrency=2, rounds=1, pin=False)
    results = download.run(tiny, log=lambda line: None)
    assert [row["side"] for row in results["sides"]] == ["direct", "floor", "mediagate"]
    for label, rounds in results["rounds"].items():
        assert [r["bytes"] for r in rounds] == [2 * 2_000_000], label
        assert [r["errors"] for r in rounds] == [0], label
    assert all("rss_growth_mb" in row for row in results["sides"][1:])
    assert "floor" in download.render(json.loads(json.dumps(results)))


def test_the_soak_mode_samples_rss_at_its_marks_under_mixed_traffic() -> None:
    from bench import soak

    tiny = soak.Config(duration_s=2.0, concurrency=2, pace_ms=10, download_mb=1, sample_s=0.2)
    results = soak.run(replace(tiny, window_s=0.5, pin=False), log=lambda line: None)
    assert results["errors"] == 0, results["error_sample"]
    assert results["requests"] >= 10  # every kind of call in the mix at least once
    assert [mark["at_s"] for mark in results["marks"]] == [0.2, 1.0, 2.0]
    assert all(mark["rss_mb"] > 0 for mark in results["marks"])
    assert isinstance(results["met"], bool)
    assert "RSS MB at" in soak.render(json.loads(json.dumps(results)))


def test_python_m_bench_names_its_modes_and_refuses_an_unknown_one() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench", "no-such-mode"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 2
    for mode in ("sse", "download", "soak", "memory"):
        assert mode in done.stderr


def test_the_slow_calls_benchmark_bursts_through_the_gateway_and_the_floor() -> None:
    """`python -m bench slow` (bench/slow.py) in a tiny configuration: a burst of slow calls
    direct, through the floor and through a gateway with its default settings, the capacity
    figures read from its /metrics, the targets and the tables."""
    from bench.slow import Config as SlowConfig
    from bench.slow import render as render_slow
    from bench.slow import run as run_slow

    results = run_slow(SlowConfig(bursts=((6, 1.0),), rounds=1, warmup_calls=2, pin=False))
    (entry,) = results["bursts"]
    for side in ("direct", "floor", "gateway"):
        assert entry[side]["all_served"], entry["rounds"][0][side]["error_sample"]
        assert entry[side]["p50_ms"] >= 1000  # the upstream's service time is in every call
    gateway = entry["gateway"]
    assert gateway["in_flight_mid_burst"] == 6  # the burst was in flight at once
    assert gateway["refused"] == 0 and gateway["pool_wait_s"] == 0
    assert gateway["max_inflight"] > 6  # the default, from the file-descriptor ceiling
    assert entry["rounds"][0]["gateway"]["upstream_calls"] == 6
    assert math.isfinite(gateway["rss_kb_per_call"]) and math.isfinite(gateway["cpu_ms_per_call"])
    assert all(isinstance(t["met"], bool) for t in results["targets"])
    table = render_slow(json.loads(json.dumps(results)))
    assert "gateway" in table and "floor" in table


def test_the_polls_benchmark_measures_the_gateway_against_its_floor() -> None:
    """`python -m bench polls` (bench/polls.py) in a tiny configuration: the gateway, the
    read-limited one and the floor, in alternating rounds, each with its CPU per poll."""
    from bench.polls import Config as PollsConfig
    from bench.polls import render as render_polls
    from bench.polls import run as run_polls

    tiny = PollsConfig(rounds=2, round_s=0.1, warmup_s=0.05, concurrency=2, pin=False)
    results = run_polls(tiny, log=lambda line: None)
    rows = {row["side"]: row for row in results["rows"]}
    floor = "floor (aiohttp, the JSON from a dict)"
    assert set(rows) == {"gateway", "gateway, read limit on", floor}
    for row in rows.values():
        assert row["errors"] == 0, (row["side"], row["error_sample"])
        assert row["rounds"] == tiny.rounds and row["requests"] > 0
        assert row["cpu_us_per_poll"] >= 0  # /proc counts 10 ms ticks: a tiny round may be 0
    assert "over_floor" in rows["gateway"] and "over_floor" not in rows[floor]
    assert "CPU µs/poll" in render_polls(json.loads(json.dumps(results)))


def test_the_startup_benchmark_times_a_cold_start_and_the_import() -> None:
    """`python -m bench startup` (bench/startup.py) with one spawn and one import."""
    from bench.startup import Config as StartupConfig
    from bench.startup import render as render_startup
    from bench.startup import run as run_startup

    tiny = StartupConfig(spawns=1, imports=1, settle_s=0.05, pin=False)
    results = run_startup(tiny, log=lambda line: None)
    (row,) = results["rows"]
    assert 0 < row["first_200_min_s"] < 60
    assert row["import_median_ms"] > 0 and row["importtime_median_ms"] > 0
    assert row["idle_rss_median_mb"] > 0
    assert row["heaviest_imports"]
    assert "first 200" in render_startup(json.loads(json.dumps(results)))


def test_the_b64_benchmark_relays_big_answers_through_the_gateway_and_the_floor() -> None:
    """`python -m bench b64` (bench/b64.py) in a tiny configuration: the stand-in's genuine
    base64 images, the gateway and the floor (bench/floor.py) in alternating rounds, an A/B
    side (this checkout again), every figure reported."""
    from bench.b64 import Config as B64Config
    from bench.b64 import render as render_b64
    from bench.b64 import run as run_b64

    tiny = B64Config(
        sizes_mb=(0.5,),
        ns=(1, 2),
        concurrencies=(2,),
        rounds=2,
        round_mb=2.0,
        pin=False,
        compare_dir=str(Path(__file__).resolve().parent.parent),
    )
    results = run_b64(tiny, log=lambda line: None)
    cases = results["cases"]
    assert [(row["n"], row["concurrency"]) for row in cases] == [(1, 2), (2, 2)]
    for row in cases:
        floor, ours, compared = row["sides"]
        assert (floor, ours) == ("floor", "mediagate") and "BENCH_COMPARE_DIR" in compared
        for side in row["sides"].values():
            assert side["errors"] == 0, side["error_sample"]
            assert len(side["rounds"]) == tiny.rounds
            # Every side relayed every byte of every call: n images of 0.5 MB of base64.
            for done in side["rounds"]:
                assert done["mb"] >= done["calls"] * row["n"] * 0.5
            assert side["mb_per_s"]["median"] > 0
            assert side["peak_rss_over_in_flight"]["median"] > 0
        assert isinstance(row["met"], bool)
    assert "CPU ratio" in render_b64(json.loads(json.dumps(results)))


def test_the_reqlog_benchmark_compares_the_log_on_and_off_and_measures_it_in_process() -> None:
    """`python -m bench reqlog` (bench/reqlog.py) tiny: the two gateways in alternating rounds
    (every request of the log-on side a row once it stopped, none on the other), and the
    log's own CPU per request in process."""
    from bench.reqlog import Config as ReqlogConfig
    from bench.reqlog import render as render_reqlog
    from bench.reqlog import run as run_reqlog

    tiny = ReqlogConfig(rounds=1, round_s=0.2, warmup_s=0.05, concurrency=2, rows=600, pin=False)
    results = run_reqlog(tiny, log=lambda line: None)
    on, off = results["ab"]["sides"]
    assert (on["side"], off["side"]) == ("log on", "log off")
    assert on["errors"] == off["errors"] == 0
    # The warm-up's requests are rows too.
    assert on["rows_logged"] >= on["requests"] > 0 and off["rows_logged"] == 0
    (inside,) = results["in_process"]
    assert inside["rows"] == 600 and inside["total_ms_per_request"] > 0
    assert "log on minus off" in render_reqlog(json.loads(json.dumps(results)))

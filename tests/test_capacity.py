"""Calls in flight (issue 28): the replica's bound (MEDIAGATE_MAX_INFLIGHT: a fast 503 with
Retry-After past it, nothing sent or charged), the upstream calls per route and the one queue
they may wait in (a route's `max_concurrent`), all seen from outside: the SDK over HTTP against
the simulator, whose answers are held back (`[sim:holdbody=LABEL]`) until the test lets them go,
the gauges read from /metrics; and `mediagate serve` raising its own file limit."""

from __future__ import annotations

import concurrent.futures
import resource
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mediagate.settings import Settings, inflight_for

from .conftest import Gateway, Sim, wait_until
from .processes import clean_env, serving

MODEL = "gpt-image-2"
ROUTE = "gpt-image-2.official"
HELD = "a kite [sim:padded=1][sim:holdbody={label}]"  # a valid answer, its body held back


def metrics(gateway: Gateway) -> dict[str, float]:
    """The capacity families from /metrics, as {name or name{label}: value}."""
    with gateway.http() as http:
        text = http.get("/metrics").text
    seen: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "call" in sample.name or "inflight" in sample.name:
                label = sample.labels.get("route") or sample.labels.get("area")
                seen[f"{sample.name}{{{label}}}" if label else sample.name] = sample.value
    return seen


def generations(sim: Sim) -> int:
    return len(sim.sent("/v1/images/generations"))


def test_past_max_inflight_a_call_is_a_503_at_once_sent_nowhere_and_charged_nothing(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(max_inflight=2)
    sdk = gateway.sdk()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = [
            pool.submit(sdk.images.generate, model=MODEL, prompt=HELD.format(label=label))
            for label in ("a", "b")
        ]
        wait_until(lambda: generations(sim) == 2, timeout_s=20)
        seen = metrics(gateway)
        assert seen["mediagate_calls_in_flight"] == 2
        assert seen["mediagate_max_inflight"] == 2
        assert seen[f"mediagate_upstream_calls_in_flight{{{ROUTE}}}"] == 2

        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.images.generate(model=MODEL, prompt="a third kite")
        answered_in = time.monotonic() - started

        sim.state.faults.release("a")
        sim.state.faults.release("b")
        assert all(future.result(timeout=60).data for future in held)

    refused = caught.value.response
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_overloaded"
    assert "MEDIAGATE_MAX_INFLIGHT" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers.get("x-should-retry", "true") == "true"  # the SDKs retry a 503
    assert answered_in < 1.0  # at once: nothing waited for
    assert generations(sim) == 2  # the upstream never saw the third call
    wait_until(lambda: metrics(gateway)["mediagate_calls_in_flight"] == 0)
    seen = metrics(gateway)
    assert seen["mediagate_calls_refused_total{images}"] == 1
    assert seen[f"mediagate_upstream_calls_in_flight{{{ROUTE}}}"] == 0
    # Both calls went out without waiting for a slot: the pool has no cap of its own.
    assert seen[f"mediagate_upstream_call_wait_seconds_count{{{ROUTE}}}"] == 2
    assert seen[f"mediagate_upstream_call_wait_seconds_sum{{{ROUTE}}}"] == 0
    with gateway.http() as http:
        totals = http.get("/v1/usage").json()["totals"]
    assert totals["requests"] == 2  # the refused call was never metered, let alone charged


def test_a_route_at_its_bound_queues_visibly_and_the_queued_call_is_sent_once(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    overlay = tmp_path / "bounded.yaml"
    overlay.write_text(yaml.safe_dump({"routes": {ROUTE: {"max_concurrent": 1}}}))
    gateway = make_gateway(config=overlay)
    sdk = gateway.sdk()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(sdk.images.generate, model=MODEL, prompt=HELD.format(label="q1"))
        wait_until(lambda: generations(sim) == 1, timeout_s=20)
        second = pool.submit(sdk.images.generate, model=MODEL, prompt="a second kite")
        wait_until(
            lambda: metrics(gateway).get(f"mediagate_upstream_calls_waiting{{{ROUTE}}}") == 1
        )
        assert generations(sim) == 1  # queued in the gateway, not sent
        sim.state.faults.release("q1")
        assert first.result(timeout=60).data
        answer = second.result(timeout=60)
    assert answer.data
    assert generations(sim) == 2  # each sent once: the wait was no attempt, nothing retried
    seen = metrics(gateway)
    assert seen[f"mediagate_upstream_calls_waiting{{{ROUTE}}}"] == 0
    assert seen[f"mediagate_upstream_call_wait_seconds_count{{{ROUTE}}}"] == 2
    assert seen[f"mediagate_upstream_call_wait_seconds_sum{{{ROUTE}}}"] > 0


def test_the_default_bound_follows_the_file_descriptor_ceiling() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert Settings().inflight_limit() == inflight_for(soft)
    assert (inflight_for(1024), inflight_for(65536)) == (461, 29491)
    assert Settings(max_inflight=7).inflight_limit() == 7
    assert Settings(max_inflight=0).inflight_limit() == 0  # no bound


def _limits_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="Linux /proc")
def test_serve_raises_its_soft_file_limit_to_the_hard_one_and_says_so(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 512:
        pytest.skip("needs a finite hard limit above 512")
    low = 256
    env = clean_env(MEDIAGATE_DATA_DIR=str(tmp_path / "data"))
    with serving(["serve"], env, tmp_path, soft_nofile=low) as served:
        raised = _limits_of(served.proc.pid)
        lines = served.output()
    assert raised == (hard, hard)
    said = [line for line in lines if "file descriptors" in line]
    assert said and f"up to {hard}" in said[0] and f"raised from {low}" in said[0]
    assert f"up to {inflight_for(hard)} calls in flight" in said[0]

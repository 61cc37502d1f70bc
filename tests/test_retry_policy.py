"""The pure parts of resilience: the retry policy, Retry-After, backoff, the circuit breaker
and the key pool's cool-downs. No network."""

from __future__ import annotations

import email.utils
import random
from pathlib import Path

import httpx2
import pytest
from pydantic import ValidationError

from mediagate.catalog import CatalogError, load_catalog
from mediagate.upstream.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    CircuitBreaker,
    UpstreamUnavailable,
)
from mediagate.upstream.keyring import KeyRing, key_fingerprint
from mediagate.upstream.retry import (
    CONNECT,
    GARBAGE,
    RESET,
    TIMEOUT,
    RetryPolicy,
    backoff,
    decide,
    failure_kind,
    retry_after_s,
)

POLICY = RetryPolicy()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx2.ConnectError("refused"), CONNECT),
        (httpx2.ConnectTimeout("slow"), CONNECT),
        (httpx2.PoolTimeout("busy"), CONNECT),
        (httpx2.ReadTimeout("slow"), TIMEOUT),
        (httpx2.WriteTimeout("slow"), TIMEOUT),
        (TimeoutError(), TIMEOUT),
        (httpx2.RemoteProtocolError("gone"), RESET),
        (httpx2.ReadError("reset"), RESET),
        (httpx2.WriteError("reset"), RESET),
    ],
)
def test_failure_kinds(exc: BaseException, kind: str) -> None:
    assert failure_kind(exc) == kind


@pytest.mark.parametrize(
    ("paid", "status", "failure", "retried"),
    [
        # A paid call is retried only where the upstream surely did no work...
        (True, None, CONNECT, True),
        (True, 429, None, True),
        (True, 503, None, True),
        # ...never after a timeout, a broken connection or an unusable answer...
        (True, None, TIMEOUT, False),
        (True, None, RESET, False),
        (True, None, GARBAGE, False),
        # ...nor after statuses that may follow work, or that would fail again.
        (True, 500, None, False),
        (True, 502, None, False),
        (True, 504, None, False),
        (True, 400, None, False),
        (True, 404, None, False),
        # A free call (a status poll) is retried on anything transient.
        (False, None, CONNECT, True),
        (False, None, TIMEOUT, True),
        (False, None, RESET, True),
        (False, None, GARBAGE, True),
        (False, 500, None, True),
        (False, 502, None, True),
        (False, 504, None, True),
        (False, 408, None, True),
        (False, 400, None, False),
        (False, 404, None, False),
    ],
)
def test_what_is_retried(
    paid: bool, status: int | None, failure: str | None, retried: bool
) -> None:
    decision = decide(POLICY, 1, paid=paid, status=status, failure=failure)
    assert (decision is not None) is retried


def test_a_route_may_name_more_statuses() -> None:
    policy = RetryPolicy(on_status=frozenset({500, 520}))
    assert decide(policy, 1, paid=True, status=500) is not None
    assert decide(policy, 1, paid=True, status=502) is None
    decision = decide(policy, 1, paid=True, status=520)
    assert decision is not None and decision.reason == "policy"
    with pytest.raises(ValidationError):
        RetryPolicy(on_status=frozenset({200}))


def test_attempts_are_bounded_separately_for_paid_and_free_calls() -> None:
    policy = RetryPolicy(max_attempts=2, status_max_attempts=5)
    assert decide(policy, 1, paid=True, status=503) is not None
    assert decide(policy, 2, paid=True, status=503) is None
    assert decide(policy, 4, paid=False, status=503) is not None
    assert decide(policy, 5, paid=False, status=503) is None


def test_retry_after_is_honoured_and_capped() -> None:
    decision = decide(POLICY, 1, paid=True, status=429, retry_after_s=2.5)
    assert decision is not None and decision.delay_s == 2.5
    assert decision.reason == "rate_limited"
    # Longer than the policy holds a request: the client gets the 429 and its Retry-After.
    assert decide(POLICY, 1, paid=True, status=429, retry_after_s=31) is None


def test_a_rate_limited_key_gives_way_to_another_at_once() -> None:
    decision = decide(POLICY, 1, paid=True, status=429, retry_after_s=20, other_key=True)
    assert decision is not None and decision.delay_s == 0


def test_a_refused_key_is_retried_only_on_another_key() -> None:
    assert decide(POLICY, 1, paid=True, status=401) is None
    decision = decide(POLICY, 1, paid=True, status=403, other_key=True)
    assert decision is not None and (decision.delay_s, decision.reason) == (0.0, "auth")
    # Not bounded by max_attempts: each refused key is benched, so the keys run out first.
    assert decide(RetryPolicy(max_attempts=1), 5, paid=True, status=401, other_key=True)


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=3)
    rng = random.Random(1)
    for attempt, bound in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (10, 3.0), (200, 3.0)]:
        delays = [backoff(policy, attempt, rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.8  # it does spread up to the bound
        assert min(delays) < bound * 0.2  # and down to nothing


def test_retry_after_parsing() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    # Milliseconds win, as in the OpenAI SDK.
    assert retry_after_s({"retry-after-ms": "100", "retry-after": "9"}) == 0.1
    assert retry_after_s({"retry-after": "3"}) == 3
    assert retry_after_s({"retry-after": "1.5"}) == 1.5
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now) == pytest.approx(20)
    past = email.utils.formatdate(now - 20, usegmt=True)
    assert retry_after_s({"retry-after": past}, now=now) == 0
    for bad in ["soon", "-1", "nan", "inf", ""]:
        assert retry_after_s({"retry-after": bad}) is None
    assert retry_after_s({}) is None


def test_catalog_routes_carry_policies_and_reject_unknown_fields(tmp_path: Path) -> None:
    catalog = load_catalog()
    assert catalog.models["gpt-image-2"].routes == [
        "gpt-image-2.official",
        "gpt-image-2.enterprise",
        "gpt-image-2.web",
    ]
    video = catalog.routes["muse-video"]
    assert video.timeouts.status <= 10 and video.timeouts.total == 60
    assert catalog.routes["gpt-image-2.official"].retry.max_attempts == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  gpt-image-2.official:\n    retry: {max_tries: 3}\n")
    with pytest.raises(CatalogError):
        load_catalog(bad)


def breaker(clock: Clock, failures: int = 3) -> tuple[CircuitBreaker, list[int]]:
    changes: list[int] = []
    policy = BreakerPolicy(failures=failures, cooldown_s=10)
    return CircuitBreaker("r", policy, lambda _, s: changes.append(s), clock), changes


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    cb, changes = breaker(clock)
    for _ in range(2):
        cb.check().failure()
    cb.check().success()  # a success resets the count
    for _ in range(3):
        cb.check().failure()
    assert cb.state == OPEN
    with pytest.raises(UpstreamUnavailable) as caught:
        cb.check()
    assert caught.value.status == 503 and caught.value.headers["retry-after"] == "10"
    clock.now += 10
    probe = cb.check()
    assert cb.state == HALF_OPEN
    with pytest.raises(UpstreamUnavailable):
        cb.check()  # one probe at a time
    probe.failure()
    assert cb.state == OPEN
    clock.now += 10
    cb.check().success()
    assert cb.state == CLOSED
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_a_probe_that_reports_nothing_lets_the_next_call_probe() -> None:
    clock = Clock()
    cb, _ = breaker(clock, failures=1)
    cb.check().failure()
    clock.now += 10
    probe = cb.check()
    probe.release()  # cancelled, or a client error: says nothing about the route
    probe.failure()  # only the first report counts
    assert cb.state == HALF_OPEN
    cb.check().success()
    assert cb.state == CLOSED


def test_release_after_an_outcome_is_a_no_op() -> None:
    clock = Clock()
    cb, _ = breaker(clock, failures=2)
    permit = cb.check()
    permit.failure()
    permit.release()
    cb.check().failure()
    assert cb.state == OPEN


def test_key_ring_round_robin_and_cooldowns() -> None:
    clock = Clock()
    benched: list[tuple[str, str]] = []
    ring = KeyRing(
        {"g": ["a", "b", "c"]},
        auth_cooldown_s=600,
        rate_cooldown_s=30,
        on_bench=lambda group, reason: benched.append((group, reason)),
        clock=clock,
    )
    assert [ring.next("g") for _ in range(4)] == ["a", "b", "c", "a"]
    ring.failed("g", "b", 401, None)
    assert [ring.next("g") for _ in range(4)] == ["c", "a", "c", "a"]
    # One 429 is a strike; a second in a row benches the key.
    ring.failed("g", "c", 429, None)
    assert "c" in {ring.next("g") for _ in range(3)}
    ring.failed("g", "c", 429, 45)
    assert {ring.next("g") for _ in range(4)} == {"a"}
    assert benched == [("g", "auth"), ("g", "rate_limited")]
    # The rate cool-down is the longer of the setting and Retry-After.
    clock.now += 31
    assert "c" not in {ring.next("g") for _ in range(4)}
    clock.now += 15
    assert "c" in {ring.next("g") for _ in range(4)}
    clock.now += 600
    assert {ring.next("g") for _ in range(6)} == {"a", "b", "c"}


def test_key_ring_avoids_keys_already_tried_and_never_runs_dry() -> None:
    clock = Clock()
    ring = KeyRing({"g": ["a", "b"]}, clock=clock)
    assert ring.next("g", avoid=["a"]) == "b"
    assert ring.available("g", avoid=["a"])
    assert not ring.available("g", avoid=["a", "b"])
    assert ring.next("g", avoid=["a", "b"]) in ("a", "b")
    # Every key benched: the one whose cool-down ends first serves, rather than nothing.
    ring.failed("g", "a", 401, None)
    clock.now += 1
    ring.failed("g", "b", 429, None)
    ring.failed("g", "b", 429, None)
    assert not ring.available("g")
    assert {ring.next("g") for _ in range(3)} == {"b"}
    ring.succeeded("b")  # a key that works again is back in rotation at once
    assert ring.available("g")


def test_jobs_stay_bound_to_their_key_even_while_it_cools_down() -> None:
    ring = KeyRing({"g": ["a", "b"]})
    ring.failed("g", "a", 403, None)
    assert ring.by_fingerprint("g", key_fingerprint("a")) == "a"
    key, fingerprint = ring.pick("g")
    assert key == "b" and fingerprint == key_fingerprint("b")

"""A circuit breaker per upstream route: stop sending new work to a route that keeps failing.

Closed: calls go through, and consecutive failed calls (a 5xx, no answer, an unusable answer,
after the call's own retries) are counted. After `failures` of them in a row the route is open:
new work is refused at once (a fallback route takes it, or the client gets a 503 with
Retry-After) for `cooldown_s`. Then the next call is let through as a probe (half-open) while
others are still refused; its success closes the breaker, its failure opens it again.

Only paid calls are gated and counted: a route whose creates fail may still answer status
polls, and jobs must stay reachable. State is per process (each replica learns on its own,
which costs at most `failures` calls per replica) and is exported as the gauge
mediagate_circuit_state{route}: 0 closed, 1 half-open, 2 open.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

from mediagate.catalog import BreakerPolicy
from mediagate.errors import UpstreamUnavailable

log = logging.getLogger("mediagate")

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
_NAMES = {CLOSED: "closed", HALF_OPEN: "half-open", OPEN: "open"}


class Permit:
    """One call let through. Report its outcome once; `release` (always called) reports
    nothing, e.g. for a call that was cancelled or answered a client error."""

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe
        self._done = False

    def success(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._success(self._probe)

    def failure(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._failure(self._probe)

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._release(self._probe)


class CircuitBreaker:
    def __init__(
        self,
        route_id: str,
        policy: BreakerPolicy,
        on_change: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route_id = route_id
        self.policy = policy
        self._on_change = on_change
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> int:
        return self._state

    def check(self) -> Permit:
        """A permit for one call, or UpstreamUnavailable when the route is being skipped."""
        if self._state == OPEN:
            remaining = self._opened_at + self.policy.cooldown_s - self._clock()
            if remaining > 0:
                raise self._unavailable(remaining)
            self._set(HALF_OPEN)
        if self._state == HALF_OPEN:
            if self._probing:
                raise self._unavailable(1.0)
            self._probing = True
            return Permit(self, probe=True)
        return Permit(self, probe=False)

    def _unavailable(self, retry_after_s: float) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"The upstream route {self.route_id} is failing and is skipped for now "
            "(circuit open); try again shortly.",
            headers={"retry-after": str(max(1, math.ceil(retry_after_s)))},
        )

    def _success(self, probe: bool) -> None:
        if probe:
            self._probing = False
        self._failures = 0
        if self._state != CLOSED:
            # A probe, or a call let through before the breaker opened: the route works.
            self._set(CLOSED)

    def _failure(self, probe: bool) -> None:
        if probe:
            self._probing = False
            self._open()
            return
        if self._state != CLOSED:
            return  # already skipping the route; a late failure adds nothing
        self._failures += 1
        if self._failures >= self.policy.failures:
            self._open()

    def _release(self, probe: bool) -> None:
        if probe:
            self._probing = False  # the next call probes instead

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._set(OPEN)

    def _set(self, state: int) -> None:
        if state == self._state:
            return
        self._state = state
        level = logging.WARNING if state == OPEN else logging.INFO
        log.log(level, "circuit %s for route %s", _NAMES[state], self.route_id)
        if self._on_change is not None:
            self._on_change(self.route_id, state)


class Breakers:
    """One breaker per route, made on first use (or up front, so the gauge shows every route)."""

    def __init__(
        self,
        policies: Iterable[tuple[str, BreakerPolicy]] = (),
        on_change: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        for route_id, policy in policies:
            self.get(route_id, policy)

    def get(self, route_id: str, policy: BreakerPolicy) -> CircuitBreaker:
        breaker = self._breakers.get(route_id)
        if breaker is None:
            breaker = CircuitBreaker(route_id, policy, self._on_change, self._clock)
            self._breakers[route_id] = breaker
            if self._on_change is not None:
                self._on_change(route_id, CLOSED)
        return breaker

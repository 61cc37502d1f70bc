"""Upstream calls in flight, per route, and the one queue they may wait in: visible, bounded,
and never mistaken for a connect timeout.

By default nothing caps the upstream calls of a replica but the calls it admitted
(MEDIAGATE_MAX_INFLIGHT, mediagate.http.middleware): the transport's pool has no limit of its
own, so a call never waits for a pooled connection (a wait that would count against the
connect timeout, and be retried as a call that never reached the upstream). A call waits only
where a bound says so: its route's `max_concurrent` (catalog data, where the upstream's docs
state one) or MEDIAGATE_MAX_CONNECTIONS when an operator sets it. Such a wait is taken here,
before the call's first attempt and outside its timeouts; it is seen in
`mediagate_upstream_calls_waiting` and `mediagate_upstream_call_wait_seconds`, and it is
bounded by the call's own deadline (the route's `total` for a paid call, `status` for a free
one), past which the call is a 503 `server_overloaded` that sent nothing (unserved: the next
route of the model may take it).
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Gauge

from mediagate.catalog import Route
from mediagate.errors import GatewayError, ServerOverloaded
from mediagate.observability.metrics import Metrics


class Slot:
    """One call's place: held until the call ends (a stream: until it is closed)."""

    __slots__ = ("_gauge", "_held")

    def __init__(self, gauge: Gauge, held: list[asyncio.Semaphore]) -> None:
        self._gauge: Gauge | None = gauge
        self._held = held

    def release(self) -> None:
        held, self._held = self._held, []
        if self._gauge is not None:
            self._gauge.dec()
            self._gauge = None
        for semaphore in held:
            semaphore.release()


class Lanes:
    """The upstream calls of one replica, by route. `max_connections`: a cap over all routes
    (MEDIAGATE_MAX_CONNECTIONS; None: none)."""

    def __init__(self, metrics: Metrics, max_connections: int | None = None) -> None:
        self._metrics = metrics
        self._all = asyncio.Semaphore(max_connections) if max_connections else None
        self.max_connections = max_connections
        # A route's semaphore, by route id and its bound (a reloaded catalog that changes the
        # bound gets a new one; calls holding the old one give it back there).
        self._routes: dict[tuple[str, int], asyncio.Semaphore] = {}

    def _bounds(self, route: Route) -> list[asyncio.Semaphore]:
        bounds: list[asyncio.Semaphore] = []
        if route.max_concurrent is not None:
            key = (route.id, route.max_concurrent)
            semaphore = self._routes.get(key)
            if semaphore is None:
                semaphore = self._routes[key] = asyncio.Semaphore(route.max_concurrent)
            bounds.append(semaphore)
        if self._all is not None:
            bounds.append(self._all)
        return bounds

    async def enter(self, route: Route, deadline_s: float) -> Slot:
        """A slot for one call on `route`, waited for at most `deadline_s` when a bound is
        full (then a 503 server_overloaded: nothing was sent)."""
        metrics = self._metrics
        bounds = self._bounds(route)
        held: list[asyncio.Semaphore] = []
        waited = 0.0
        waiting = metrics.child(metrics.upstream_waiting, route.id)  # exported at 0 too
        if bounds and any(b.locked() for b in bounds):
            waiting.inc()
            started = time.monotonic()
            try:
                async with asyncio.timeout(deadline_s):
                    for bound in bounds:
                        await bound.acquire()
                        held.append(bound)
            except BaseException as exc:
                for bound in held:
                    bound.release()
                if isinstance(exc, TimeoutError):
                    raise self._full(route, deadline_s) from None
                raise
            finally:
                waiting.dec()
                waited = time.monotonic() - started
        else:
            for bound in bounds:
                await bound.acquire()  # free: returns at once
                held.append(bound)
        metrics.child(metrics.upstream_wait_seconds, route.id).observe(waited)
        gauge = metrics.child(metrics.upstream_in_flight, route.id)
        gauge.inc()
        return Slot(gauge, held)

    def _full(self, route: Route, deadline_s: float) -> GatewayError:
        bound = (
            f"its route's bound of {route.max_concurrent} calls at once"
            if route.max_concurrent is not None
            else f"MEDIAGATE_MAX_CONNECTIONS ({self.max_connections})"
        )
        return ServerOverloaded(
            f"The upstream route {route.id} is at {bound}; the call waited {deadline_s:g} s "
            "for a slot and was not sent.",
            headers={"retry-after": "1"},
        )

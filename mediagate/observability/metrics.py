"""Prometheus metrics, in a registry of the app's own (prometheus-client's default registry is
process-global, which would make two apps in one process, as in tests, share counters)."""

from __future__ import annotations

from typing import TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics import MetricWrapperBase

from mediagate.catalog import Route
from mediagate.context import note_fallback, note_upstream_seconds

M = TypeVar("M", bound=MetricWrapperBase)

# Generations take from about a second to several minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 240, 300, 600)
# A wait for an upstream slot: none at all by default (no cap), seconds to minutes under one.
WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        # The process' own families, as prometheus-client's default registry has them:
        # process_* (CPU seconds, resident and virtual memory, open and max file descriptors,
        # start time; Linux only), python_gc_* (collections, collected and uncollectable
        # objects by generation) and python_info (the interpreter's version).
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        # The gateway's own families: one declaration each, a shape repeated on purpose.
        self.requests = Counter(
            "mediagate_requests",
            "Requests answered, by endpoint, public model, route, HTTP status and client key name.",
            ["endpoint", "model", "route", "status", "key"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "mediagate_request_duration_seconds",
            "Time to answer a request, by endpoint, public model and route.",
            ["endpoint", "model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_requests = Counter(
            "mediagate_upstream_requests",
            "Calls to the upstream, by route, token group and HTTP status (or timeout/error).",
            ["route", "group", "status"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "mediagate_upstream_request_duration_seconds",
            "Time the upstream took to answer, by route and token group.",
            ["route", "group"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "mediagate_images_generated",
            "Images returned to clients, by public model and route.",
            ["model", "route"],
            registry=self.registry,
        )
        # Resilience (upstream/sender.py, breaker.py, keyring.py; http/idempotency.py).
        self.upstream_retries = Counter(
            "mediagate_upstream_retries",
            "Upstream calls tried again, by route, token group and why (connect, rate_limited, "
            "unavailable, auth, timeout, reset, garbage, server_error, policy).",
            ["route", "group", "reason"],
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            "mediagate_circuit_state",
            "Circuit breaker of each route: 0 closed, 1 half-open (probing), 2 open (skipped).",
            ["route"],
            registry=self.registry,
        )
        self.key_cooldowns = Counter(
            "mediagate_upstream_key_cooldowns",
            "Upstream keys benched, by token group and reason (auth, rate_limited).",
            ["group", "reason"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "mediagate_fallbacks",
            "Routes a request left for the model's next route, by public model, the route left "
            "and why.",
            ["model", "route", "reason"],
            registry=self.registry,
        )
        self.idempotency = Counter(
            "mediagate_idempotency",
            "Requests with an Idempotency-Key, by outcome (first, replayed, waited, conflict, "
            "unknown).",
            ["outcome"],
            registry=self.registry,
        )

        # Counted once per job by whichever replica recorded its final state, so the sum over
        # replicas is exact.
        self.videos = Counter(
            "mediagate_videos_finished",
            "Video jobs that reached a final state, by public model, route and status.",
            ["model", "route", "status"],
            registry=self.registry,
        )
        self.video_seconds = Counter(
            "mediagate_video_seconds",
            "Seconds of video completed, by public model and route.",
            ["model", "route"],
            registry=self.registry,
        )
        # Kept outputs (MEDIAGATE_KEEP_OUTPUTS, mediagate.stores.kept): kept, failed (the store
        # or the database refused; the client's answer never waits on it) or swept.
        self.outputs = Counter(
            "mediagate_outputs",
            "Images and videos kept for the console's gallery, by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        # Read from the job store by every replica's reconciler (mediagate.videos.reconciler), so
        # each replica reports the same, exact value: aggregate with max(), not sum().
        self.video_jobs = Gauge(
            "mediagate_video_jobs",
            "Video jobs in the job store, by status (queued, in_progress, completed, failed).",
            ["status"],
            registry=self.registry,
        )
        for status in ("queued", "in_progress", "completed", "failed"):
            self.video_jobs.labels(status)  # exported at 0 before the first reading
        # Read from the records by every replica's batch runner (mediagate.batches.runner): the
        # same exact value on each, aggregate with max().
        self.batches = Gauge(
            "mediagate_batches",
            "Batches in the records, by status (validating, in_progress, finalizing, completed, "
            "failed, expired, cancelling, cancelled).",
            ["status"],
            registry=self.registry,
        )
        self.batch_lines = Gauge(
            "mediagate_batch_lines",
            "Lines of the batches still running, by status (pending, claimed, sent, waiting, "
            "done, failed).",
            ["status"],
            registry=self.registry,
        )
        self.video_oldest_unfinished = Gauge(
            "mediagate_video_job_oldest_unfinished_seconds",
            "Age of the oldest video job not yet completed or failed (0 when there is none).",
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "mediagate_webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, failed: retried later, expired: "
            "given up after 24 h, refused: the URL is not allowed).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("delivered", "failed", "refused", "expired"):
            self.webhook_deliveries.labels(outcome)
        self.webhook_queue = Gauge(
            "mediagate_webhook_queue_depth",
            "Webhook events in the store's outbox, not yet delivered.",
            registry=self.registry,
        )
        self.webhook_oldest = Gauge(
            "mediagate_webhook_oldest_undelivered_seconds",
            "Age of the oldest webhook event not yet delivered (0 when there is none).",
            registry=self.registry,
        )

        self.cost = Counter(
            "mediagate_cost_usd",
            "USD charged to clients, by client key name and public model.",
            ["key", "model"],
            registry=self.registry,
        )
        self.request_log_dropped = Counter(
            "mediagate_request_log_dropped",
            "Request log rows dropped because the queue was full (the database unreachable "
            "for longer than MEDIAGATE_REQUEST_LOG_QUEUE rows take to arrive).",
            registry=self.registry,
        )
        self.settle_failures = Counter(
            "mediagate_settle_failures",
            "Requests whose charge could not be booked in the ledger after retries.",
            registry=self.registry,
        )
        self.usage_rejected = Counter(
            "mediagate_upstream_usage_rejected",
            "Upstream usage not believed (not finite counts, below the floor, over the bound "
            "the request sets), so the request's estimate was booked instead, by route.",
            ["route"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mediagate_requests_in_flight",
            "Requests being answered now, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        # The replica's bound on calls (MEDIAGATE_MAX_INFLIGHT, http/middleware.py), and the
        # upstream calls per route with their queue (upstream/lanes.py).
        self.calls_in_flight = Gauge(
            "mediagate_calls_in_flight",
            "Calls (requests under /v1) this replica holds now, bounded by MEDIAGATE_MAX_INFLIGHT.",
            registry=self.registry,
        )
        self.max_inflight = Gauge(
            "mediagate_max_inflight",
            "MEDIAGATE_MAX_INFLIGHT in force (0: no bound).",
            registry=self.registry,
        )
        self.calls_refused = Counter(
            "mediagate_calls_refused",
            "Calls answered 503 server_overloaded at once because the replica held "
            "MEDIAGATE_MAX_INFLIGHT calls, by API area (images, videos, ...).",
            ["area"],
            registry=self.registry,
        )
        self.upstream_in_flight = Gauge(
            "mediagate_upstream_calls_in_flight",
            "Upstream calls under way (a stream until it is closed), by route.",
            ["route"],
            registry=self.registry,
        )
        self.upstream_waiting = Gauge(
            "mediagate_upstream_calls_waiting",
            "Upstream calls waiting for a slot (the route's max_concurrent or "
            "MEDIAGATE_MAX_CONNECTIONS), by route.",
            ["route"],
            registry=self.registry,
        )
        self.upstream_wait_seconds = Histogram(
            "mediagate_upstream_call_wait_seconds",
            "Time an upstream call waited for a slot before it was sent (0 without a cap), "
            "by route.",
            ["route"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        # The room for upstream answers (upstream/room.py, MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES).
        self.upstream_answer_bytes = Gauge(
            "mediagate_upstream_answer_bytes",
            "Bytes of upstream answers this replica holds now (bounded by "
            "MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES).",
            registry=self.registry,
        )
        self.upstream_answers_waiting = Gauge(
            "mediagate_upstream_answers_waiting",
            "Upstream answers waiting for room before their body is read.",
            registry=self.registry,
        )
        self.upstream_answer_room = Counter(
            "mediagate_upstream_answer_room",
            "Upstream answers that had to wait for room, by outcome (waited: then read, "
            "timed_out: dropped after MEDIAGATE_UPSTREAM_ROOM_WAIT_S, too_large: could never fit).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("waited", "timed_out", "too_large"):
            self.upstream_answer_room.labels(outcome)
        # The catalog against the upstream's model lists (mediagate.upstream.listing).
        self.catalog_route_listed = Gauge(
            "mediagate_catalog_route_listed",
            "Whether the upstream's GET /v1/models for the route's token group still lists the "
            "route's upstream model (1) or not (0: retired upstream?), as of the last check.",
            ["route"],
            registry=self.registry,
        )
        self.catalog_checks = Counter(
            "mediagate_catalog_checks",
            "Checks of the catalog against the upstream's model lists, by token group and "
            "outcome (ok, failed: the list could not be had).",
            ["group", "outcome"],
            registry=self.registry,
        )
        self.catalog_reloads = Counter(
            "mediagate_catalog_reloads",
            "Reloads of MEDIAGATE_CONFIG (SIGHUP), by outcome (applied, refused: the old "
            "catalog kept).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("applied", "refused"):
            self.catalog_reloads.labels(outcome)
        self.budget_remaining = Gauge(
            "mediagate_budget_remaining_usd",
            "USD a client key may still spend in the period (day or month), as last seen.",
            ["key", "period"],
            registry=self.registry,
        )

    def child(self, family: M, *values: str) -> M:
        """`family.labels(*values)`, looked up in a dict once made: prometheus-client's
        `labels` validates, converts and locks on every call (a few microseconds, several
        times a request). The label values are bounded as the families' are."""
        key = (family, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*values)
        return cast(M, found)

    def route_left(self, model: str, route_id: str, reason: str) -> None:
        """A route a request passed by for the model's next one: counted, and on the request's
        record (x-mediagate-fallback)."""
        note_fallback(route_id, reason)
        self.fallbacks.labels(model, route_id, reason).inc()

    def upstream_call(self, route: Route, status: str, seconds: float) -> None:
        note_upstream_seconds(seconds)
        self.child(self.upstream_requests, route.id, route.group, status).inc()
        self.child(self.upstream_seconds, route.id, route.group).observe(seconds)

"""Prometheus metrics, in a registry of the app's own (prometheus-client's default registry is
process-global, which would make two apps in one process, as in tests, share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from .catalog import Route

# Generations take from about a second to several minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 240, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mediagate_requests",
            "Requests answered, by public model, route and HTTP status.",
            ["endpoint", "model", "route", "status"],
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

    def upstream_call(self, route: Route, status: str, seconds: float) -> None:
        self.upstream_requests.labels(route.id, route.group, status).inc()
        self.upstream_seconds.labels(route.id, route.group).observe(seconds)

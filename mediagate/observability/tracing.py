"""OpenTelemetry traces, off unless configured (MEDIAGATE_OTEL, or the standard
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: see mediagate.settings).

Each app has a `Tracing` of its own: its own TracerProvider (never the process-global one, so
two apps in one process, as in tests, do not share spans), built by `create_app` and exporting
only while the app's lifespan runs (`running()` adds the OTLP/HTTP exporter at start and shuts
the provider down, flushing what is left, at the end).

What is traced:
- one server span per HTTP request, by OpenTelemetry's ASGI instrumentation (`instrument`),
  which also accepts a client's W3C `traceparent`; the request's bookkeeping
  (mediagate.http.middleware) adds the gateway's attributes to it: route, model, key name,
  retries, cost. Never a key, never a prompt.
- a client span per upstream attempt (`span`, from mediagate.upstream.sender): route, token
  group, attempt number and outcome;
- a span per image download (mediagate.upstream.fetcher): the host and outcome, not the link.

Nothing is propagated upstream: the gateway's calls carry no `traceparent`, `tracestate` or
`baggage` (the upstream is a third party; our trace and span ids are internal). That is why the
upstream client is not instrumented with opentelemetry-instrumentation-httpx, which always
injects the process-wide propagator's headers; the attempt spans above carry what that
instrumentation would, plus the route, group and attempt it cannot know.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "Attempt",
    "NoOpTracer",
    "SpanKind",
    "Traced",
    "Tracer",
    "Tracing",
    "TracingMiddleware",
    "current_ids",
    "current_span",
    "event",
    "span",
    "upstream_attempt",
]
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("mediagate")

# Outcome attribute of an attempt or a download; the other attributes are named here too, so
# the sender, the fetcher and the middleware agree.
OUTCOME = "mediagate.outcome"
ROUTE = "mediagate.route"
GROUP = "mediagate.group"
ATTEMPT = "mediagate.attempt"
MODEL = "mediagate.model"
KEY = "mediagate.key"  # the client key's name, never the key
ENDPOINT = "mediagate.endpoint"
REQUEST_ID = "mediagate.request_id"
CLIENT_REQUEST_ID = "mediagate.client_request_id"
RETRIES = "mediagate.retries"
COST = "mediagate.cost_usd"
ERROR_CODE = "mediagate.error.code"

# Request headers never captured on a span, even if an operator asks the ASGI instrumentation
# for them (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST).
_SECRET_HEADERS = ["authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"]


_UNTRACED = r"^[a-z]+://[^/]+/(healthz|readyz|metrics)/?$"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mediagate")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _resource() -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; "mediagate" unless
    # the operator named the service.
    resource = Resource.create({SERVICE_VERSION: _package_version()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "mediagate"}))
    return resource


class Tracing:
    """The app's tracing: a real tracer when enabled, a no-op one otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._provider: TracerProvider | None = None
        self.tracer: Tracer = NoOpTracer()
        if enabled:
            # The SDK is loaded only here: a gateway without tracing never imports it.
            from opentelemetry.sdk.trace import TracerProvider

            # No span processor yet: nothing is exported, and no thread runs, until `running`.
            self._provider = TracerProvider(resource=_resource())
            self.tracer = self._provider.get_tracer("mediagate", _package_version())

    def instrument(self, app: ASGIApp) -> ASGIApp:
        """The app wrapped in OpenTelemetry's ASGI middleware (a server span per request), or
        the app itself when tracing is off."""
        if self._provider is None:
            return app
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.metrics import NoOpMeterProvider

        middleware: ASGIApp = OpenTelemetryMiddleware(
            app,
            tracer_provider=self._provider,
            # Probes and scrapes, every few seconds from every orchestrator: not traced.
            excluded_urls=_UNTRACED,
            # The server's duration and size histograms are Prometheus' job here.
            meter_provider=NoOpMeterProvider(),
            # One span per request, not one per chunk of a streamed answer.
            exclude_spans=["receive", "send"],
            http_capture_headers_sanitize_fields=_SECRET_HEADERS,
            server_request_hook=_redact_capabilities,
        )
        return middleware

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Export while the app runs; flush and stop with it."""
        provider = self._provider
        if provider is None:
            yield
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # The exporter reads the standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers,
        # timeout, compression, certificates); the processor reads OTEL_BSP_*.
        exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        endpoint = getattr(exporter, "_endpoint", None)  # for the operator's eyes only
        log.info("exporting OpenTelemetry traces", extra={"fields": {"otlp_endpoint": endpoint}})
        try:
            yield
        finally:
            # Flushes the spans still queued (bounded by the exporter's timeout); blocking, so
            # off the event loop.
            await asyncio.to_thread(provider.shutdown)


# The gateway's hosted image links are capabilities (an unguessable name, no key needed): the
# name is left out of the span, as out of the access log line.
HOSTED_PREFIX = "/v1/files/images/"
HOSTED_TEMPLATE = HOSTED_PREFIX + "{name}"


def loggable_path(path: str) -> str:
    """The request path as logs and spans may show it."""
    return HOSTED_TEMPLATE if path.startswith(HOSTED_PREFIX) else path


def _redact_capabilities(span: Span, scope: dict[str, Any]) -> None:
    path = scope.get("path", "")
    if not span.is_recording() or loggable_path(path) == path:
        return
    for name, value in dict(getattr(span, "attributes", None) or {}).items():
        if isinstance(value, str) and path in value:
            span.set_attribute(name, value.split("?")[0].replace(path, HOSTED_TEMPLATE))
    span.update_name(f"{scope.get('method', 'GET')} {HOSTED_TEMPLATE}")


class TracingMiddleware:
    """`app.add_middleware(TracingMiddleware, tracing=...)`: the ASGI instrumentation as a
    Starlette middleware (added only when tracing is on; off, it would be a pass-through).
    Added after (so outside) the request's bookkeeping, so the bookkeeping's log lines and
    attributes land in its span."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = tracing.instrument(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class Traced:
    """A span being recorded, with the attribute names above (a no-op when tracing is off)."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def set(self, **attributes: Any) -> None:
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def outcome(self, outcome: str, *, failed: bool = False) -> None:
        self.span.set_attribute(OUTCOME, outcome)
        if failed:
            self.span.set_status(Status(StatusCode.ERROR, outcome))


def _failure_outcome(exc: BaseException) -> str:
    """What went wrong, in a bounded word: an attempt's failure kind (mediagate.upstream.retry),
    a GatewayError's code, or the exception's type."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    for attribute in ("kind", "code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(exc).__name__


def span(
    tracer: Tracer, name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any
) -> AbstractContextManager[Traced]:
    """A child span of the current one. If the block raises, its outcome is the failure (see
    `_failure_outcome`) and its status an error; otherwise the block sets the outcome. With
    tracing off, a shared no-op: no span, no context switched, nothing allocated."""
    if isinstance(tracer, NoOpTracer):
        return _UNTRACED_SPAN
    return _recorded(tracer, name, kind, attributes)


@contextmanager
def _recorded(
    tracer: Tracer, name: str, kind: SpanKind, attributes: dict[str, Any]
) -> Iterator[Traced]:
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes={k: v for k, v in attributes.items() if v is not None},
        record_exception=False,  # an exception's text may quote the upstream
        set_status_on_exception=False,
    ) as current:
        traced = Traced(current)
        try:
            yield traced
        except BaseException as exc:
            traced.outcome(_failure_outcome(exc), failed=True)
            raise


class Attempt(Traced):
    def answered(self, status: int) -> None:
        """The upstream answered this attempt with `status`."""
        self.span.set_attribute("http.response.status_code", status)
        self.outcome("ok" if status < 400 else f"http_{status}", failed=status >= 400)


_UNTRACED_SPAN = nullcontext(Traced(trace.INVALID_SPAN))
_UNTRACED_ATTEMPT = nullcontext(Attempt(trace.INVALID_SPAN))


def upstream_attempt(
    tracer: Tracer, route: str, group: str, attempt: int, method: str, path: str
) -> AbstractContextManager[Attempt]:
    """The span of one try of one upstream call (a child of the request's span). Its outcome:
    `ok`, `http_<status>`, or the failure kind (connect, timeout, reset, garbage: see
    mediagate.upstream.retry); a retry that follows is an event on the parent span."""
    if isinstance(tracer, NoOpTracer):
        return _UNTRACED_ATTEMPT
    return _attempt_span(tracer, route, group, attempt, method, path)


@contextmanager
def _attempt_span(
    tracer: Tracer, route: str, group: str, attempt: int, method: str, path: str
) -> Iterator[Attempt]:
    with span(
        tracer,
        f"upstream {method}",
        SpanKind.CLIENT,
        **{
            ROUTE: route,
            GROUP: group,
            ATTEMPT: attempt,
            "http.request.method": method,
            "url.path": path,  # relative to the upstream's base URL; never a query or a key
        },
    ) as traced:
        yield Attempt(traced.span)


def event(name: str, **attributes: Any) -> None:
    """An event on the current span (a retry, a fallback), when one is being recorded."""
    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(
            f"mediagate.{name}", {k: v for k, v in attributes.items() if v is not None}
        )


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, in hex, when one is being recorded."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_span() -> Span:
    return trace.get_current_span()

"""Per-request bookkeeping: the request's record, its metrics, one JSON log line, the headers
every answer carries, the attributes of its trace span, and a last-resort 500.

A plain ASGI middleware rather than BaseHTTPMiddleware, so response bodies stream through
untouched. It opens the request's `RequestContext` (mediagate.context) before anything else
runs and reads it back when the request is done. The request id is the client's (or its load
balancer's) `X-Request-ID` when that is a sane one (at most 128 characters of letters, digits and
`._:+=@/-`), otherwise a new one; either way the answer echoes it, and every log line written
while the request runs carries it (mediagate.observability.logs).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediagate import context
from mediagate.accounting.requestlog import RequestLog
from mediagate.allocator import Quiet
from mediagate.context import RequestContext
from mediagate.errors import GatewayError, Scrubber, ServerOverloaded
from mediagate.http.bodies import Bodies
from mediagate.http.errors import error_response, gateway_error_response
from mediagate.http.headers import render as render_headers
from mediagate.observability import tracing
from mediagate.observability.logs import format_traceback, mark_logged
from mediagate.observability.metrics import Metrics

log = logging.getLogger("mediagate.access")


_AREAS = ("images", "videos", "models", "usage", "files", "batches", "admin")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=@/-]{1,128}")


def _inbound_request_id(scope: Scope) -> str | None:
    """The client's id for the request (X-Client-Request-Id, as OpenAI's API takes it, else a
    load balancer's X-Request-ID), if it is one a log line and a header can carry safely."""
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers", []):
        if name in (b"x-client-request-id", b"x-request-id"):
            found.setdefault(name, value.decode("latin-1").strip())
    text = found.get(b"x-client-request-id") or found.get(b"x-request-id")
    return text if text is not None and _REQUEST_ID.fullmatch(text) else None


def _area(path: str) -> str:
    """A bounded label for the path: never a value the client chose."""
    parts = path.split("/")
    area = parts[2] if len(parts) > 2 and parts[1] == "v1" else ""
    return area if area in _AREAS else "other"


def _label(scope: Scope) -> str:
    """The request's endpoint label, for the metrics, the log line and the span: the name of
    the route that served it (a fixed set, declared with each route: `name="videos.create"`),
    or "other" when none did (an unknown path, or a path asked with a method it does not take)."""
    route = scope.get("route")
    if route is None or scope["method"] not in getattr(route, "methods", ()):
        return "other"
    name: str = route.name
    return name


def overloaded(limit: int) -> ServerOverloaded:
    return ServerOverloaded(
        f"The gateway holds as many calls as it may at once (MEDIAGATE_MAX_INFLIGHT, {limit}); "
        "nothing of this one was read or sent. Try again shortly.",
        headers={"retry-after": "1"},
    )


class RequestBookkeeping:
    """`max_inflight`: the calls (requests under /v1) the replica holds at once; past it a new
    one is a 503 server_overloaded with Retry-After at once, before its body is read, its key
    checked or anything sent upstream or reserved (0: no bound). Health, readiness and
    /metrics are never counted, so probes answer under any load."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        scrub: Scrubber,
        bodies: Bodies | None = None,
        max_inflight: int = 0,
        request_log: RequestLog | None = None,
        quiet: Quiet | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.scrub = scrub
        self.bodies = bodies
        self.max_inflight = max_inflight
        self.request_log = request_log  # None: MEDIAGATE_REQUEST_LOG=false
        self.calls = 0  # calls in flight now (mediagate_calls_in_flight)
        self.quiet = quiet  # told when the calls in flight fall to 0 (mediagate.allocator)
        if quiet is not None:
            quiet.watch(lambda: self.calls)
        metrics.max_inflight.set(max_inflight)
        for area in (*_AREAS, "other"):
            metrics.child(metrics.calls_refused, area)  # exported at 0 before a first refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext()
        ctx.client_request_id = _inbound_request_id(scope)
        token = context.begin(ctx)
        started = time.perf_counter()
        status = 500
        response_started = False
        path = scope["path"]

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                ctx.endpoint = _label(scope)
                headers = render_headers(ctx, path, list(message.get("headers", [])))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # The tracing middleware ends the span with the answer's last bytes.
                _annotate_span(scope, ctx)
            await send(message)

        area = _area(path)
        in_flight = self.metrics.child(self.metrics.in_flight, area)
        in_flight.inc()
        call = path.startswith("/v1/")
        if call:
            self.calls += 1
            self.metrics.calls_in_flight.inc()
        try:
            if call and self.max_inflight and self.calls > self.max_inflight:
                self.metrics.child(self.metrics.calls_refused, area).inc()
                refusal = overloaded(self.max_inflight)
                await gateway_error_response(refusal, self.scrub)(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # The one log line of it, with its scrubbed traceback (and, from the formatter, the
            # request id and trace id); the server does not log it again (mark_logged).
            fields = {
                "error": self.scrub(repr(exc)),
                "traceback": format_traceback(exc, self.scrub),
            }
            log.error("unhandled error", extra={"fields": fields})
            mark_logged(exc)
            if response_started:
                raise
            error = GatewayError("The gateway hit an internal error.", code="internal_error")
            await error_response(error, ctx.request_id)(scope, receive, send_wrapper)
            status = 500
        finally:
            if self.bodies is not None:
                self.bodies.release(scope)  # what its body held of the in-flight bound
            context.finish(ctx)  # and what its upstream answers held of theirs
            ctx.endpoint = _label(scope)
            in_flight.dec()
            if call:
                self.calls -= 1
                self.metrics.calls_in_flight.dec()
                if not self.calls and self.quiet is not None:
                    self.quiet.ended()
            context.end(token)
            self._record(scope, ctx, status, time.perf_counter() - started)

    def _record(self, scope: Scope, ctx: RequestContext, status: int, seconds: float) -> None:
        if self.request_log is not None:
            self.request_log.record(ctx, status, seconds, scope["method"])
        route_id = ctx.route.id if ctx.route is not None else "none"
        model = (ctx.model if ctx.route is not None else None) or "none"
        if ctx.endpoint != "other":
            key = ctx.key_name or "none"
            metrics = self.metrics
            metrics.child(metrics.requests, ctx.endpoint, model, route_id, str(status), key).inc()
            metrics.child(metrics.request_seconds, ctx.endpoint, model, route_id).observe(seconds)
        fields: dict[str, Any] = {
            "method": scope["method"],
            "path": tracing.loggable_path(scope["path"]),
            "status": status,
            "latency_ms": round(seconds * 1000, 1),
            **ctx.log_fields(),
        }
        if ctx.client_request_id is not None:  # the client's own id, beside ours
            fields["client_request_id"] = ctx.client_request_id
        if ctx.prompt is not None:  # only when the operator set MEDIAGATE_LOG_PROMPTS
            fields["prompt"] = ctx.prompt
        if isinstance(ctx.error, GatewayError):
            fields["error"] = {"code": ctx.error.code, "message": ctx.error.message}
        if ctx.endpoint != "health":
            log.info("request", extra={"fields": fields})
        _annotate_span(scope, ctx)  # if the answer never completed, its span is still open


def _annotate_span(scope: Scope, ctx: RequestContext) -> None:
    """What the gateway knows about the request, on its server span (the ASGI instrumentation
    records the method, path and status): never a key, never a prompt."""
    span = tracing.current_span()
    if not span.is_recording():
        return
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        # "GET /v1/videos/{video_id}" rather than one span name per video.
        span.update_name(f"{scope['method']} {template}")
        span.set_attribute("http.route", template)
    route = ctx.route
    attributes: dict[str, Any] = {
        tracing.REQUEST_ID: ctx.request_id,
        tracing.CLIENT_REQUEST_ID: ctx.client_request_id,
        tracing.ENDPOINT: ctx.endpoint,
        tracing.KEY: ctx.key_name,
        tracing.MODEL: ctx.model,
        tracing.ROUTE: route.id if route is not None else None,
        tracing.GROUP: route.group if route is not None else None,
        tracing.RETRIES: ctx.retries,
        tracing.COST: ctx.cost,
        "mediagate.fallbacks": ctx.fallbacks or None,
        tracing.ERROR_CODE: ctx.error.code if isinstance(ctx.error, GatewayError) else None,
    }
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})

"""Per-request bookkeeping: request id, metrics, one JSON log line, and a last-resort 500.

A plain ASGI middleware rather than BaseHTTPMiddleware, so response bodies stream through
untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import GatewayError, Scrubber, error_response
from .metrics import Metrics

log = logging.getLogger("mediagate.access")


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, scrub: Scrubber) -> None:
        self.app = app
        self.metrics = metrics
        self.scrub = scrub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            log.error("unhandled error: %s", self.scrub(repr(exc)))
            if response_started:
                raise
            error = GatewayError("The gateway hit an internal error.", code="internal_error")
            await error_response(error, request_id)(scope, receive, send)
            status = 500
        finally:
            self._record(scope, state, status, time.perf_counter() - started)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        endpoint = state.get("endpoint", "other")
        route = state.get("route")
        model = state.get("model") if route is not None else None
        route_id = route.id if route is not None else "none"
        if endpoint != "other":
            self.metrics.requests.labels(endpoint, model or "none", route_id, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint, model or "none", route_id).observe(
                seconds
            )
        error = state.get("error")
        fields: dict[str, Any] = {
            "request_id": state["request_id"],
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": round(seconds * 1000, 1),
            "key": state.get("key_name"),
            "model": model,
            "route": route_id if route is not None else None,
            "group": route.group if route is not None else None,
        }
        if state.get("normalized"):
            fields["normalized"] = state["normalized"]
        if isinstance(error, GatewayError):
            fields["error"] = {"code": error.code, "message": error.message}
        if endpoint != "health":
            log.info("request", extra={"fields": fields})

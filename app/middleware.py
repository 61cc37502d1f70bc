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
from .metrics import UPSTREAM_SECONDS, Metrics

log = logging.getLogger("mediagate.access")


_AREAS = ("images", "videos", "models", "usage", "files", "admin")


def _area(path: str) -> str:
    """A bounded label for the path: never a value the client chose."""
    parts = path.split("/")
    area = parts[2] if len(parts) > 2 and parts[1] == "v1" else ""
    return area if area in _AREAS else "other"


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
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                if scope["path"].startswith("/v1/") and not state.get("streaming"):
                    # What this request charged; a stream's cost is known only at its end.
                    cost = f"{state.get('cost', 0.0):.6f}".encode()
                    headers.append((b"x-mediagate-cost-usd", cost))
                message = {**message, "headers": headers}
            await send(message)

        upstream_seconds = UPSTREAM_SECONDS.set([0.0])
        in_flight = self.metrics.in_flight.labels(_area(scope["path"]))
        in_flight.inc()
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
            in_flight.dec()
            spent = UPSTREAM_SECONDS.get()
            UPSTREAM_SECONDS.reset(upstream_seconds)
            state["upstream_seconds"] = spent[0] if spent else 0.0
            self._record(scope, state, status, time.perf_counter() - started)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        endpoint = state.get("endpoint", "other")
        route = state.get("route")
        model = state.get("model") if route is not None else None
        route_id = route.id if route is not None else "none"
        if endpoint != "other":
            key = state.get("key_name") or "none"
            self.metrics.requests.labels(
                endpoint, model or "none", route_id, str(status), key
            ).inc()
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
            "upstream_ms": round(state.get("upstream_seconds", 0.0) * 1000, 1),
            "cost_usd": state.get("cost"),
        }
        if state.get("normalized"):
            fields["normalized"] = state["normalized"]
        if "prompt" in state:  # only when the operator set MEDIAGATE_LOG_PROMPTS
            fields["prompt"] = state["prompt"]
        if isinstance(error, GatewayError):
            fields["error"] = {"code": error.code, "message": error.message}
        if endpoint != "health":
            log.info("request", extra={"fields": fields})

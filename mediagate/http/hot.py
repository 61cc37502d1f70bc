"""The hot path: the few requests a gateway serves by the thousand, dispatched without
FastAPI's router and dependency injection.

Per pass-through image generation, FastAPI's machinery (its telemetry and body-limit
middlewares, the exception middleware, the router's match over every route, dependency
solving, the endpoint wrapper) cost about a fifth of the gateway's CPU (issue 15's profile,
docs/performance.md). The routes listed here skip it: the same handler functions FastAPI
registers (one definition, FastAPI still serves them in its docs and for a wrong method), their
dependencies called in FastAPI's order (the client key, then the request's label), and their
errors rendered by the one boundary (mediagate.http.errors). Everything else goes to FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Response
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from mediagate import context
from mediagate.accounting.clients import KeyPolicy
from mediagate.errors import GatewayError, Scrubber
from mediagate.http.deps import client
from mediagate.http.errors import gateway_error_response

Endpoint = Callable[[Request, KeyPolicy], Awaitable[Response]]


@dataclass(frozen=True)
class HotRoute:
    method: str
    path: str
    endpoint: Endpoint  # the very function FastAPI registers for this path
    label: str  # the request's endpoint label (mediagate.http.deps.endpoint)


class HotRoutes:
    """ASGI: serves the requests `match` found a route for (see mediagate.app.GatewayApp)."""

    def __init__(self, routes: list[HotRoute], scrub: Scrubber) -> None:
        self.routes = {(r.method, r.path): r for r in routes}
        self.scrub = scrub

    def match(self, scope: Scope) -> bool:
        """Whether this is a request of one of the routes; if so the route is the scope's."""
        if scope["type"] != "http":
            return False
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        route = self.routes.get((scope["method"], path))
        if route is None:
            return False
        scope["route"] = route  # its `path` names the request's span, as FastAPI's route would
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: HotRoute = scope["route"]
        request = Request(scope, receive)
        try:
            policy = await client(request)
            context.current().endpoint = route.label
            response = await route.endpoint(request, policy)
        except GatewayError as exc:
            response = gateway_error_response(exc, self.scrub)
        await response(scope, receive, send)

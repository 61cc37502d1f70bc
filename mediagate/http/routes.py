"""An HTTP module's routes, declared once: on the app.

Each module of the HTTP surface (and each console page) lists its routes with the decorators of
FastAPI's `APIRouter` (`@videos.get("/videos/{video_id}", name=...)`), but on a `Routes`, which
only records them: `create_app` declares each on the app itself (`Routes.declare`, as
`app.get(...)` would), where FastAPI analyses it once. On an `APIRouter` every route was
analysed twice, when its module was imported and again on the app (its parameters' and
answer's pydantic validators built each time): ~40% of what declaring the routes cost a cold
start. Keeping the routes on the app also means FastAPI matches a request once, in one list
(an included router's routes are dispatched through a second matching layer, ~80 µs of CPU per
request).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.params import Depends

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True)
class Declared:
    """One route as its module declared it: what `FastAPI.add_api_route` is given."""

    path: str
    endpoint: Callable[..., Any]
    methods: frozenset[str]
    options: dict[str, Any] = field(hash=False, compare=False)

    @property
    def name(self) -> str:
        """The route's name (the `endpoint` label of the metrics): as given, else FastAPI's
        default, the endpoint function's name."""
        return str(self.options.get("name") or self.endpoint.__name__)


class Routes:
    """Routes under one prefix, with the dependencies every one of them runs first."""

    def __init__(self, prefix: str = "", dependencies: Sequence[Depends] = ()) -> None:
        self.prefix = prefix
        self.dependencies = list(dependencies)
        self.routes: list[Declared] = []

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._route(path, "GET", options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._route(path, "POST", options)

    def patch(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._route(path, "PATCH", options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._route(path, "DELETE", options)

    def _route(
        self, path: str, method: str, options: dict[str, Any]
    ) -> Callable[[Endpoint], Endpoint]:
        dependencies = [*self.dependencies, *options.pop("dependencies", ())]
        if dependencies:
            options["dependencies"] = dependencies

        def record(endpoint: Endpoint) -> Endpoint:
            self.routes.append(
                Declared(self.prefix + path, endpoint, frozenset({method}), dict(options))
            )
            return endpoint

        return record

    def declare(self, app: FastAPI) -> None:
        """Each route declared on the app itself, in the order the module listed them. (Options
        not given are FastAPI's defaults, e.g. a response model inferred from the endpoint's
        return annotation.)"""
        for route in self.routes:
            app.add_api_route(
                route.path, route.endpoint, methods=sorted(route.methods), **route.options
            )

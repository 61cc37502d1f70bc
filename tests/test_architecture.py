"""The shape of the request path, measured: how many frames of our own code an image generation
passes from its handler to the upstream socket, and that no module is entered twice.

A recording transport under the gateway's upstream sender looks, at the moment the request goes
out, at the whole chain of coroutines that led there, across the tasks the gateway started on
the way (each task's parent is recorded by a task factory installed for the measurement).
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from mediagate.accounting.clients import KeyPolicy
from mediagate.app import create_app
from mediagate.console import routers
from mediagate.context import RequestContext
from mediagate.http.admin import admin
from mediagate.http.admin_keys import keys as admin_keys
from mediagate.http.admin_reads import reads
from mediagate.http.batches import batches
from mediagate.http.deps import client
from mediagate.http.files import files
from mediagate.http.headers import facts
from mediagate.http.health import health
from mediagate.http.images import images
from mediagate.http.models import models
from mediagate.http.openapi import openapi
from mediagate.http.usage import usage
from mediagate.http.videos import videos
from mediagate.servethread import BackgroundServer

from .conftest import CLIENT_KEY, Gateway, Sim, gateway_settings

PACKAGE = Path(__file__).resolve().parents[1] / "mediagate"
SIMULATOR = PACKAGE / "simulator"
HANDLER = "generations"  # mediagate.http.images: the handler of POST /v1/images/generations


def _frames_of(coro: Any) -> list[FrameType]:
    """The suspended frames of a task's coroutine chain, outermost first."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return frames


def _live_frames(task: asyncio.Task[Any]) -> list[FrameType]:
    """The running task's frames, from its coroutine's outermost frame in."""
    outermost = getattr(task.get_coro(), "cr_frame", None)
    frames = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        if frame is outermost:
            break
        frame = frame.f_back
    return frames[::-1]


class PathRecorder(httpx2.AsyncBaseTransport):
    """Forwards to the real network; records the app frames behind each upstream request."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.paths: list[list[tuple[str, str]]] = []
        self.parents: dict[asyncio.Task[Any], asyncio.Task[Any] | None] = {}

    def _factory(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> Any:
        # kwargs: uvloop passes the task's `context` to the factory.
        task = asyncio.Task(coro, loop=loop, **kwargs)
        self.parents[task] = asyncio.current_task(loop)
        return task

    def _record(self) -> None:
        chain: list[FrameType] = []
        current = asyncio.current_task()
        assert current is not None
        task: asyncio.Task[Any] | None = current
        tasks = []
        while task is not None:
            tasks.append(task)
            task = self.parents.get(task)
        for ancestor in reversed(tasks[1:]):
            chain += _frames_of(ancestor.get_coro())
        chain += _live_frames(current)
        ours = [
            (Path(f.f_code.co_filename).resolve(), f.f_code.co_name)
            for f in chain
            if Path(f.f_code.co_filename).resolve().is_relative_to(PACKAGE)
            and not Path(f.f_code.co_filename).resolve().is_relative_to(SIMULATOR)
        ]
        names = [name for _, name in ours]
        if HANDLER in names:
            start = names.index(HANDLER)
            self.paths.append(
                [(str(path.relative_to(PACKAGE.parent)), name) for path, name in ours[start:]]
            )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        loop = asyncio.get_running_loop()
        if loop.get_task_factory() is None:
            loop.set_task_factory(self._factory)  # from the next request on
        if request.url.path.endswith("/images/generations"):
            self._record()
        return await self.inner.handle_async_request(request)


def _visits(path: list[tuple[str, str]]) -> list[str]:
    """The modules in the order entered, consecutive frames of one module counted once."""
    modules: list[str] = []
    for module, _ in path:
        if not modules or modules[-1] != module:
            modules.append(module)
    return modules


def test_an_image_generation_reaches_the_socket_in_few_frames(
    make_gateway: Callable[..., Gateway],
) -> None:
    recorder = PathRecorder()
    gateway = make_gateway(transport=recorder)
    client = gateway.sdk()
    for _ in range(2):  # the first request installs the task factory
        client.images.generate(model="gpt-image-2-web", prompt="a lighthouse")
    path = recorder.paths[-1]
    hops = " -> ".join(f"{module.removeprefix('mediagate/')}:{name}" for module, name in path)
    print(f"\n{len(path)} frames: {hops}")
    visits = _visits(path)
    assert len(visits) == len(set(visits)), f"a module is entered twice: {hops}"
    # The recorder is an httpx2 transport, yet the call reached it the way production's reaches
    # aiohttp: the sender's whole-answer call on its transport interface, no branch of its own.
    assert path[-2:] == [
        ("mediagate/upstream/sender.py", "_attempt"),
        ("mediagate/upstream/transport.py", "exchange"),
    ], hops
    # Up to the transport interface (the network: aiohttp's implementation in production, the
    # adapter here), at most 6 frames of the request path.
    assert len(path) - 1 <= 6, hops


# One request path: every request goes through FastAPI's one middleware stack, router and
# dependency injection; nothing is dispatched beside them and no route is registered twice.


def test_every_route_is_served_by_fastapi_once(sim: Sim, tmp_path: Path) -> None:
    app = create_app(gateway_settings(sim, tmp_path))
    assert type(app) is FastAPI  # no front door in front of FastAPI's own __call__
    served: list[tuple[str, str]] = []
    # Each module's routes are declared on the app itself (mediagate.http.routes:
    # `Routes.declare`), so FastAPI matches a request once, in one list of routes, each under
    # its dependency injection.
    for route in app.routes:
        assert isinstance(route, APIRoute), f"outside FastAPI's dependency injection: {route}"
        served += [(method, route.path) for method in sorted(route.methods)]
    assert ("POST", "/v1/images/generations") in served
    assert len(served) == len(set(served)), "a method and path registered twice"
    declared = {
        (method, route.path, route.name)
        for router in (
            images,
            models,
            videos,
            usage,
            files,
            batches,
            openapi,
            health,
            admin,
            reads,
            admin_keys,
            *routers(),
        )
        for route in router.routes
        for method in route.methods
    }
    on_app = {(m, r.path, r.name) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    assert on_app == declared, "every route of the HTTP modules, as declared, and no other"


class _Refused(Exception):
    """An exception of the test's own, rendered by a handler the test installs."""


async def _refusing_client() -> KeyPolicy:
    raise _Refused


async def _teapot(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": {"message": "overridden", "code": "teapot"}}, status_code=418)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/v1/videos"),
        ("GET", "/v1/videos/video_x"),
        ("GET", "/v1/models"),
    ],
)
def test_dependency_overrides_and_exception_handlers_apply_to_every_route(
    sim: Sim, tmp_path: Path, method: str, path: str
) -> None:
    """What a FastAPI user adds to the app (an override of the client-key dependency, an
    exception handler) applies to generations as to every other route: no route is served by
    a second dispatcher that would not know of them."""
    app = create_app(gateway_settings(sim, tmp_path))
    app.dependency_overrides[client] = _refusing_client
    app.add_exception_handler(_Refused, _teapot)
    server = BackgroundServer(app).start()
    try:
        # A valid key: only the override can refuse it.
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        answer = httpx2.request(method, f"{server.url}{path}", headers=headers, json={}, timeout=30)
    finally:
        server.stop()
    assert answer.status_code == 418, answer.text
    assert answer.json()["error"]["code"] == "teapot"
    assert answer.headers["x-request-id"]  # the same bookkeeping middleware around it


def _header_literals(path: Path) -> list[str]:
    """The string constants of a module that name a gateway header, docstrings aside."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and re.search(r"x-mediagate-|x-should-retry|\bdeprecation\b", node.value, re.IGNORECASE)
    ]


def test_one_module_renders_the_gateways_headers() -> None:
    """Facts travel typed (mediagate.context); `mediagate.http.headers` alone turns them into
    `x-mediagate-*` headers (and `x-should-retry`, `Deprecation`)."""
    writers = {
        str(path.relative_to(PACKAGE.parent)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.is_relative_to(SIMULATOR)
        if (found := _header_literals(path))
    }
    assert list(writers) == ["mediagate/http/headers.py"], writers


def test_a_fact_that_is_not_header_safe_is_never_rendered() -> None:
    """Whatever text reaches a fact (a client's field name, say), a broken header is never
    written: the value is left out, the rest of the answer's headers stand."""
    ctx = RequestContext(dropped=["style", "x\r\nx-evil: 1"], mapped=["size=1024x1024>\u00e9"])
    assert facts(ctx) == {}
    ctx = RequestContext(dropped=["style", "quality"], retries=2)
    assert facts(ctx) == {
        "x-mediagate-dropped": "quality,style",
        "x-should-retry": "false",
        "x-mediagate-retries": "2",
    }

"""The shape of the request path, measured: how many frames of our own code an image generation
passes from its handler to the upstream socket, and that no module is entered twice.

A recording transport under the gateway's upstream sender looks, at the moment the request goes
out, at the whole chain of coroutines that led there, across the tasks the gateway started on
the way (each task's parent is recorded by a task factory installed for the measurement).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

import httpx2

from .conftest import Gateway

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
    assert len(path) <= 7, hops
    # The recorder is an httpx2 transport, yet the call reached it the way production's reaches
    # aiohttp: the sender's whole-answer call on its transport interface, no branch of its own.
    assert path[-2:] == [
        ("mediagate/upstream/sender.py", "_attempt"),
        ("mediagate/upstream/transport.py", "exchange"),
    ], hops

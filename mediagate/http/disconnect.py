"""Cancelling work whose client has gone away.

Starlette and uvicorn do not cancel a request handler when its client disconnects: a
generation whose client gave up would run (and be paid for) to the end.
`cancelled_on_disconnect` runs the work under a watcher on the request's receive channel. Once
the body has been read, the only message left on that channel is `http.disconnect`, so the
watcher's wait costs nothing, and when it fires the work is cancelled, which closes its
upstream connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from starlette.requests import Request

from mediagate.errors import ClientGone

T = TypeVar("T")


@asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[None]:
    """The body of the `async with` runs in the request's own task and is cancelled (ClientGone
    raised in its place) if the client disconnects first; enter it only after the request body
    has been read in full. A scope, like `asyncio.timeout`, so the work needs no task (and no
    stack frame) of its own."""
    task = asyncio.current_task()
    assert task is not None
    active, gone = True, False
    receive = request.receive

    # The watcher waits in this one frame (no frame of a helper under it): it is held, with
    # its task, for as long as the work takes (a generation's minutes).
    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        if active:
            gone = True
            task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:  # our cancellation, nobody else's
            raise ClientGone(
                "The client closed the connection before the answer was ready."
            ) from None
        raise
    finally:
        active = False
        watcher.cancel()


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """The work's result, or ClientGone (the work cancelled) if the client disconnects first."""
    async with cancelled_on_disconnect(request):
        return await work

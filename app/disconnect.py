"""Cancelling work whose client has gone away.

Starlette and uvicorn do not cancel a request handler when its client disconnects: a
generation whose client gave up would run (and be paid for) to the end. `cancel_on_disconnect`
runs the work next to a watcher on the request's receive channel. Once the body has been read,
the only message left on that channel is `http.disconnect`, so the watcher's wait costs
nothing, and when it fires the work is cancelled, which closes its upstream connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Receive

from .errors import GatewayError

T = TypeVar("T")


class ClientGone(GatewayError):
    """Never seen by anyone: there is no client left to read it. 499, as nginx logs it."""

    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """The work's result, or ClientGone (the work cancelled) if the client disconnects first.
    Call it only after the request body has been read in full."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})  # let the work unwind (close its connections) first
        with contextlib.suppress(BaseException):
            task.result()  # whatever it ended with, nobody is left to hear it
        raise ClientGone("The client closed the connection before the answer was ready.")
    finally:
        watcher.cancel()
        task.cancel()

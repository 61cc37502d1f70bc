"""Serving an ASGI app: uvicorn's HTTP protocol with a deadline for a request's headers, and
a background thread on a loopback port.

The deadline is the gateway's own server's (`mediagate serve`) and every BackgroundServer's:
uvicorn bounds the idle time between requests (its keep-alive timeout) but not the time a
client takes to send a request's headers, and any byte it sends cancels even the keep-alive
timer, so a slowloris client (a header byte every few seconds) holds a connection forever.

The thread is used for the embedded simulator and by the tests. A thread of its own (rather
than a task in the caller's loop) keeps uvicorn from installing signal handlers that fight the
main server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # httptools (a C parser) is in the default install; h11 is the fallback.
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - only without httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_HEADER_TIMEOUT_S = 10.0


class _DeadlineTimer:
    """The timer both protocols below share: while a request's headers are awaited, it closes
    the connection when `header_timeout_s` passes first.

    One timer per connection, not one per request: arming moves the deadline (`_due`) and
    starts a timer only if none is pending; a timer that fires early (the deadline moved, or
    the headers came in) looks again then. A busy keep-alive connection thus costs a timer
    every `header_timeout_s`, not a timer made and cancelled for every request."""

    header_timeout_s = DEFAULT_HEADER_TIMEOUT_S
    _timer: asyncio.TimerHandle | None = None
    _due = 0.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _waiting_for_headers(self) -> bool:
        raise NotImplementedError

    def _arm(self) -> None:
        self._due = self.loop.time() + self.header_timeout_s
        if self._timer is None:
            self._timer = self.loop.call_at(self._due, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if not self._waiting_for_headers() or self.transport.is_closing():
            return  # the headers are in; the response's end arms it again
        if self.loop.time() < self._due:  # armed again since this timer started
            self._timer = self.loop.call_at(self._due, self._expired)
            return
        self.transport.close()


class _HeaderDeadline(_DeadlineTimer, H11Protocol):
    """H11Protocol that closes a connection whose next request's headers are not all in within
    `header_timeout_s` of the connection opening (or of the previous response ending)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        super().connection_made(cast(asyncio.Transport, transport))
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # Armed before the next cycle starts. Once a request's headers are in (their_state
        # leaves IDLE) the app's own limits apply: the pending timer then finds nothing to do.
        self._arm()
        super().on_response_complete()

    def _waiting_for_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE


if HttpToolsProtocol is not None:

    class _HttpToolsHeaderDeadline(_DeadlineTimer, HttpToolsProtocol):
        """The same deadline on uvicorn's httptools protocol (what `http="auto"` would pick):
        armed when a connection opens and when a response ends with no request queued behind
        it, disarmed when a request's headers are complete."""

        _awaiting_headers = True  # from the connection opening until the headers are in

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            # The request's headers are in: the app's own limits apply now (a pending timer
            # finds nothing to do).
            self._awaiting_headers = False
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            if not self.pipeline:  # a queued request's headers are already in
                self._awaiting_headers = True
                self._arm()
            super().on_response_complete()

        def _waiting_for_headers(self) -> bool:
            return self._awaiting_headers


def header_deadline_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's `http=` protocol class, with this deadline for a request's headers: on
    httptools when it is installed (uvicorn's own `http="auto"` choice), else on h11."""
    base: type[asyncio.Protocol] = _HeaderDeadline
    if HttpToolsProtocol is not None:
        base = _HttpToolsHeaderDeadline
    return type("HeaderDeadline", (base,), {"header_timeout_s": header_timeout_s})


class _OnlyWarningsFrom(logging.Filter):
    """Drops a background server's info lines ("Uvicorn running on ..."), which would read as
    the main server's."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self._thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.thread != self._thread.ident


class _PromptServer(uvicorn.Server):
    """uvicorn's server, stopped without waiting on its clock.

    uvicorn's main loop looks at `should_exit` every 0.1 s, and its shutdown sleeps 0.1 s
    before (and between) looking whether the connections are gone: about a quarter of a second
    per server stopped, which a test suite starting a gateway per test pays hundreds of times.
    Here the main loop sleeps until `wake` (called from any thread) or the next second (the
    Date header's refresh), and the shutdown does uvicorn's steps in order, looking every few
    milliseconds instead. The socket, protocols and lifespan are uvicorn's own.
    """

    _POLL_S = 0.005

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()  # set once started, or once it failed to start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None

    def wake(self) -> None:
        """Stop serving: callable from any thread, before or after the loop started."""
        self.should_exit = True
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        # The event before the first look at should_exit: a wake() racing this either finds
        # the event, or set should_exit before on_tick reads it.
        self._exit = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # a multiple of 10: on_tick refreshes the Date
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._exit.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn.Server.shutdown's steps, polling every few ms instead of every 0.1 s (its
        # connections and tasks are plain sets: there is no event to wait on).
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while self.server_state.connections and not self.force_exit:  # noqa: ASYNC110
                    await asyncio.sleep(self._POLL_S)
                while self.server_state.tasks and not self.force_exit:  # noqa: ASYNC110
                    await asyncio.sleep(self._POLL_S)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()


class BackgroundServer:
    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        loop: str = "auto",
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        # log_config=None, log_level=None: uvicorn's loggers are process-wide, and its defaults
        # would replace the process' logging (the gateway's JSON lines) with text handlers and
        # turn the main server's own info lines off. This server's lines below warnings are
        # left out by a filter on its thread instead.
        config = uvicorn.Config(
            app,
            log_level=None,
            access_log=False,
            lifespan="on",
            log_config=None,
            http=header_deadline_protocol(header_timeout_s),
            loop=loop,  # "auto": uvloop when installed, as `mediagate serve` runs
        )
        self._server = _PromptServer(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._quiet = _OnlyWarningsFrom(self._thread)
        logging.getLogger("uvicorn.error").addFilter(self._quiet)

    def _run(self) -> None:
        # uvicorn exits when the app fails to start; start() reports that instead.
        try:
            with contextlib.suppress(SystemExit):
                self._server.run(sockets=[self._sock])
        finally:
            self._server.ready.set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> BackgroundServer:
        self._thread.start()
        self._server.ready.wait(timeout_s)
        if not self._server.started:
            raise RuntimeError("the background server did not start")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.wake()
        self._thread.join(timeout_s)
        self._sock.close()
        logging.getLogger("uvicorn.error").removeFilter(self._quiet)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

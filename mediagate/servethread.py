"""Serving an ASGI app from a background thread on a loopback port.

Used for the embedded simulator and by the tests. A thread of its own (rather than a task in
the caller's loop) keeps uvicorn from installing signal handlers that fight the main server's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import uvicorn


class _OnlyWarningsFrom(logging.Filter):
    """Drops a background server's info lines ("Uvicorn running on ..."), which would read as
    the main server's."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self._thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.thread != self._thread.ident


class BackgroundServer:
    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        # log_config=None, log_level=None: uvicorn's loggers are process-wide, and its defaults
        # would replace the process' logging (the gateway's JSON lines) with text handlers and
        # turn the main server's own info lines off. This server's lines below warnings are
        # left out by a filter on its thread instead.
        config = uvicorn.Config(
            app, log_level=None, access_log=False, lifespan="on", log_config=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._quiet = _OnlyWarningsFrom(self._thread)
        logging.getLogger("uvicorn.error").addFilter(self._quiet)

    def _run(self) -> None:
        # uvicorn exits when the app fails to start; start() reports that instead.
        with contextlib.suppress(SystemExit):
            self._server.run(sockets=[self._sock])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()
        logging.getLogger("uvicorn.error").removeFilter(self._quiet)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Graceful shutdown, as a process: on SIGTERM the gateway stops accepting, lets the requests
in flight finish (for at most MEDIAGATE_SHUTDOWN_TIMEOUT_S), and exits 0.

The gateway runs as a deployment would, against an upstream of its own (the simulator, as a
separate process)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mediagate.simulator import DEFAULT_SIM_KEYS

from .processes import clean_env, free_port, serving

KEYS = {group: key for key, group in DEFAULT_SIM_KEYS.items()}


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[int]:
    with serving(["simulate"], clean_env(), tmp_path) as simulator:
        yield int(simulator.url.rsplit(":", 1)[1])


def start(tmp_path: Path, port: int, upstream: int, **env: str) -> subprocess.Popen[str]:
    environment = clean_env(
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_UPSTREAM_URL=f"http://127.0.0.1:{upstream}/v1",
        MEDIAGATE_KEY_DEFAULT=KEYS["default"],
        MEDIAGATE_API_KEYS="team:sk-team",
        **env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediagate", "serve", "--port", str(port)],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx2.TransportError:
            assert time.monotonic() < deadline, "the gateway did not start listening"
            time.sleep(0.1)


def slow_request(port: int, seconds: float, result: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            result["response"] = httpx2.post(
                f"http://127.0.0.1:{port}/v1/images/generations",
                headers={"Authorization": "Bearer sk-team"},
                json={"model": "gpt-image-2-web", "prompt": f"[sim:sleep={seconds}] a dusk"},
                timeout=30,
            )
        except httpx2.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_sigterm_finishes_requests_in_flight_then_exits_0(tmp_path: Path, upstream: int) -> None:
    port = free_port()
    proc = start(tmp_path, port, upstream)
    try:
        result: dict[str, Any] = {}
        thread = slow_request(port, 2, result)
        time.sleep(0.5)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while not refused(port):
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        assert thread.is_alive()  # new connections are refused while the old one is served
        thread.join(30)
        assert "error" not in result, result.get("error")
        response = result["response"]
        assert response.status_code == 200 and response.json()["data"]
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert "shut down on SIGTERM" in stderr


def test_shutdown_is_bounded(tmp_path: Path, upstream: int) -> None:
    port = free_port()
    proc = start(tmp_path, port, upstream, MEDIAGATE_SHUTDOWN_TIMEOUT_S="1")
    try:
        result: dict[str, Any] = {}
        thread = slow_request(port, 4, result)
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 3.5  # not the request's 4 seconds
        thread.join(30)
        # The request was cut short: the client sees an error, never a hang.
        assert "error" in result or result["response"].status_code >= 500
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)

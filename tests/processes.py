"""Gateways and simulators as real processes, for tests that need a process boundary
(kill -9, SIGTERM, RSS, two replicas, the CLI itself)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(settings: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without any MEDIAGATE_* setting (but the catalog check off),
    plus `extra`, plus `settings` given by field name as a gateway fixture takes them
    ({"store_url": ...} becomes MEDIAGATE_STORE_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGATE_")}
    # No catalog check at start unless a test asks for it: the upstream calls a test counts
    # are its own (as the in-process fixtures, tests/conftest.py:gateway_settings).
    env["MEDIAGATE_CATALOG_CHECK_INTERVAL_S"] = "0"
    env.update(extra)
    env.update({f"MEDIAGATE_{name.upper()}": value for name, value in (settings or {}).items()})
    return env


def wait_until_serving(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            httpx2.get(f"{url}/healthz", timeout=1)
            return
        except httpx2.TransportError:
            assert time.monotonic() < deadline, f"{url} did not start listening"
            time.sleep(0.05)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path  # the process's stdout and stderr

    def output(self) -> list[str]:
        return self.log.read_text().splitlines()


@contextmanager
def serving(
    command: list[str], env: dict[str, str], cwd: Path, soft_nofile: int | None = None
) -> Iterator[Served]:
    """Run `python -m app COMMAND --port P` until it answers, and stop it afterwards
    (a test may have stopped it itself). `soft_nofile`: the soft file limit it starts with."""
    port = free_port()
    log = cwd / f"{command[0]}-{port}.log"

    args = [sys.executable, "-m", "mediagate", *command, "--port", str(port)]
    if soft_nofile is not None:  # a shell that lowers it, then becomes the process (same pid)
        args = ["sh", "-c", f'ulimit -S -n {soft_nofile} && exec "$@"', "sh", *args]
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
        served = Served(proc, f"http://127.0.0.1:{port}", log)
        try:
            wait_until_serving(proc, served.url, log)
            yield served
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

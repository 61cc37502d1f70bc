"""The benchmark's processes: start, pin, wait for, measure (from /proc) and stop them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx2

T = TypeVar("T")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


class Proc:
    """A child process with its output in a log file, pinned to `cpu` when given."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cpu: int | None = None,
        pipes: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log,
            stderr=self._log,
            cwd=cwd or Path(__file__).resolve().parent.parent,
        )
        self.pid = self.popen.pid
        if cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.pid, {cpu})

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_s(self) -> float:
        """User plus system CPU seconds of the whole process (all its threads) so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
        raise KeyError(key)

    def rss_kb(self) -> int:
        return self._status("VmRSS")

    def hwm_kb(self) -> int:
        return self._status("VmHWM")

    def reset_hwm(self) -> bool:
        """Reset the peak RSS to the current RSS (Linux: clear_refs 5); False if not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                pipe.close()
        self._log.close()


def wait_http(proc: Proc, url: str, timeout_s: float = 60.0) -> None:
    """Until `url` answers 200 (or the process dies, or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not answer {url}:\n{proc.log_tail()}")
        time.sleep(0.1)


def wait_port(proc: Proc, port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not listen on {port}:\n{proc.log_tail()}")
        time.sleep(0.05)


# For the benchmark's own processes (the load generator and the upstream stand-in), never the
# gateway: glibc serves each allocation over its mmap threshold (128 KiB at first) with fresh
# pages and returns them on free, and raises that threshold only on some patterns of use. A
# driver reading 1.4 MB bodies then spent ~2 ms per request in page faults, until some other
# load happened to raise the threshold: direct calls measured 3x slower early in a run than
# late. Fixed thresholds make the baseline steady.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


@contextlib.contextmanager
def serve_gateway(
    name: str,
    log_dir: Path,
    env: dict[str, str],
    cpu: int | None = None,
    cwd: Path | None = None,
) -> Iterator[tuple[Proc, str]]:
    """`python -m mediagate serve` on a free port with `env`, ready (its /readyz answered):
    its process and URL; stopped on exit."""
    port = free_port()
    args = [sys.executable, "-m", "mediagate", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(name, args, log_dir, env, cpu, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, f"{url}/readyz")
        yield proc, url
    finally:
        proc.stop()


def steady_env() -> dict[str, str]:
    return {**os.environ, **STEADY_MALLOC}


class Loader:
    """The load generator process (bench.load): one command at a time, over its pipes."""

    def __init__(self, log_dir: Path, cpu: int | None) -> None:
        args = [sys.executable, "-m", "bench.load"]
        self.proc = Proc("load", args, log_dir, steady_env(), cpu=cpu, pipes=True)

    def run(
        self,
        scenario: dict[str, Any],
        concurrency: int,
        duration_s: float,
        max_requests: int = 0,
        pace_ms: float = 0,
    ) -> dict[str, Any]:
        command = {
            "scenario": scenario,
            "concurrency": concurrency,
            "duration_s": duration_s,
            "max_requests": max_requests,
            "pace_ms": pace_ms,
        }
        stdin: IO[bytes] | None = self.proc.popen.stdin
        stdout: IO[bytes] | None = self.proc.popen.stdout
        assert stdin is not None and stdout is not None
        stdin.write((json.dumps(command) + "\n").encode())
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator died:\n{self.proc.log_tail()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> None:
        self.proc.stop()


def peak_rss_during(proc: Proc, work: Callable[[], T]) -> tuple[int, int, T]:
    """(RSS before, peak RSS while `work` ran, in kB; `work`'s result). The peak is the kernel's
    high-water mark, reset first, and RSS sampled every few milliseconds besides."""
    before = proc.rss_kb()
    exact = proc.reset_hwm()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(OSError, KeyError, ValueError):
                peak = max(peak, proc.rss_kb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    if exact:
        peak = max(peak, proc.hwm_kb())
    return before, peak, result

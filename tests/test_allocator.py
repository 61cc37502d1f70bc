"""The C allocator's tuning (mediagate.allocator): large answers' memory kept between calls,
given back once the replica is quiet. What it saves is measured by `python -m bench b64`
(page faults per answer, CPU per MB); here, what it does and when."""

from __future__ import annotations

import asyncio
import ctypes.util
import os
import subprocess
import sys
import time

import pytest

from mediagate import allocator
from mediagate.allocator import Quiet

GLIBC = allocator._glibc() is not None


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tune_keeps_large_buffers_on_the_heap() -> None:
    """In a fresh process, an answer as the gateway reads one (12 MiB in pieces of 256 KiB,
    joined, all freed), five times: fresh pages each time with glibc's own thresholds, the
    same pages again once tuned."""
    script = """
import resource, sys
from mediagate import allocator
if sys.argv[1] == "tuned":
    assert allocator.tune(256 << 20)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def answer():
    pieces = [bytes([i]) * (256 << 10) for i in range(48)]
    whole = b"".join(pieces)
    del pieces
    return len(whole)
answer()  # once, so the heap has grown
before = faults()
for _ in range(5):
    answer()
print(faults() - before)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    counts = {}
    for mode in ("tuned", "plain"):
        out = subprocess.run(
            [sys.executable, "-c", script, mode], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        counts[mode] = int(out.stdout)
    pages = 5 * (12 << 20) // 4096  # one answer's worth of pages, five times
    assert counts["plain"] >= pages  # the pieces or the whole in fresh pages each time
    assert counts["tuned"] < pages // 20  # the same pages again


def test_tune_leaves_the_operators_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert allocator.tune(256 << 20) is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert allocator.tune(0) is False  # MEDIAGATE_ALLOCATOR_KEEP_MB=0: glibc's own behaviour


def test_no_glibc_is_no_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    allocator._glibc.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        assert allocator.tune(256 << 20) is False
        assert allocator.trim() is False
    finally:
        allocator._glibc.cache_clear()


async def _settle() -> None:
    """A few rounds of the loop (its timers due on the test's clock run), then 50 ms for a
    quiet call handed to a worker thread to be recorded."""
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.to_thread(time.sleep, 0.05)


def test_quiet_gives_back_only_after_a_quiet_spell(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        now = [1000.0]
        monkeypatch.setattr(loop, "time", lambda: now[0])  # the loop's clock is the test's
        ran: list[int] = []
        in_flight = [0]
        quiet = Quiet(after_s=2.0, on_quiet=lambda: ran.append(1))
        quiet.watch(lambda: in_flight[0])

        quiet.ended()  # at 1000: due at 1002
        now[0] = 1001.0
        quiet.ended()  # another call ended at 1001: quiet from then, due at 1003
        now[0] = 1002.5
        await _settle()
        assert ran == []  # the 1002 check found a call ended 1.5 s ago
        now[0] = 1003.5
        await _settle()
        assert ran == [1]

        in_flight[0] = 1  # a call in flight when the check comes: nothing given back
        quiet.ended()
        now[0] = 1010.0
        await _settle()
        assert ran == [1]
        in_flight[0] = 0  # it ended: its end starts the wait again
        quiet.ended()
        now[0] = 1012.5
        await _settle()
        assert ran == [1, 1]

    asyncio.run(run())


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_trim_runs() -> None:
    assert allocator.trim() in (True, False)  # gave back something, or there was nothing

"""The C allocator (glibc's malloc) kept from handing a large answer's memory back to the
system between calls, and made to hand it back once the replica is quiet.

An image answer is megabytes: its pieces as read from the socket, joined into one buffer,
then sent. glibc serves a buffer of more than its mmap threshold (128 KiB at first, raised on
the fly up to 32 MiB) with fresh pages from the system, and trims the top of its heap whenever
more than its trim threshold is free there; so each large answer was read into fresh pages,
each page a fault the kernel fills with zeros. On this 2-core VM that was ~6,000 faults and
~2 ms of CPU per MB relayed for a 12 MB answer at one call at a time: most of what the gateway
spent on it (`python -m bench b64`; docs/performance.md, "Base64 as bytes").

`tune(keep)` (called by `mediagate serve` at start, MEDIAGATE_ALLOCATOR_KEEP_MB, by default
the room for upstream answers, MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES) fixes both thresholds at
`keep`: a buffer up to that comes from the heap, whose freed pages the next call reuses, and up
to that much free memory at the heap's top is kept (beyond it, given back at once). Measured
with 4 calls of 4 x 12 MB answers at once: glibc's own thresholds 18,400 faults and 3.3 ms of
CPU per MB; keeping 256 MiB (less than the ~400 MB those calls use), 10,600 and 2.5 ms;
keeping 2 GiB, 1 fault and 1.5 ms. `Quiet` gives back all free memory (`malloc_trim`) once no
call has been in flight for a while, so a burst's memory does not stay with an idle replica.

Only on glibc: elsewhere (musl, macOS) `tune` and `trim` do nothing. An operator who set
glibc's own MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ keeps what they set.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mediagate")

# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_OPERATORS_OWN = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@functools.cache
def _glibc() -> Any | None:
    """glibc's malloc functions, or None where the C library is another."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):  # no C library to load, or one without them (musl)
        return None
    return libc


def tune(keep_bytes: int) -> bool:
    """Buffers up to `keep_bytes` from the heap, and up to that much of its free top kept for
    the next call (see the module's note). False: not done (not glibc, `keep_bytes` 0, or the
    operator set glibc's own variables)."""
    libc = _glibc()
    if libc is None or keep_bytes <= 0 or any(name in os.environ for name in _OPERATORS_OWN):
        return False
    keep = min(keep_bytes, 2**31 - 1)  # mallopt takes an int
    return bool(libc.mallopt(M_MMAP_THRESHOLD, keep) and libc.mallopt(M_TRIM_THRESHOLD, keep))


def trim() -> bool:
    """Every free page of the heap given back to the system (malloc_trim(0)). True if any was."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


class Quiet:
    """Runs `on_quiet` (by default `trim`, in a worker thread) once `after_s` have passed with
    no call in flight and none ended. The bookkeeping middleware tells it how to count the
    calls in flight (`watch`) and calls `ended()` each time they fall to 0; a replica under
    load never waits for it, an idle one gives its memory back once."""

    def __init__(self, after_s: float = 2.0, on_quiet: Callable[[], object] = trim) -> None:
        self.after_s = after_s
        self.on_quiet = on_quiet
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._busy: Callable[[], int] = lambda: 0

    def watch(self, busy: Callable[[], int]) -> None:
        self._busy = busy

    def ended(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._last + self.after_s, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._busy():
            return  # in flight now: its end calls ended() again
        loop = asyncio.get_running_loop()
        due = self._last + self.after_s
        if loop.time() < due:  # a call ended since this was set: wait from that one
            self._timer = loop.call_at(due, self._check)
            return
        # The walk over the heap holds malloc's lock for a moment: off the loop's thread.
        task = loop.run_in_executor(None, self.on_quiet)
        task.add_done_callback(_logged)


def _logged(done: asyncio.Future[object]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("giving free memory back failed: %r", done.exception())

"""What the simulator is configured with and what it remembers: its keys and timings, every
request it received, the files and video jobs it made, its fault plan.

Kept apart from the routes (app.py, videos.py) so that both can use it without importing each
other. The state is written by the simulator's server thread and read (and reset) by tests from
theirs.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mediagate.simulator.faults import FaultPlan

DEFAULT_SIM_KEYS: dict[str, str] = {
    "sk-sim-default": "default",
    "sk-sim-official": "OpenAI Official",
    "sk-sim-enterprise": "OpenAI Official Enterprise",
    # Video families after Sora (upstream-2026/): Muse in default/vip/svip, Seedance in
    # SeeDance2 (doubao-*) and in Dreamina and default (dreamina-*), Wan in Wan.
    "sk-sim-vip": "vip",
    "sk-sim-svip": "svip",
    "sk-sim-seedance2": "SeeDance2",
    "sk-sim-dreamina": "Dreamina",
    "sk-sim-wan": "Wan",
}


@dataclass
class SimConfig:
    keys: dict[str, str]  # bearer token -> token group name
    latency_s: float = 0.0  # service time added to every generation
    # Minimum time a streamed image takes, spread over its events; the larger of this and
    # latency_s is used, so a client always sees the events arrive one by one.
    stream_gap_s: float = 0.05
    # Videos: seconds queued, then seconds in progress, and the size of the content.
    video_queued_s: float = 0.03
    video_render_s: float = 0.15
    video_bytes: int = 1024 * 1024
    # sora2-shutdown.md: `sora-2`/`sora-2-pro` are no longer processed (a 404 naming the
    # successors). False keeps the old Sora route answering, for tests of that route itself.
    sora_closed: bool = True
    # Lifetime of the signed result links (Seedance `content.video_url`, Wan `result_url`):
    # about 24 h upstream; tests shorten it to see an expired link refused.
    signed_link_ttl_s: float = 24 * 3600


@dataclass
class Call:
    """One request the upstream received, as it arrived (body is the parsed JSON if any)."""

    method: str
    path: str
    group: str | None
    model: str | None
    body: Any
    status: int  # 0 while the request is still being answered
    # The request's headers (lower-case names) with the Authorization value masked as
    # "Bearer <group>" (or "<invalid>"): tests assert on what the gateway sent, key-free.
    # Filled by the video families' routes (Muse, Seedance, Wan, signed links).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SimState:
    calls: list[Call] = field(default_factory=list)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    videos: dict[str, Any] = field(default_factory=dict)  # upstream id -> simulator.videos.SimVideo
    faults: FaultPlan = field(default_factory=FaultPlan)  # see simulator/faults.py
    # (method, path, headers) of every HTTP request, image downloads included, as it arrived:
    # what a test checks the gateway never sends upstream (trace context, client headers).
    headers: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    # What `GET /v1/models` lists (simulator/listing.py): (group, model) pairs it leaves out,
    # (group, model, endpoint type) entries it adds, and whether every group gets the whole list.
    unlisted: set[tuple[str, str]] = field(default_factory=set)
    listed: list[tuple[str, str, str]] = field(default_factory=list)
    models_whole_list: bool = False
    # Requests still being answered: id -> ("METHOD path", the thread serving it).
    # Signs the simulator's object-store links (Seedance and Wan results), see jobs.py.
    link_secret: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)
    _in_flight: dict[int, tuple[str, int]] = field(default_factory=dict, repr=False)
    _idle: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _ids: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def forget_files(self) -> None:
        # Real upstream links expire; tests use this to prove the gateway kept its own copy.
        self.files.clear()

    def forget_videos(self) -> None:
        # Upstream video jobs expire too; the gateway must then answer 404, not 502.
        self.videos.clear()

    @contextmanager
    def serving(self, method: str, path: str) -> Iterator[None]:
        """One request in flight for as long as the block runs (the app wraps each in it)."""
        with self._idle:
            ident = next(self._ids)
            self._in_flight[ident] = (f"{method} {path}", threading.get_ident())
        try:
            yield
        finally:
            with self._idle:
                del self._in_flight[ident]
                if not self._in_flight:
                    self._idle.notify_all()

    def reset(self, timeout_s: float = 30.0) -> None:
        """Forget everything, once every request still being answered is done.

        A request the gateway gave up on (it timed out, or its client left) may still be
        sleeping, or trickling, here; answered after the reset, it would record itself (or its
        fault) into the next test. So this waits for it, up to `timeout_s` (a request that takes
        longer is stuck, and that is an error worth seeing).
        """
        with self._idle:
            me = threading.get_ident()
            if any(thread == me for _, thread in self._in_flight.values()):
                raise RuntimeError("reset() on the simulator's own thread would wait for itself")
            if not self._idle.wait_for(lambda: not self._in_flight, timeout_s):
                busy = sorted(what for what, _ in self._in_flight.values())
                raise TimeoutError(f"the simulator is still answering {busy} after {timeout_s} s")
            self.calls.clear()
            self.files.clear()
            self.videos.clear()
            self.faults.reset()
            self.headers.clear()
            self.unlisted.clear()
            self.listed.clear()
            self.models_whole_list = False

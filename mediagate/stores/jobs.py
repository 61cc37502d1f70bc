"""The video job store's interface and its record: one durable `VideoJob` per job, shared by
every replica.

The upstream only knows a job by its own id and only answers the token group (and, to be safe,
the very key) that created it; the store is what ties our id to those, to the client that owns
the job, and to what the job cost. `mediagate.stores.sql.jobs` implements `JobStore` in the
records' database (SQLite on one host, PostgreSQL for several replicas);
`mediagate.stores.open_stores` opens it. Status changes are compare-and-set, so a job's final
state and cost are written exactly once however many replicas or pollers see it finish.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

STATUSES = ("queued", "in_progress", "completed", "failed")
TERMINAL = frozenset({"completed", "failed"})
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class VideoJob:
    id: str  # ours (video_<hex>); the upstream's id is never shown to clients
    upstream_id: str
    owner: str  # the client key's name, so rotating a team's key keeps its jobs
    model: str  # the public model name
    route: str
    group: str
    key_fp: str  # SHA-256 of the upstream key that created the job, never the key
    prompt: str
    size: str
    seconds: int  # shown to clients as a string, as OpenAI's Video object has it
    status: str
    created_at: int
    updated_at: float
    progress: int = 0
    completed_at: int | None = None
    expires_at: int | None = None
    error: dict[str, Any] | None = None
    cost: float | None = None  # USD, once the job is final (0 when it failed)
    remixed_from: str | None = None  # our id of the source video
    reference: str | None = None  # what input_reference was sent, e.g. "image/png 1280x720"
    deleted_at: int | None = None  # deleted jobs stay on record (they were paid for)
    # The finished video's signed link, where the upstream gives one: what a route without a
    # content endpoint is downloaded from (without the key), and what a remix continues.
    result_url: str | None = None
    # The model name the client asked for (sora-2, an alias), which the Video object shows;
    # None in records written before it was kept (they show `model`).
    asked: str | None = None
    # The route the job started on, with its group's multiplier, as catalog.route_snapshot
    # wrote it: what polls, content and the bill use, so a catalog reload does not move a
    # running job to another route or price. None on records made before it was kept.
    route_snapshot: str | None = None

    @property
    def final(self) -> bool:
        return self.status in TERMINAL


FIELDS = tuple(f.name for f in dataclasses.fields(VideoJob))


def job_from_record(values: Mapping[str, Any]) -> VideoJob:
    """A job from the fields a backend stored. A record written before `seconds` was kept as
    an integer holds the string the Video object shows ("8", always written from an integer):
    read as that integer, so old records need no migration."""
    seconds = values.get("seconds")
    if isinstance(seconds, str):
        values = {**values, "seconds": int(seconds)}
    return VideoJob(**values)


# What a compare-and-set may change; who owns a job and where it lives never change.
MUTABLE = frozenset(
    {
        "status",
        "progress",
        "updated_at",
        "completed_at",
        "expires_at",
        "error",
        "cost",
        "deleted_at",
        "result_url",
    }
)


@dataclass(frozen=True)
class Delivery:
    """A webhook event in the outbox: written in the same atomic step as the job's final state,
    removed when its receiver answers 2xx (or its retries run out)."""

    id: str  # evt_<hex>: the event's id and its webhook-id header, the same on every try
    url: str  # where it goes (decided when the job ended)
    body: str  # the event's JSON, signed and sent as is
    created_at: float
    attempts: int = 0  # tries so far


@dataclass(frozen=True)
class Census:
    """The job store's counts, for the gauges: jobs by status, and the creation time of the
    oldest job not yet final (None when every job is)."""

    by_status: dict[str, int]
    oldest_unfinished: float | None


class UnknownCursor(LookupError):
    """A list cursor (`after`) that is not one of the owner's jobs."""


class JobStore(Protocol):
    """Implemented by `mediagate.stores.sql.jobs.SqlJobStore`."""

    async def insert(self, job: VideoJob) -> None:
        """Record a new job durably before the client hears of it."""

    async def get(self, job_id: str) -> VideoJob | None: ...

    async def update(
        self,
        job_id: str,
        expected_status: str,
        changes: Mapping[str, Any],
        *,
        event: Delivery | None = None,
    ) -> VideoJob | None:
        """Apply changes only if the job's status is still expected_status: the updated job if
        this call won, None if another writer changed the status first (or the job is gone).
        `event` joins the outbox in the same atomic step, only if this call won."""

    async def unfinished(self, limit: int) -> list[VideoJob]:
        """Up to `limit` jobs not yet final (deleted ones included: they still owe their
        bill), oldest first."""

    async def census(self) -> Census: ...

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease `name` for `holder` for `ttl_s` seconds: True if `holder`
        holds it now (it was free, expired, or already `holder`'s)."""

    async def claim_deliveries(self, hold_s: float, limit: int) -> list[Delivery]:
        """Up to `limit` outbox events due now, each held back from other claimers for
        `hold_s` seconds (a crashed claimer's events come due again after that)."""

    async def delivered(self, delivery_id: str) -> None:
        """The event is done with (delivered, or given up): out of the outbox."""

    async def retry_later(self, delivery_id: str, attempts: int, delay_s: float) -> None:
        """The event failed its try number `attempts`; due again in `delay_s` seconds."""

    async def outbox(self) -> tuple[int, float | None]:
        """Events waiting to be delivered, and the creation time of the oldest."""

    async def list(
        self, owner: str, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[VideoJob], bool]:
        """The owner's jobs that are not deleted, in creation order, after the cursor; and
        whether more follow."""

    async def close(self) -> None: ...


def check_changes(changes: Mapping[str, Any]) -> None:
    immutable = set(changes) - MUTABLE
    if immutable:
        raise ValueError(f"a job's {sorted(immutable)} cannot change")
    status = changes.get("status")
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown job status {status!r}")

"""Idempotency-Key records: the interface every backend implements, and its records.

The HTTP layer (`mediagate.http.idempotency`) decides what is kept; a backend only keeps it,
atomically, for every replica: `mediagate.stores.sqlite.idempotency` and
`mediagate.stores.redis.idempotency`, opened by `mediagate.stores.open_stores`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class Stored:
    """An answer as it was sent: status, headers and body, and what served it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    route: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Claim:
    # "unknown": the request's owner stopped (its lease lapsed) after its paid upstream call
    # was sent, so it may have been served and charged: nobody may run it again.
    state: Literal["owner", "running", "done", "mismatch", "unknown"]
    token: str | None = None  # the owner's, for renew/finish/release
    stored: Stored | None = None  # when done


class IdempotencyStore(Protocol):
    """Implemented by the SQLite and the Redis backend (stores/sqlite/, stores/redis/), which
    repeat these signatures on purpose: a duplicates report pairing them is expected."""

    async def claim(self, key: str, fingerprint: str, lease_s: float, ttl_s: float) -> Claim:
        """Atomically: create the record (or take over one whose lease expired, unless its
        paid call was sent) and own it, or report it running, done (with its answer), unknown
        (its owner stopped after sending) or claimed by another fingerprint."""

    async def renew(self, key: str, token: str, lease_s: float) -> bool: ...

    async def mark_sent(self, key: str, token: str) -> None:
        """Record that the owner is sending its paid upstream call: a takeover after that is
        refused ("unknown"), since the upstream may have done, and charged for, the work."""

    async def finish(self, key: str, token: str, stored: Stored, ttl_s: float) -> None: ...

    async def release(self, key: str, token: str) -> None:
        """Drop a running claim, so a repeat runs again."""

    async def close(self) -> None: ...


def encode_stored(stored: Stored) -> str:
    """A stored answer's metadata as the backends keep it (its body is kept apart, as bytes)."""
    return json.dumps(
        {
            "status": stored.status,
            "headers": stored.headers,
            "route": stored.route,
            "model": stored.model,
        }
    )


def decode_stored(meta: str | bytes, body: bytes) -> Stored:
    fields = json.loads(meta)
    return Stored(
        status=fields["status"],
        headers=[(str(k), str(v)) for k, v in fields["headers"]],
        body=body,
        route=fields.get("route"),
        model=fields.get("model"),
    )

"""Webhooks for video jobs: `video.completed` and `video.failed`, in OpenAI's event shape,
signed per Standard Webhooks (https://www.standardwebhooks.com), so a receiver verifies them
with the OpenAI SDK's `client.webhooks.unwrap(body, headers)`.

An event is made (`video_event`) when a job's final state is recorded, and joins the store's
outbox in the same atomic step (`JobStore.update(..., event=...)`): a job that ended has its
event on record, whatever happens to the process next. `WebhookSender` delivers the outbox off
the request path, on every replica (each claims its events in the store for a while, so two do
not send the same one at once): a 2xx ends an event; anything else is tried again after
MEDIAGATE_WEBHOOK_RETRY_BASE_S, doubling, until 24 h after the event was made, except a
receiver refused as a private address (the SSRF rule), which no retry would change: that event
is dropped at once and logged. Every try carries the same `webhook-id` (the event's id) and a
fresh timestamp and signature.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mediagate.errors import AddressRefused, FetchRefused, GatewayError
from mediagate.observability.metrics import Metrics
from mediagate.stores.jobs import Delivery, JobStore
from mediagate.upstream.fetcher import SafeFetcher

log = logging.getLogger("mediagate")

EVENT_TYPES = {"completed": "video.completed", "failed": "video.failed"}
GIVE_UP_AFTER_S = 24 * 3600.0  # an event not delivered within a day is dropped (and logged)
MAX_DELAY_S = 3600.0  # the longest wait between two tries
_BATCH = 32


def check_secret(secret: str) -> bytes:
    """The key inside a `whsec_<base64>` secret, or ValueError."""
    if not secret.startswith("whsec_"):
        raise ValueError("MEDIAGATE_WEBHOOK_SECRET must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("MEDIAGATE_WEBHOOK_SECRET must look like whsec_<base64>") from None
    if len(key) < 16:
        raise ValueError("MEDIAGATE_WEBHOOK_SECRET's key must be at least 16 bytes")
    return key


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def video_event(video_id: str, status: str, url: str, now: float) -> Delivery:
    """The event for a job that reached `status` (completed or failed), bound for `url`."""
    return event(EVENT_TYPES[status], video_id, url, now)


def event(kind: str, object_id: str, url: str, now: float) -> Delivery:
    """A Standard Webhooks event of OpenAI's shape (`video.completed`, `batch.completed`, ...)
    about the object `object_id`, bound for `url`."""
    event_id = f"evt_{secrets.token_hex(16)}"
    body = {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created_at": int(now),
        "data": {"id": object_id},
    }
    return Delivery(event_id, url, json.dumps(body, separators=(",", ":")), now)


def signature(key: bytes, event_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header: v1, then base64 HMAC-SHA256 of `id.timestamp.body`."""
    signed = f"{event_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def retry_delay(base_s: float, attempts: int) -> float:
    """How long to wait after the `attempts`-th failed try: base, 2 x base, 4 x base, ..."""
    return float(min(MAX_DELAY_S, base_s * 2 ** min(attempts - 1, 30)))


@dataclass
class WebhookSender:
    jobs: JobStore
    poster: SafeFetcher  # the SSRF rules, with MEDIAGATE_WEBHOOK_ALLOW_HOSTS allowed too
    secret: str
    retry_base_s: float
    metrics: Metrics
    # A claimed event is due again after this (its claimer died mid-try): the POST's timeout
    # and some.
    hold_s: float = 15.0
    clock: Callable[[], float] = time.time
    _key: bytes = field(init=False)

    def __post_init__(self) -> None:
        self._key = check_secret(self.secret)

    async def send_due(self) -> int:
        """Try every event due now once; how many were tried."""
        due = await self.jobs.claim_deliveries(self.hold_s, _BATCH)
        await asyncio.gather(*(self._try(event) for event in due))
        return len(due)

    async def refresh_gauges(self) -> None:
        depth, oldest = await self.jobs.outbox()
        self.metrics.webhook_queue.set(depth)
        self.metrics.webhook_oldest.set(max(0.0, self.clock() - oldest) if oldest else 0)

    async def _try(self, event: Delivery) -> None:
        now = int(self.clock())
        headers = {
            "content-type": "application/json",
            "user-agent": "mediagate-webhooks",
            "webhook-id": event.id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature(self._key, event.id, now, event.body),
        }
        outcome = "failed"
        try:
            status = await self.poster.post(event.url, event.body.encode(), headers)
            why = f"HTTP {status}"
        except AddressRefused as exc:
            # Not a public address, nor allowed: every retry would be refused the same way, so
            # the delivery fails for good (an operator who allows the host later is not waited
            # for 24 h; the job's state is in the Videos API all the same).
            await self.jobs.delivered(event.id)
            self.metrics.webhook_deliveries.labels("refused").inc()
            fields = {"event_id": event.id, "attempts": event.attempts + 1, "reason": exc.message}
            log.error(
                "webhook target refused (not a public address): delivery dropped",
                extra={"fields": fields},
            )
            return
        except FetchRefused as exc:  # the host did not resolve, ...: may pass later
            status, why, outcome = 0, exc.message, "refused"
        except GatewayError as exc:
            status, why = 0, exc.message
        if 200 <= status < 300:
            await self.jobs.delivered(event.id)
            self.metrics.webhook_deliveries.labels("delivered").inc()
            return
        attempts = event.attempts + 1
        delay = retry_delay(self.retry_base_s, attempts)
        fields = {"event_id": event.id, "attempts": attempts, "reason": why}
        if self.clock() + delay > event.created_at + GIVE_UP_AFTER_S:
            await self.jobs.delivered(event.id)
            self.metrics.webhook_deliveries.labels("expired").inc()
            log.error("webhook given up after 24 h", extra={"fields": fields})
            return
        await self.jobs.retry_later(event.id, attempts, delay)
        self.metrics.webhook_deliveries.labels(outcome).inc()
        log.warning("webhook delivery failed", extra={"fields": {**fields, "retry_in_s": delay}})

    async def run_forever(self, every_s: float) -> None:
        while True:
            try:
                while await self.send_due() == _BATCH:
                    pass  # a backlog: keep going
                await self.refresh_gauges()
            except Exception as exc:  # a failed round must not stop the next
                log.warning("webhook delivery round failed: %s", type(exc).__name__)
            await asyncio.sleep(every_s)

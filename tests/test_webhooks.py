"""Webhooks: video.completed / video.failed events, signed so the OpenAI SDK's
`webhooks.unwrap` accepts them, delivered from a durable outbox with retries (the same
webhook-id every time) to receivers the SSRF rules allow, and not lost to a kill -9."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import openai
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mediagate.servethread import BackgroundServer
from mediagate.settings import Settings
from mediagate.videos.webhooks import new_secret, retry_delay

from .conftest import CLIENT_KEY, GROUP_KEYS, Gateway, Sim, wait_until
from .processes import clean_env, serving
from .test_reconciler import metric

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class Receiver:
    """A webhook receiver on loopback that answers 500 to its first `fail_first` deliveries
    (or to all of them while `failing` is set) and keeps what it was sent."""

    url: str = ""
    host: str = ""
    fail_first: int = 0
    failing: bool = False
    received: list[tuple[bytes, dict[str, str], float]] = field(default_factory=list)
    answered_ok: list[str] = field(default_factory=list)  # webhook-ids answered 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.received.append((body, dict(request.headers), time.monotonic()))
            fail = self.failing or len(self.received) <= self.fail_first
            if not fail:
                self.answered_ok.append(request.headers["webhook-id"])
        return Response(status_code=500 if fail else 200)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    app = Starlette(routes=[Route("/hooks", found.handle, methods=["POST"])])
    with BackgroundServer(app) as server:
        found.url = f"{server.url}/hooks"
        found.host = f"{server.host}:{server.port}"
        yield found


def unwrap(secret: str, body: bytes, headers: dict[str, str]) -> object:
    client = openai.OpenAI(api_key="unused", webhook_secret=secret)
    return client.webhooks.unwrap(body, headers)


def test_a_receiver_failing_twice_gets_the_event_on_the_third_try(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], receiver: Receiver
) -> None:
    secret = new_secret()
    receiver.fail_first = 2
    gateway = make_gateway(
        reads_per_minute=0,  # polled every 10 ms: the read limit is not what is tested
        video_poll_override_ms=20,  # the gateway asks the upstream that often (Muse: 15 s)
        webhook_url=receiver.url,
        webhook_secret=secret,
        webhook_allow_hosts=[receiver.host],
        webhook_retry_base_s=0.2,
        reconcile_interval_s=0.2,
        **job_store,
    )
    video = gateway.sdk().videos.create(prompt="[sim:render=0.2] hooked")  # nobody polls

    wait_until(lambda: len(receiver.received) >= 3, timeout_s=5)
    time.sleep(0.5)
    assert len(receiver.received) == 3  # a 2xx ends it
    ids = {headers["webhook-id"] for _, headers, _ in receiver.received}
    assert len(ids) == 1  # the same webhook-id on every try
    for body, headers, _ in receiver.received:  # every try is signed afresh and verifies
        event = unwrap(secret, body, headers)
        assert event.type == "video.completed"
    body, headers, _ = receiver.received[2]
    event = json.loads(body)
    assert event["object"] == "event" and event["id"] == headers["webhook-id"]
    assert event["id"].startswith("evt_") and event["data"] == {"id": video.id}
    assert isinstance(event["created_at"], int)
    # Exponential backoff: the second retry waited about twice as long as the first.
    times = [at for _, _, at in receiver.received]
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    assert first_wait >= retry_delay(0.2, 1) - 0.05 and second_wait >= retry_delay(0.2, 2) - 0.05
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(new_secret(), body, headers)

    def drained() -> bool:
        text = httpx2.get(f"{gateway.url}/metrics").text
        return (
            metric(text, "mediagate_webhook_deliveries_total", outcome="delivered") == 1
            and metric(text, "mediagate_webhook_deliveries_total", outcome="failed") == 2
            and metric(text, "mediagate_webhook_queue_depth") == 0
        )

    wait_until(drained, timeout_s=3)


def test_a_failed_job_sends_video_failed(
    make_gateway: Callable[..., Gateway], receiver: Receiver
) -> None:
    secret = new_secret()
    gateway = make_gateway(
        reads_per_minute=0,  # polled every 10 ms: the read limit is not what is tested
        video_poll_override_ms=20,  # the gateway asks the upstream that often (Muse: 15 s)
        webhook_url=receiver.url,
        webhook_secret=secret,
        webhook_allow_hosts=[receiver.host],
    )
    sdk = gateway.sdk()
    video = sdk.videos.create_and_poll(prompt="[sim:fail] doomed", poll_interval_ms=10)
    assert video.status == "failed"
    wait_until(lambda: len(receiver.received) == 1, timeout_s=3)
    body, headers, _ = receiver.received[0]
    event = unwrap(secret, body, headers)
    assert event.type == "video.failed"
    assert json.loads(body)["data"] == {"id": video.id}


def test_a_private_receiver_needs_an_allow_list_entry(
    make_gateway: Callable[..., Gateway], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediagate")
    gateway = make_gateway(
        reads_per_minute=0,  # polled every 10 ms: the read limit is not what is tested
        video_poll_override_ms=20,  # the gateway asks the upstream that often (Muse: 15 s)
        webhook_url=receiver.url,
        webhook_secret=new_secret(),
        webhook_retry_base_s=0.1,
    )
    gateway.sdk().videos.create_and_poll(prompt="ssrf", poll_interval_ms=10)

    def refused() -> bool:
        text = httpx2.get(f"{gateway.url}/metrics").text
        return metric(text, "mediagate_webhook_deliveries_total", outcome="refused") >= 1

    wait_until(refused, timeout_s=3)
    assert receiver.received == []
    # No retry can change the refusal: the event is dropped, not retried for 24 h.
    text = httpx2.get(f"{gateway.url}/metrics").text
    assert metric(text, "mediagate_webhook_queue_depth") == 0
    assert metric(text, "mediagate_webhook_deliveries_total", outcome="refused") == 1
    assert not metric(text, "mediagate_webhook_deliveries_total", outcome="failed")
    [line] = [r for r in caplog.records if "webhook target refused" in r.getMessage()]
    reason = line.fields["reason"]  # type: ignore[attr-defined]
    assert reason.startswith("Refused to POST to '127.0.0.1'") and "image" not in reason


def test_a_keys_file_webhook_url_wins_for_its_key(
    make_gateway: Callable[..., Gateway], receiver: Receiver, tmp_path: Path
) -> None:
    from mediagate.accounting.clients import digest

    keys = tmp_path / "keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - name: team-a\n    sha256: {digest(CLIENT_KEY)}\n"
        f"    webhook_url: {receiver.url}\n"
    )
    secret = new_secret()
    gateway = make_gateway(
        reads_per_minute=0,  # polled every 10 ms: the read limit is not what is tested
        video_poll_override_ms=20,  # the gateway asks the upstream that often (Muse: 15 s)
        api_keys=None,
        keys_file=keys,
        webhook_url="http://192.0.2.1:9/nowhere",  # the gateway's: not used for team-a
        webhook_secret=secret,
        webhook_allow_hosts=[receiver.host],
    )
    video = gateway.sdk().videos.create_and_poll(prompt="mine", poll_interval_ms=10)
    wait_until(lambda: len(receiver.received) == 1, timeout_s=3)
    body, headers, _ = receiver.received[0]
    unwrap(secret, body, headers)
    assert json.loads(body)["data"] == {"id": video.id}


def test_kill_9_between_the_jobs_end_and_delivery_still_delivers(
    sim: Sim, tmp_path: Path, job_store: dict[str, str], receiver: Receiver
) -> None:
    secret = new_secret()
    receiver.failing = True  # nothing is delivered while the first gateway lives
    env = clean_env(
        job_store,
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEY_OPENAIOFFICIAL=GROUP_KEYS["OpenAI Official"],
        MEDIAGATE_API_KEYS=f"team-a:{CLIENT_KEY}",
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_RECONCILE_INTERVAL_S="0.2",
        MEDIAGATE_WEBHOOK_URL=receiver.url,
        MEDIAGATE_WEBHOOK_SECRET=secret,
        MEDIAGATE_WEBHOOK_ALLOW_HOSTS=receiver.host,
        MEDIAGATE_WEBHOOK_RETRY_BASE_S="0.2",
        # The claim a try cut off by the kill leaves: held 2 s here (15 s by default).
        MEDIAGATE_WEBHOOK_TIMEOUT_S="1",
        MEDIAGATE_WEBHOOK_CLAIM_HOLD_S="2",
    )

    with serving(["serve"], env, tmp_path) as gateway:
        sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        video = sdk.videos.create(prompt="[sim:render=0.2] survive delivery")
        wait_until(lambda: len(receiver.received) >= 1, timeout_s=5)  # the job ended
        os.kill(gateway.proc.pid, signal.SIGKILL)
        gateway.proc.wait(timeout=10)
    first_id = receiver.received[0][1]["webhook-id"]
    receiver.failing = False

    with serving(["serve"], env, tmp_path):
        # A try cut off by the kill stays claimed for the claim hold, then is due.
        wait_until(lambda: receiver.answered_ok == [first_id], timeout_s=12)
    body, headers, _ = receiver.received[-1]
    event = unwrap(secret, body, headers)
    assert event.type == "video.completed"
    assert json.loads(body)["data"] == {"id": video.id}
    assert {h["webhook-id"] for _, h, _ in receiver.received} == {first_id}


def test_a_claim_hold_must_outlast_a_delivery() -> None:
    # Otherwise a live try's event would come due again, and be sent twice, while it runs.
    with pytest.raises(ValidationError, match="MEDIAGATE_WEBHOOK_CLAIM_HOLD_S"):
        Settings(webhook_timeout_s=5, webhook_claim_hold_s=5)
    assert Settings(webhook_timeout_s=1, webhook_claim_hold_s=2).webhook_claim_hold_s == 2

"""Retries through the gateway: only where the upstream did no paid work, Retry-After honoured,
the SDK told not to retry on top, per-route timeouts; and key pools with cool-downs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from mediagate.catalog import load_catalog
from mediagate.errors import Scrubber, UpstreamError
from mediagate.observability.metrics import Metrics
from mediagate.upstream.keyring import key_fingerprint
from mediagate.upstream.sender import KeyRing, Upstream
from mediagate.upstream.transport import HttpxTransport

from .conftest import CLIENT_KEY, GROUP_KEYS, Gateway, Sim
from .resilience import catalog, metric, pool_settings, statuses
from .resilience import pool_sim as pool_sim  # a fixture
from .test_videos import stored

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Sora warning


@pytest.fixture
def fast(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    return make_gateway(config=catalog(tmp_path))


def test_a_429_burst_is_retried_after_its_retry_after(fast: Gateway, sim: Sim) -> None:
    response = fast.generate("[sim:burst429=2] [sim:retryafter=0.05] a fox")
    assert response.status_code == 200
    assert statuses(sim) == [429, 429, 200]
    assert response.headers["x-mediagate-retries"] == "2"
    # The gateway retried: the SDK must not multiply that by its own retries.
    assert response.headers["x-should-retry"] == "false"
    labels = {"route": "gpt-image-2.web", "group": "default", "reason": "rate_limited"}
    assert metric(fast.url, "mediagate_upstream_retries_total", **labels) == 2


def test_a_503_burst_is_retried_with_backoff(fast: Gateway, sim: Sim) -> None:
    response = fast.generate("[sim:burst503=2] a fox")
    assert response.status_code == 200
    assert statuses(sim) == [503, 503, 200]
    assert response.headers["x-mediagate-retries"] == "2"


def test_a_first_answer_carries_no_retry_headers(fast: Gateway, sim: Sim) -> None:
    response = fast.generate("a fox")
    assert response.status_code == 200
    assert "x-mediagate-retries" not in response.headers
    assert "x-should-retry" not in response.headers


def test_attempts_are_bounded(fast: Gateway, sim: Sim) -> None:
    response = fast.generate("[sim:status=503] a fox")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert statuses(sim) == [503, 503, 503]
    assert response.headers["x-mediagate-retries"] == "2"
    assert response.headers["x-should-retry"] == "false"


def test_a_500_is_not_retried_on_a_paid_call_unless_the_route_says_so(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    plain = make_gateway(config=catalog(tmp_path))
    assert plain.generate("[sim:burst500=1:a] x").status_code == 502
    assert statuses(sim) == [500]
    sim.state.reset()
    override = catalog(tmp_path, {"gpt-image-2.web": {"retry": {"on_status": [500]}}})
    lenient = make_gateway(config=override)
    response = lenient.generate("[sim:burst500=1:b] x")
    assert response.status_code == 200
    assert statuses(sim) == [500, 200]


def test_a_retry_after_too_long_to_wait_goes_to_the_client(fast: Gateway, sim: Sim) -> None:
    response = fast.generate("[sim:burst429=5] [sim:retryafter=60] x")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "60"
    assert statuses(sim) == [429]
    # Nothing was retried here, so the SDK may honour Retry-After itself.
    assert "x-should-retry" not in response.headers


def test_the_sdk_does_not_retry_on_top_of_the_gateway(fast: Gateway, sim: Sim) -> None:
    client = openai.OpenAI(base_url=f"{fast.url}/v1", api_key=CLIENT_KEY, max_retries=2)
    with pytest.raises(openai.InternalServerError):
        client.images.generate(model="gpt-image-2-web", prompt="[sim:status=503] x")
    assert len(sim.sent()) == 3  # the gateway's three attempts, not three times three


def test_a_timeout_is_never_retried_and_says_so(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    override = catalog(tmp_path, {"gpt-image-2.web": {"timeouts": {"total": 0.3}}})
    gateway = make_gateway(config=override)
    response = gateway.generate("[sim:sleep=1] x")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.headers["x-should-retry"] == "false"
    assert "x-mediagate-retries" not in response.headers
    assert len(sim.sent()) == 1
    # The timeout is the route's: another route keeps the default.
    assert gateway.generate("[sim:sleep=0.5] y", model="gpt-4o-image").status_code == 200


def test_a_connection_lost_after_sending_a_generation_is_not_retried(
    fast: Gateway, sim: Sim
) -> None:
    response = fast.generate("[sim:reset] x")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_connection_lost"
    assert response.headers["x-should-retry"] == "false"
    assert statuses(sim) == [0]


def test_an_unreachable_upstream_is_retried_then_502(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = make_gateway(upstream_url="http://127.0.0.1:9/v1", config=catalog(tmp_path))
    response = gateway.generate("x")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert response.headers["x-mediagate-retries"] == "2"
    labels = {"route": "gpt-image-2.web", "reason": "connect"}
    assert metric(gateway.url, "mediagate_upstream_retries_total", **labels) == 2


class FlakyConnect(httpx2.AsyncBaseTransport):
    """A real transport whose first connections are refused."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.sent = 0
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        if self.refusals:
            self.refusals -= 1
            raise httpx2.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_refused_connection_is_retried_even_for_a_paid_call(sim: Sim) -> None:
    route = load_catalog().routes["gpt-image-2.web"]
    route = route.model_copy(update={"retry": route.retry.model_copy(update={"backoff_s": 0.01})})
    from mediagate.upstream.dialects import UpstreamRequest

    async def call() -> tuple[Any, int]:
        transport = FlakyConnect(refusals=2)
        async with transport:
            keys = KeyRing({"default": [GROUP_KEYS["default"]]})
            upstream = Upstream(
                HttpxTransport(transport), f"{sim.url}/v1", keys, Metrics(), Scrubber(), 10
            )
            request = UpstreamRequest(
                "/images/generations", {"model": "gpt-image-2", "prompt": "p"}
            )
            answer = await upstream.send(route, request, paid=True, parse=True)
            return answer.payload, transport.sent

    payload, sent = asyncio.run(call())
    assert payload["data"] and sent == 3
    assert statuses(sim) == [200]  # the refused attempts never reached it

    async def refused_always() -> None:
        async with FlakyConnect(refusals=9) as transport:
            keys = KeyRing({"default": [GROUP_KEYS["default"]]})
            upstream = Upstream(
                HttpxTransport(transport), f"{sim.url}/v1", keys, Metrics(), Scrubber(), 10
            )
            request = UpstreamRequest(
                "/images/generations", {"model": "gpt-image-2", "prompt": "p"}
            )
            await upstream.send(route, request, paid=True)

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(refused_always())
    assert caught.value.code == "upstream_unreachable"


@pytest.fixture
def videos(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    override = catalog(tmp_path, {"muse-video": {"timeouts": {"status": 0.3}}})
    return make_gateway(config=override, video_poll_after_ms=20)


def test_status_polls_are_retried_on_any_transient_failure(videos: Gateway, sim: Sim) -> None:
    sdk = videos.sdk()
    # Still rendering through the whole loop: a finished job is answered from its record, and
    # the simulator's default render (0.15 s) is shorter than this loop on a loaded machine.
    video = sdk.videos.create(prompt="a calm sea [sim:render=60]")
    for kind in ("reset", "500", "nonjson", "timeout"):
        sim.state.faults.set(timeout_s=1.0)
        sim.state.faults.inject(kind, path="/v1/videos/", method="GET")
        # Past the poll-after interval (20 ms): a sooner poll is answered from the job record.
        time.sleep(0.05)
        raw = sdk.videos.with_raw_response.retrieve(video.id)
        assert raw.status_code == 200, kind
        assert raw.headers["x-mediagate-retries"] == "1"
    gets = [s for s in sim.state.faults.seen if s.method == "GET"]
    assert [s.fault for s in gets] == [
        "reset",
        None,
        "500",
        None,
        "nonjson",
        None,
        "slowstart",
        None,
    ]


def test_a_video_create_is_paid_work(videos: Gateway, sim: Sim) -> None:
    sim.state.faults.inject("reset", path="/v1/videos", method="POST")
    with pytest.raises(openai.InternalServerError) as caught:
        videos.sdk().videos.create(prompt="a calm sea")
    assert caught.value.code == "upstream_connection_lost"
    assert len([c for c in sim.sent("/v1/videos") if c.method == "POST"]) == 1


# Key pools.


def test_requests_spread_over_a_groups_keys(
    make_gateway: Callable[..., Gateway], pool_sim: Sim, tmp_path: Path
) -> None:
    gateway = make_gateway(**pool_settings(pool_sim, default="sk-d1,sk-d2"))
    for index in range(4):
        assert gateway.generate(f"p{index}").status_code == 200
    assert [s.key for s in pool_sim.state.faults.seen] == ["sk-d1", "sk-d2", "sk-d1", "sk-d2"]


def test_a_refused_key_cools_down_and_the_next_key_serves(
    make_gateway: Callable[..., Gateway], pool_sim: Sim
) -> None:
    gateway = make_gateway(**pool_settings(pool_sim, default="sk-revoked,sk-d1,sk-d2"))
    first = gateway.generate("p")
    assert first.status_code == 200
    assert first.headers["x-mediagate-retries"] == "1"
    for index in range(4):
        assert gateway.generate(f"p{index}").status_code == 200
    keys = [s.key for s in pool_sim.state.faults.seen]
    assert keys[0] == "sk-revoked" and "sk-revoked" not in keys[1:]
    assert metric(gateway.url, "mediagate_upstream_key_cooldowns_total", reason="auth") == 1


def test_a_key_rate_limited_twice_in_a_row_cools_down(
    make_gateway: Callable[..., Gateway], pool_sim: Sim
) -> None:
    pool_sim.state.faults.set(by_key={"sk-d1": "429"}, retry_after_s=5)
    gateway = make_gateway(**pool_settings(pool_sim, default="sk-d1,sk-d2"))
    for index in range(5):
        response = gateway.generate(f"p{index}")
        assert response.status_code == 200
    keys = [(s.key, s.status) for s in pool_sim.state.faults.seen]
    # d1 is tried twice (a 429 each time; the other key serves at once, no 5 s wait), then
    # rests while d2 serves everything.
    assert keys == [("sk-d1", 429), ("sk-d2", 200)] * 2 + [("sk-d2", 200)] * 3
    assert metric(gateway.url, "mediagate_upstream_key_cooldowns_total", reason="rate_limited") == 1


def test_every_key_refused_is_a_clear_502(
    make_gateway: Callable[..., Gateway], pool_sim: Sim
) -> None:
    gateway = make_gateway(**pool_settings(pool_sim, default="sk-bad1,sk-bad2"))
    response = gateway.generate("p")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"
    assert [s.key for s in pool_sim.state.faults.seen] == ["sk-bad1", "sk-bad2"]
    assert "sk-bad" not in response.text


def test_a_throttled_pool_with_a_dead_key_answers_429_not_502(
    make_gateway: Callable[..., Gateway], pool_sim: Sim, tmp_path: Path
) -> None:
    # Issue 14, item 8: one key refused, the other rate limited. The client can act on a rate
    # limit (wait, retry); "the upstream rejected our credentials" only the operator can fix.
    # A Retry-After past max_retry_after_s (30 s): not waited out, the client gets it.
    pool_sim.state.faults.set(by_key={"sk-d1": "429"}, retry_after_s=31)
    gateway = make_gateway(**pool_settings(pool_sim, default="sk-d1,sk-dead"))
    for index in range(4):  # before the keys rest, and once both of them are resting
        with pytest.raises(openai.RateLimitError) as caught:
            gateway.sdk().images.generate(model="gpt-image-2-web", prompt=f"p{index}")
        assert caught.value.status_code == 429
        assert caught.value.response.headers["retry-after"] == "31"
        assert "sk-d" not in caught.value.response.text


def test_a_video_job_stays_bound_to_the_key_that_created_it(
    make_gateway: Callable[..., Gateway], pool_sim: Sim, tmp_path: Path
) -> None:
    gateway = make_gateway(
        **pool_settings(pool_sim, default="sk-revoked,sk-d1,sk-d2"), config=catalog(tmp_path)
    )
    sdk = gateway.sdk()
    video = sdk.videos.create_and_poll(prompt="a calm sea")  # Muse, in the default group
    assert video.status == "completed"
    assert sdk.videos.download_content(video.id).read()
    assert stored(gateway, video.id).key_fp == key_fingerprint("sk-d1")
    seen = [(s.method, s.key) for s in pool_sim.state.faults.seen]
    assert seen[:2] == [("POST", "sk-revoked"), ("POST", "sk-d1")]
    assert {key for _, key in seen[2:]} == {"sk-d1"}  # every poll and the download

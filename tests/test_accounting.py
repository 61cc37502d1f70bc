"""Cost per route and per video, budgets with reservations, rate and concurrency limits,
and the usage views, on the default (SQLite) store."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from mediagate.app import create_app
from mediagate.servethread import BackgroundServer
from mediagate.simulator import make_png

from .conftest import CLIENT_KEY, Gateway, Sim, fast_video_polls, gateway_settings, wait_until
from .resilience import metric
from .test_keys import entry, keys_file

KEY = "sk-metered"


@pytest.fixture
def metered(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Callable[..., Gateway]:
    """A gateway whose key `sk-metered` has the given policy."""

    def make(**policy: Any) -> Gateway:
        path = keys_file(tmp_path / "keys.yaml", [entry("metered", KEY, **policy)])
        polls = fast_video_polls(tmp_path / "polls.yaml", 0.02)
        return make_gateway(keys_file=path, admin_key="sk-admin", config=polls)

    return make


def race(gateway: Gateway, count: int, prompt: str) -> list[str]:
    """`count` concurrent web generations with the metered key: "ok" or each refusal's code."""

    def one(i: int) -> str:
        try:
            gateway.sdk(api_key=KEY).images.generate(
                model="gpt-image-2-web", prompt=f"{prompt} {i}"
            )
            return "ok"
        except openai.RateLimitError as exc:
            return str(exc.code)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def cost_of(raw: Any) -> float:
    return float(raw.headers["x-mediagate-cost-usd"])


@pytest.mark.parametrize(
    ("model", "n", "cost"),
    [
        ("gpt-image-2-web", 2, 0.06),  # $0.03 a call, one image a call
        ("gpt-image-2-vip", 1, 0.03),
        ("gpt-image-2.5-flare-vip", 2, 0.06),
        ("gpt-image-2.5-sunburst-vip", 1, 0.03),
        ("gpt-image-2.5-web", 3, 0.09),
        ("sora_image", 3, 0.03),  # $0.01 an image
        ("gpt-4o-image", 1, 0.01),
    ],
)
def test_cost_per_image_and_per_call(
    client: openai.OpenAI, model: str, n: int, cost: float
) -> None:
    raw = client.images.with_raw_response.generate(model=model, prompt="c", n=n)
    assert cost_of(raw) == pytest.approx(cost)


# The simulator's usage is known: a prompt of c characters is c // 4 + 1 text tokens, an edit's
# image 256 image tokens, a 1024x1024 image 272 (low) or 4160 (high) output tokens on gpt-image-2
# and 2.5, 1088 (low) on 2.6; `[sim:cached=T:I]` has T text and I image tokens served from the
# cache. The official rates per million: text 5, cached text 1.25, image 8, cached image 2,
# image out 30; the enterprise group x 1.2.


@pytest.mark.parametrize(
    ("model", "prompt", "cost"),
    [
        # 2 text tokens, 4160 out: 2 x 5 + 4160 x 30 = 124,810 per million.
        ("gpt-image-2", "tokens", "0.124810"),
        ("gpt-image-2-enterprise", "tokens", "0.149772"),  # x 1.2
        # 6 text tokens, 4 of them cached: 2 x 5 + 4 x 1.25 + 124,800.
        ("gpt-image-2", "tokens [sim:cached=4:0]", "0.124815"),
        ("gpt-image-2.5-flare", "tokens", "0.124810"),
        ("gpt-image-2.6-sunburst", "tokens", "0.124810"),
    ],
)
def test_token_priced_routes_bill_the_upstreams_usage_exactly(
    client: openai.OpenAI, model: str, prompt: str, cost: str
) -> None:
    raw = client.images.with_raw_response.generate(model=model, prompt=prompt, quality="high")
    assert raw.headers["x-mediagate-cost-usd"] == cost


def test_fan_out_calls_are_billed_their_summed_usage(client: openai.OpenAI, sim: Sim) -> None:
    # GPT Image 2.5 makes one image a call: n=3 is three calls of 2 + 272 tokens each.
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2.5-sunburst", prompt="three", n=3, quality="low", size="1024x1024"
    )
    assert raw.headers["x-mediagate-upstream-calls"] == "3"
    usage = raw.parse().usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (6, 816)
    # 3 x (2 x 5 + 272 x 30) = 24,510 per million.
    assert raw.headers["x-mediagate-cost-usd"] == "0.024510"
    assert len(sim.sent("/v1/images/generations")) == 3


def test_an_enterprise_edit_with_cached_input_is_billed_by_token_class(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    # Only the enterprise key: gpt-image-1's successor is served by its enterprise route.
    client = make_gateway(key_openaiofficial=None).sdk()
    png = make_png(64, 64, "edit me")
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1",
        image=[("a.png", png, "image/png"), ("b.png", png, "image/png")],
        prompt="again [sim:cached=2:300]",
        quality="low",
    )
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-sunburst.enterprise"
    # 7 text tokens (2 cached), 512 image tokens (300 cached), 1088 out:
    # (5 x 5 + 2 x 1.25 + 212 x 8 + 300 x 2 + 1088 x 30) x 1.2 = 41,956.2 per million.
    assert raw.headers["x-mediagate-cost-usd"] == "0.041956"


def test_a_relayed_stream_is_billed_its_events_usage(
    client: openai.OpenAI, gateway: Gateway
) -> None:
    events = client.images.generate(
        model="gpt-image-2",
        prompt="s",
        n=2,
        quality="low",
        size="1024x1024",
        stream=True,
        partial_images=1,
    )
    assert [e.type for e in events].count("image_generation.completed") == 2
    with gateway.http() as http:
        totals = http.get("/v1/usage").json()["totals"]
    # Each completed event bills its image and the 1-token prompt: 2 x (1 x 5 + 272 x 30).
    assert totals["images"] == 2 and totals["cost_usd"] == pytest.approx(0.01633, abs=1e-9)


def test_failures_cost_nothing(client: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="gpt-image-2-web", prompt="[sim:status=500]")
    assert float(caught.value.response.headers["x-mediagate-cost-usd"]) == 0
    with gateway.http() as http:
        usage = http.get("/v1/usage").json()
    assert usage["totals"] == {"requests": 1, "images": 0, "video_seconds": 0, "cost_usd": 0}


def test_a_streamed_generation_is_charged_when_it_ends(
    client: openai.OpenAI, gateway: Gateway
) -> None:
    assert len(list(client.images.generate(model="sora_image", prompt="s", n=2, stream=True))) == 2
    with gateway.http() as http:
        totals = http.get("/v1/usage").json()["totals"]
    assert totals["images"] == 2 and totals["cost_usd"] == pytest.approx(0.02)


def test_budget_refuses_what_would_pass_it(metered: Callable[..., Gateway], sim: Sim) -> None:
    client = metered(budget_usd_per_day=0.05).sdk(api_key=KEY)
    client.images.generate(model="gpt-image-2-web", prompt="first")
    sim.state.reset()
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="gpt-image-2-web", prompt="second")
    assert caught.value.code == "insufficient_quota"
    assert caught.value.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert sim.sent() == []


def test_concurrent_requests_cannot_overspend_together(
    metered: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = metered(budget_usd_per_day=0.10)
    outcomes = race(gateway, 10, "[sim:sleep=0.5]")
    # $0.03 each: three fit in $0.10, a fourth would not, however they interleave.
    assert outcomes.count("ok") == 3 and outcomes.count("insufficient_quota") == 7
    assert len(sim.sent()) == 3
    with gateway.http(api_key=KEY) as http:
        budget = http.get("/v1/usage").json()["budget"]["day"]
    assert budget["spent_usd"] == pytest.approx(0.09)
    assert budget["remaining_usd"] == pytest.approx(0.01)
    assert budget["reserved_usd"] == 0


def test_requests_per_minute(metered: Callable[..., Gateway], sim: Sim) -> None:
    client = metered(requests_per_minute=3).sdk(api_key=KEY)
    for _ in range(3):
        client.models.list()  # listing is not metered...
        client.images.generate(model="gpt-image-2-web", prompt="r")  # ...generations are
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="gpt-image-2-web", prompt="r")
    assert caught.value.code == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 20
    assert len(sim.sent()) == 3


def test_images_per_minute_counts_n(metered: Callable[..., Gateway], sim: Sim) -> None:
    client = metered(images_per_minute=4).sdk(api_key=KEY)
    client.images.generate(model="sora_image", prompt="i", n=3)
    with pytest.raises(openai.RateLimitError):
        client.images.generate(model="sora_image", prompt="i", n=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="sora_image", prompt="i", n=5)  # can never fit
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(sim.sent()) == 3


def test_concurrent_request_limit(metered: Callable[..., Gateway], sim: Sim) -> None:
    gateway = metered(concurrent_requests=2)
    outcomes = race(gateway, 3, "[sim:sleep=0.8]")
    assert sorted(outcomes) == ["concurrency_limit_exceeded", "ok", "ok"]
    assert race(gateway, 1, "again") == ["ok"]  # the slots were given back


def test_video_cost_is_booked_when_the_job_completes(
    metered: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = metered()
    client = gateway.sdk(api_key=KEY)
    raw = client.videos.with_raw_response.create(
        model="seedance-2.0", prompt="v", size="1280x720", seconds="5"
    )
    assert cost_of(raw) == 0  # nothing is charged until the video exists
    video = client.videos.poll(raw.parse().id)
    assert video.status == "completed"
    with gateway.http(api_key=KEY) as http:
        usage = http.get("/v1/usage").json()
    (row,) = usage["data"]
    # Seedance 2.0 at 720p on Dreamina's route (the first) bills $7.01 per million output
    # tokens (SeeDance2's 7.88 x 0.89), from the upstream's usage: 121 frames of 1280x720 are
    # 108,900 completion tokens (seedance-2.md's own figure).
    assert raw.headers["x-mediagate-route"] == "dreamina-seedance-2.0"
    assert row["model"] == "seedance-2.0" and row["video_seconds"] == 5
    assert row["cost_usd"] == pytest.approx(108_900 * 7.01 / 1e6)
    client.videos.retrieve(video.id)  # seeing it finish again books nothing more
    with gateway.http(api_key=KEY) as http:
        total = http.get("/v1/usage").json()["totals"]["cost_usd"]
    assert total == pytest.approx(108_900 * 7.01 / 1e6)


def test_a_failed_video_costs_nothing_and_frees_its_reservation(
    metered: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = metered(budget_usd_per_day=1.0)
    client = gateway.sdk(api_key=KEY)
    video = client.videos.create_and_poll(model="muse-video", prompt="[sim:fail] v", seconds="8")
    assert video.status == "failed"  # Muse charges at create and refunds a failure in full
    with gateway.http(api_key=KEY) as http:
        budget = http.get("/v1/usage").json()["budget"]["day"]
    assert budget["spent_usd"] == 0 and budget["reserved_usd"] == 0
    # muse-video-60s is $1.55 a video: more than the day's $1.00, so it is refused up front.
    with pytest.raises(openai.RateLimitError) as caught:
        client.videos.create(model="muse-video-60s", prompt="v")
    assert caught.value.code == "insufficient_quota"


def test_usage_and_the_admin_view(metered: Callable[..., Gateway]) -> None:
    gateway = metered(budget_usd_per_day=1.0, budget_usd_per_month=10.0)
    gateway.sdk(api_key=KEY).images.generate(model="gpt-image-2-web", prompt="u", n=2)
    gateway.sdk().images.generate(model="sora_image", prompt="u")  # team-a, from the env keys
    with gateway.http(api_key=KEY) as http:
        own = http.get("/v1/usage", params={"days": 7}).json()
    assert own["key"] == "metered"
    assert [(r["model"], r["requests"], r["images"]) for r in own["data"]] == [
        ("gpt-image-2-web", 1, 2)
    ]
    assert own["budget"]["day"]["remaining_usd"] == pytest.approx(0.94)
    assert own["budget"]["month"]["spent_usd"] == pytest.approx(0.06)

    admin = httpx2.get(
        f"{gateway.url}/v1/admin/usage", headers={"Authorization": "Bearer sk-admin"}
    ).json()
    spent = {report["key"]: report["totals"]["cost_usd"] for report in admin["data"]}
    assert spent == {"team-a": pytest.approx(0.01), "team-b": 0, "metered": pytest.approx(0.06)}
    for key in ("sk-wrong", CLIENT_KEY, KEY):
        denied = httpx2.get(
            f"{gateway.url}/v1/admin/usage", headers={"Authorization": f"Bearer {key}"}
        )
        assert denied.status_code == 401
    with gateway.http(api_key=None) as http:
        text = http.get("/metrics").text
    assert 'mediagate_budget_remaining_usd{key="metered",period="day"} 0.94' in text


def test_readyz(gateway: Gateway) -> None:
    response = httpx2.get(f"{gateway.url}/readyz")
    assert response.status_code == 200
    checks = {"catalog": True, "database": True, "store": True}
    assert response.json() == {"status": "ready", "checks": checks}


def test_the_reservation_covers_the_dearest_route_a_request_may_fall_back_to(
    metered: Callable[..., Gateway], sim: Sim
) -> None:
    # gpt-image-2 may end on its enterprise route (x 1.2): a 1-character prompt (8 at the image
    # rate) and an `auto` image (6240 tokens at $30) is $0.187208 on the official route,
    # $0.224650 (rounded up) on the enterprise one; the reservation is the latter.
    client = metered(budget_usd_per_day=0.2).sdk(api_key=KEY)
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="gpt-image-2", prompt="p")
    assert caught.value.code == "insufficient_quota"
    assert "up to $0.224" in caught.value.message  # not the official $0.187
    assert sim.sent() == []
    # Without the enterprise fallback the official estimate fits.
    assert client.images.generate(model="gpt-image-2.6-sunburst", prompt="p", quality="low").data


def test_a_relayed_stream_received_then_hung_up_on_is_always_booked(
    metered: Callable[..., Gateway],
) -> None:
    # Issue 14, item 1: read a relayed stream to its first completed event, then hang up. The
    # settle ran in the cancelled request and was lost (8 of 10 never booked, their
    # reservations left to expire, their concurrency slots held).
    gateway = metered(budget_usd_per_day=100.0, concurrent_requests=2)
    body = {"model": "gpt-image-2", "prompt": "hang up", "n": 2, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(10):
        with httpx2.stream(
            "POST", f"{gateway.url}/v1/images/generations", json=body, headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("event: image_generation.completed"):
                    break  # the first image is in hand: hang up

    def settled() -> bool:
        with gateway.http(api_key=KEY) as http:
            usage = http.get("/v1/usage").json()
        # Every stream was admitted (reserved) before the loop ended: nothing held is all settled.
        return bool(usage["budget"]["day"]["reserved_usd"] == 0)

    wait_until(settled, timeout_s=10)
    with gateway.http(api_key=KEY) as http:
        usage = http.get("/v1/usage").json()
    assert usage["totals"]["images"] >= 10  # at least the image each client received
    assert usage["totals"]["cost_usd"] > 0
    # No concurrency slot leaked: two more requests run side by side.
    assert race_streams(gateway, 2) == ["ok", "ok"]


def race_streams(gateway: Gateway, count: int) -> list[str]:
    def one(i: int) -> str:
        try:
            events = gateway.sdk(api_key=KEY).images.generate(
                model="gpt-image-2", prompt=f"after {i}", stream=True
            )
            return "ok" if list(events) else "empty"
        except openai.RateLimitError as exc:
            return str(exc.code)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


class BadUsage(httpx2.AsyncBaseTransport):
    """The real upstream (the simulator), with the `usage` of its image answers replaced."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.usage: Any = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        if self.usage is None or not request.url.path.endswith("/images/generations"):
            return response
        body = json.loads(await response.aread())
        body["usage"] = self.usage
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        return httpx2.Response(response.status_code, headers=headers, json=body)


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -125_000_000, "output_tokens": 10, "total_tokens": 0},  # a refund
        {"input_tokens": "12", "output_tokens": "4160", "total_tokens": "4172"},
        {"input_tokens": 10, "output_tokens": 1_250_000_000, "total_tokens": 1_250_000_010},
        {"input_tokens": 10.5, "output_tokens": True, "total_tokens": 11},
    ],
)
def test_unusable_upstream_usage_books_the_estimate_and_returns_the_image(
    make_gateway: Callable[..., Gateway], usage: dict[str, Any]
) -> None:
    # Issue 14, item 2: negative counts booked a negative cost (then a 500), strings a 500
    # after the image was paid for (retried by the SDK: paid twice), huge counts $50,000.
    transport = BadUsage()
    gateway = make_gateway(transport=transport)
    client = gateway.sdk()
    plain = client.images.with_raw_response.generate(model="gpt-image-2", prompt="usage")
    usual = cost_of(plain)
    transport.usage = usage
    raw = client.images.with_raw_response.generate(model="gpt-image-2", prompt="usage")
    assert raw.status_code == 200
    assert (raw.parse().data or [])[0].b64_json
    cost = cost_of(raw)
    # The estimate: an upper bound on what the route costs, never a refund nor a fortune.
    assert usual <= cost < 1.0
    with gateway.http() as http:
        totals = http.get("/v1/usage").json()["totals"]
    assert totals["images"] == 2 and totals["cost_usd"] == pytest.approx(usual + cost)
    counted = metric(
        gateway.url, "mediagate_upstream_usage_rejected_total", route="gpt-image-2.official"
    )
    assert counted == 1


def test_reads_have_their_own_budget_and_ask_the_upstream_at_most_once_per_interval(
    make_gateway: Callable[..., Gateway], tmp_path: Path, sim: Sim
) -> None:
    # Issue 14, item 6: a key limited to 10 requests a minute made 120 list and retrieve calls
    # in 3.4 s, and they made 545 upstream status calls (a list refreshes every unfinished job
    # on its page).
    path = keys_file(
        tmp_path / "keys.yaml",
        [entry("metered", KEY, requests_per_minute=10, reads_per_minute=100)],
    )
    gateway = make_gateway(keys_file=path, video_poll_after_ms=60_000)
    sdk = gateway.sdk(api_key=KEY)
    # Counted from before the creates: the reconciler's first round (at start) may overlap them
    # on a loaded machine and ask a job first, which then counts as that job's one ask.
    before = len(sim.sent())
    videos = [sdk.videos.create(prompt=f"a slow sea {i} [sim:render=600]") for i in range(5)]
    answers = []
    started = time.monotonic()
    with gateway.http(api_key=KEY) as http:
        for index in range(120):
            if index % 2:
                answers.append(http.get("/v1/videos", params={"limit": 20}))
            else:
                answers.append(http.get(f"/v1/videos/{videos[index % 5].id}"))
    refilled = int((time.monotonic() - started) * 100 / 60) + 1
    statuses = [a.status_code for a in answers]
    # 100 at once, then the bucket refills at 100 a minute while the loop runs.
    admitted = statuses.count(200)
    assert 100 <= admitted <= min(119, 100 + refilled)
    assert statuses.count(429) == 120 - admitted
    refused = answers[-1].json()["error"]
    assert refused["code"] == "read_rate_limit_exceeded"
    assert int(answers[-1].headers["retry-after"]) >= 1
    # Each unfinished job was asked of the upstream once in the interval, however often read.
    status_calls = [c for c in sim.sent()[before:] if c.method == "GET"]
    assert len(status_calls) == 5 and len({c.path for c in status_calls}) == 5
    # The read budget is not the request budget: new work is still admitted.
    assert sdk.videos.create(prompt="one more [sim:render=600]").status == "queued"


def _booked_requests(data_dir: Path) -> int:
    """Requests the ledger has settled, read from the records' SQLite file as another process
    would."""
    with contextlib.closing(sqlite3.connect(data_dir / "mediagate.sqlite3")) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM settlements").fetchone()
    return int(count)


def test_usage_is_booked_in_batches_off_the_request_path_and_a_clean_stop_books_the_rest(
    sim: Sim, tmp_path: Path, upstream_transport: str | None
) -> None:
    data = tmp_path / "data"
    # A key without limits, and an interval no test waits for: only a read or a stop books.
    settings = gateway_settings(sim, data, upstream_transport, usage_flush_interval_s=60)
    with BackgroundServer(create_app(settings)) as server:
        gateway = Gateway(server.url, settings)
        for i in range(3):
            gateway.sdk().images.generate(model="gpt-image-2-web", prompt=f"batched {i}")
        assert _booked_requests(data) == 0  # answered without waiting for the ledger
        with gateway.http() as http:  # a usage read books the queue first
            assert http.get("/v1/usage").json()["totals"]["images"] == 3
        assert _booked_requests(data) == 3
        for i in range(2):
            gateway.sdk().images.generate(model="gpt-image-2-web", prompt=f"at stop {i}")
        assert _booked_requests(data) == 3
    assert _booked_requests(data) == 5  # the clean stop booked what was queued

    with (
        BackgroundServer(create_app(settings)) as server,
        Gateway(server.url, settings).http() as http,
    ):
        totals = http.get("/v1/usage").json()["totals"]
    assert totals["requests"] == 5 and totals["images"] == 5
    assert totals["cost_usd"] == pytest.approx(5 * 0.03)


def test_a_chat_route_reserves_for_the_size_asked_not_for_auto(
    make_gateway: Callable[..., Gateway], tmp_path: Path, sim: Sim
) -> None:
    # The chat dialect sends no `size`, only the ratio marker standing for it. The estimate
    # read `size` off the fields sent, so on a token-priced chat route every request reserved
    # for an `auto` image (1.5 MP) however large the size asked.
    overlay = tmp_path / "catalog.yaml"
    overlay.write_text(
        "routes:\n  sora_image:\n    price:\n      per_image: null\n"
        "      tokens: {text_input: 5, cached_text_input: 1, image_input: 8,"
        " cached_image_input: 2, image_output: 30}\n"
        "      estimate: {output_tokens_per_mp: {auto: 6000}}\n"
    )
    path = keys_file(tmp_path / "keys.yaml", [entry("metered", KEY, budget_usd_per_day=0.01)])
    client = make_gateway(keys_file=path, config=overlay).sdk(api_key=KEY)

    def reserved(**size: str) -> str:
        with pytest.raises(openai.RateLimitError) as caught:
            client.images.generate(model="sora_image", prompt="p", **size)
        assert caught.value.code == "insufficient_quota"
        return caught.value.message.split("up to ")[1].split(",")[0]

    # 1 prompt token at $8, then 6000 tokens a megapixel at $30.
    assert reserved() == "$0.2700"  # auto: 1024x1536
    assert reserved(size="1024x1024") == "$0.1800"  # marker 1:1, planned at the size asked
    assert reserved(size="3840x2160") == "$1.4238"  # marker 3:2, 8.3 MP
    assert sim.sent() == []


def test_a_team_budget_is_shared_by_its_keys_and_named_when_short(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str]
) -> None:
    # Issue 25: a team's budget bounds the sum of its keys' spend, on each deployment.
    from .test_admin_keys import ADMIN, ADMIN_KEYS

    gateway = make_gateway(admin_keys=ADMIN_KEYS, **job_store)
    with gateway.http(ADMIN) as admin:
        made = admin.post("/admin/v1/teams", json={"name": "design", "budget_usd_per_day": 0.06})
        assert made.status_code == 200, made.text
        secrets = []
        for name in ("ana", "bo"):  # no budget of their own
            key = admin.post("/admin/v1/keys", json={"name": name, "team": "design"})
            assert key.status_code == 200, key.text
            secrets.append(key.json()["key"])
    ana, bo = (gateway.sdk(api_key=secret) for secret in secrets)
    ana.images.generate(model="gpt-image-2-web", prompt="one")  # $0.03 each
    bo.images.generate(model="gpt-image-2-web", prompt="two")
    for sdk in (ana, bo):  # the team's $0.06 is spent: neither key may spend more
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.images.generate(model="gpt-image-2-web", prompt="three")
        assert caught.value.code == "insufficient_quota"
        assert "the team 'design'" in caught.value.message
    with gateway.http(secrets[0]) as http:
        totals = http.get("/v1/usage").json()["totals"]
    assert (totals["images"], totals["cost_usd"]) == (1, pytest.approx(0.03))


def _team_with_keys(gateway: Gateway, team: dict[str, Any], names: list[str]) -> list[str]:
    """A team (with `team`'s limits) and keys of its own without limits, made by the admin
    API: the keys' secrets."""
    from .test_admin_keys import ADMIN

    with gateway.http(ADMIN) as admin:
        made = admin.post("/admin/v1/teams", json=team)
        assert made.status_code == 200, made.text
        secrets = []
        for name in names:
            key = admin.post("/admin/v1/keys", json={"name": name, "team": team["name"]})
            assert key.status_code == 200, key.text
            secrets.append(key.json()["key"])
    return secrets


def test_a_teams_rates_and_slots_are_shared_by_its_keys_and_named_when_short(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], sim: Sim
) -> None:
    # Issue 25: a team's requests and images per minute and its concurrent requests bound
    # its keys together, on each deployment; the refusal names the team.
    from .test_admin_keys import ADMIN_KEYS

    gateway = make_gateway(admin_keys=ADMIN_KEYS, **job_store)
    ana, bo = (
        gateway.sdk(api_key=secret)
        for secret in _team_with_keys(
            gateway,
            {"name": "rates", "requests_per_minute": 3, "images_per_minute": 5},
            ["ana", "bo"],
        )
    )
    for sdk in (ana, bo, ana):
        sdk.images.generate(model="gpt-image-2-web", prompt="within the team's minute")
    for sdk in (ana, bo):
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.images.generate(model="gpt-image-2-web", prompt="a fourth")
        assert "the team 'rates'" in caught.value.message
        assert caught.value.response.headers["retry-after"]
    # More images in one request than the team may make in a minute: refused as final.
    cy = gateway.sdk(
        api_key=_team_with_keys(gateway, {"name": "few", "images_per_minute": 2}, ["cy"])[0]
    )
    with pytest.raises(openai.RateLimitError) as caught:
        cy.images.generate(model="gpt-image-2-web", prompt="three at once", n=3)
    assert "the team 'few'" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"

    # One slot for the team: a second key's call while the first runs is refused at once.
    dee, eve = (
        gateway.sdk(api_key=secret)
        for secret in _team_with_keys(
            gateway, {"name": "slots", "concurrent_requests": 1}, ["dee", "eve"]
        )
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            dee.images.generate, model="gpt-image-2-web", prompt="[sim:sleep=1.5] slow"
        )
        # Once the slow call reached the upstream, it holds the team's slot.
        wait_until(lambda: any("slow" in str(c.body) for c in sim.sent()))
        with pytest.raises(openai.RateLimitError) as caught:
            eve.images.generate(model="gpt-image-2-web", prompt="while it runs")
        assert caught.value.code == "concurrency_limit_exceeded"
        assert "The team 'slots'" in caught.value.message
        assert running.result().data
    eve.images.generate(model="gpt-image-2-web", prompt="after it ended")  # the slot is free


def test_a_teams_reads_per_minute_are_shared_by_its_keys(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str]
) -> None:
    from .test_admin_keys import ADMIN_KEYS

    gateway = make_gateway(admin_keys=ADMIN_KEYS, **job_store)
    secrets = _team_with_keys(gateway, {"name": "readers", "reads_per_minute": 2}, ["fi", "gus"])
    with gateway.http(secrets[0]) as fi, gateway.http(secrets[1]) as gus:
        assert fi.get("/v1/videos").status_code == 200
        assert gus.get("/v1/videos").status_code == 200
        refused = fi.get("/v1/videos")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "read_rate_limit_exceeded"
    assert "the team 'readers'" in refused.json()["error"]["message"]

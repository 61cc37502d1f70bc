"""Dreamina Seedance (changes-2026-12.md section 1) and the first video fallback, through the real
OpenAI SDK against the simulated upstream: each Dreamina route's upstream request and bill, the
Seedance models served Dreamina first (its group, then `default`, then SeeDance2), the paid
rule on a video create (a fallback only after a failure that surely did no work), the
reservation at the dearest candidate, 4K not offered until an operator prices it, and every
video model of the catalog made end to end."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from mediagate.catalog import load_catalog
from mediagate.simulator.ark import ArkTask

from .conftest import GROUP_KEYS, Gateway, Sim, assert_error
from .resilience import catalog, metric
from .test_keys import entry, keys_file
from .test_videos import stored
from .test_videos_families import ARK_TASKS, picture, posts, show

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DREAMINA, SEEDANCE2, DEFAULT = (
    GROUP_KEYS["Dreamina"],
    GROUP_KEYS["SeeDance2"],
    GROUP_KEYS["default"],
)
# What an operator adds to price Dreamina's 4K (docs/configuration.md): a rate on both routes
# of the model (its two groups); tokens_per_second for 4K is in the bundled catalog already.
RATE_4K = {"without_video": 20.0, "with_video": 12.0, "basis": "given", "source": "operator"}
PRICED_4K = {
    rid: {"video": {"price": {"per_million_output_tokens": {"4k": RATE_4K}}}}
    for rid in ("dreamina-seedance-2.5", "dreamina-seedance-2.5.default")
}


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    return make_gateway(config=catalog(tmp_path))


def task(sim: Sim, upstream_id: str) -> ArkTask:
    found = sim.state.videos[upstream_id]
    assert isinstance(found, ArkTask)
    return found


def booked(tokens: int, rate: float) -> float:
    """tokens x rate per million, to the millionth of a dollar: the exact bill."""
    usd = Decimal(tokens) * Decimal(str(rate)) / Decimal(1_000_000)
    return float(usd.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def created(sim: Sim) -> list[tuple[str | None, str, int]]:
    """Each create the upstream received: (group, model, status)."""
    return [(c.group, c.body["model"], c.status) for c in posts(sim, ARK_TASKS)]


# --- Each new route: the request it builds and the bill it books ---------------------------

NEW_ROUTES = [
    # (route, model asked, size, extra fields, the upstream id, the rate billed)
    ("dreamina-seedance-2.5", "dreamina-seedance-2-5-260628", "1920x1080", {}, 11.75),
    ("dreamina-seedance-2.5-flash", "seedance-2.5-flash", "1280x720", {}, 7.00),
    ("dreamina-seedance-2.0", "dreamina-seedance-2-0-260128", "864x496", {"seed": 7}, 7.01),
    ("dreamina-seedance-2.0-fast", "dreamina-seedance-2-0-fast-260128", "720x1280", {}, 5.64),
    ("dreamina-seedance-2.0-mini", "seedance-2.0-mini", "864x496", {"watermark": True}, 3.50),
]


@pytest.mark.parametrize("group", ["Dreamina", "default"])
@pytest.mark.parametrize(("route", "model", "size", "extra", "rate"), NEW_ROUTES)
def test_each_dreamina_route_builds_its_request_and_books_tokens_times_rate(
    make_gateway: Callable[..., Gateway],
    sim: Sim,
    tmp_path: Path,
    group: str,
    route: str,
    model: str,
    size: str,
    extra: dict[str, Any],
    rate: float,
) -> None:
    # Without a Dreamina key, the same models are sold in the default group.
    keys = {} if group == "Dreamina" else {"key_dreamina": None}
    gateway = make_gateway(config=catalog(tmp_path), **keys)
    sdk = gateway.sdk()
    raw = sdk.videos.with_raw_response.create(
        model=model, prompt="a heron takes off", size=size, seconds="5", extra_body=extra
    )
    served = route if group == "Dreamina" else f"{route}.default"
    assert raw.headers["x-mediagate-route"] == served
    assert "x-mediagate-fallback" not in raw.headers
    video = sdk.videos.poll(raw.parse().id)
    assert video.status == "completed", video.error
    [call] = posts(sim, ARK_TASKS)
    show(served, call)
    upstream = load_catalog().routes[served]
    assert upstream.video is not None
    info = upstream.video.sizes[size]
    assert call.group == group and call.headers["authorization"] == f"Bearer <{group}>"
    assert call.body == {
        "model": upstream.upstream_model,
        "content": [{"type": "text", "text": "a heron takes off"}],
        "ratio": info.ratio,
        "resolution": info.resolution,
        "duration": 5,
        **extra,
    }
    job = stored(gateway, video.id)
    tokens = task(sim, job.upstream_id).completion_tokens()
    print(f"[{served}] {tokens} tokens x ${rate}/M = ${job.cost}")
    assert (job.route, job.group) == (served, group)
    assert job.cost == booked(tokens, rate)


def test_a_seedance_model_is_served_dreamina_first_by_the_routes_with_a_key(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    def route_of(gateway: Gateway, model: str) -> str:
        raw = gateway.sdk().videos.with_raw_response.create(model=model, prompt="p")
        return raw.headers["x-mediagate-route"]

    full = make_gateway(config=catalog(tmp_path))
    assert route_of(full, "seedance-2.0") == "dreamina-seedance-2.0"
    # The dated ids pin their own upstream route.
    assert route_of(full, "doubao-seedance-2-0-260128") == "seedance-2.0"
    assert route_of(full, "dreamina-seedance-2-0-260128") == "dreamina-seedance-2.0"
    assert [model for _, model, _ in created(sim)] == [
        "dreamina-seedance-2-0-260128",
        "doubao-seedance-2-0-260128",
        "dreamina-seedance-2-0-260128",
    ]
    # No key for Dreamina's group nor the default one: SeeDance2 serves; 2.5 Flash and the
    # dreamina-* ids are not offered.
    only = make_gateway(config=catalog(tmp_path), key_dreamina=None, key_default=None)
    assert route_of(only, "seedance-2.0") == "seedance-2.0"
    offered = {m.id for m in only.sdk().models.list().data}
    assert "seedance-2.5-flash" not in offered and "dreamina-seedance-2-0-260128" not in offered
    with pytest.raises(openai.NotFoundError):
        only.sdk().videos.create(model="seedance-2.5-flash", prompt="p")
    # Without SeeDance2's key, the doubao-* ids are not offered (no quiet move to Dreamina).
    no_doubao = make_gateway(config=catalog(tmp_path), key_seedance2=None)
    with pytest.raises(openai.NotFoundError):
        no_doubao.sdk().videos.create(model="doubao-seedance-2-0-260128", prompt="p")


# --- The paid rule on a video create --------------------------------------------------------


@pytest.mark.parametrize("fault", ["no_channel", "503", "429"])
def test_a_create_falls_back_after_a_failure_that_did_no_work(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path, fault: str
) -> None:
    if fault == "no_channel":
        # An operator's mistake the upstream answers as it documents: a SeeDance2 key set as
        # the Dreamina one gets "no available channel" (503) on a dreamina-* id.
        gateway = make_gateway(config=catalog(tmp_path), key_dreamina=SEEDANCE2, key_default=None)
    else:
        gateway = make_gateway(config=catalog(tmp_path), key_default=None)
        sim.state.faults.set(by_key={DREAMINA: fault}, retry_after_s=0.01)
    raw = gateway.sdk().videos.with_raw_response.create(
        model="seedance-2.0", prompt="a heron", seconds="5"
    )
    reason = "rate_limit_exceeded" if fault == "429" else "upstream_error"
    assert raw.headers["x-mediagate-route"] == "seedance-2.0"
    assert raw.headers["x-mediagate-fallback"] == f"dreamina-seedance-2.0={reason}"
    left = {"model": "seedance-2.0", "route": "dreamina-seedance-2.0", "reason": reason}
    assert metric(gateway.url, "mediagate_fallbacks_total", **left) == 1
    if fault == "no_channel":
        # Retried as the route's policy allows (a 503 did no work), then handed over.
        assert created(sim) == [("SeeDance2", "dreamina-seedance-2-0-260128", 503)] * 3 + [
            ("SeeDance2", "doubao-seedance-2-0-260128", 200)
        ]
    else:
        assert [s.key for s in sim.state.faults.seen if s.method == "POST"] == [DREAMINA] * 3 + [
            SEEDANCE2
        ]
    video = gateway.sdk().videos.poll(raw.parse().id)
    assert video.status == "completed"
    # Billed on the route that made it: SeeDance2's rate.
    job = stored(gateway, video.id)
    tokens = task(sim, job.upstream_id).completion_tokens()
    assert (job.route, job.cost) == ("seedance-2.0", booked(tokens, 7.88))


class RefusedFor(httpx2.AsyncBaseTransport):
    """The real network, except that connections carrying one upstream key are refused (one
    route's host unreachable): nothing of those requests is sent."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.refused = 0
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.headers.get("authorization") == f"Bearer {self.key}":
            self.refused += 1
            raise httpx2.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_create_falls_back_after_a_connect_error(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    refusing = RefusedFor(DREAMINA)
    gateway = make_gateway(refusing, config=catalog(tmp_path))
    raw = gateway.sdk().videos.with_raw_response.create(model="seedance-2.5", prompt="p")
    assert raw.headers["x-mediagate-route"] == "dreamina-seedance-2.5.default"
    assert raw.headers["x-mediagate-fallback"] == "dreamina-seedance-2.5=upstream_unreachable"
    assert refusing.refused == 3  # the route's attempts, none of which reached the upstream
    assert created(sim) == [("default", "dreamina-seedance-2-5-260628", 200)]


@pytest.mark.parametrize(("fault", "status", "code"), [
    ("timeout", 504, "upstream_timeout"),
    ("resetbody", 502, "upstream_connection_lost"),
    ("truncated", 502, None),
])  # fmt: skip
def test_no_fallback_after_a_timeout_or_a_broken_answer(
    make_gateway: Callable[..., Gateway],
    sim: Sim,
    tmp_path: Path,
    fault: str,
    status: int,
    code: str | None,
) -> None:
    short = {"dreamina-seedance-2.0": {"timeouts": {"total": 0.3}}}
    gateway = make_gateway(config=catalog(tmp_path, short))
    sim.state.faults.set(by_key={DREAMINA: fault}, timeout_s=1)
    with gateway.http() as http:
        answer = http.post("/v1/videos", json={"model": "seedance-2.0", "prompt": "p"})
    assert answer.status_code == status, answer.text
    if code is not None:
        assert answer.json()["error"]["code"] == code
    assert answer.headers["x-should-retry"] == "false"
    assert "x-mediagate-fallback" not in answer.headers
    # The upstream may be making (and charging for) that video: nobody else is asked.
    assert {s.key for s in sim.state.faults.seen} == {DREAMINA}
    with gateway.http() as http:
        assert http.get("/v1/usage").json()["totals"]["cost_usd"] == 0


def test_the_reservation_is_the_dearest_candidate_and_the_bill_the_route_that_served(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    path = keys_file(tmp_path / "keys.yaml", [entry("metered", "sk-metered", budget_usd_per_day=5)])
    gateway = make_gateway(keys_file=path, config=catalog(tmp_path))
    sdk = gateway.sdk(api_key="sk-metered")
    raw = sdk.videos.with_raw_response.create(
        model="seedance-2.0", prompt="[sim:render=3] p", size="1280x720", seconds="5"
    )
    assert raw.headers["x-mediagate-route"] == "dreamina-seedance-2.0"
    with gateway.http(api_key="sk-metered") as http:
        budget = http.get("/v1/usage").json()["budget"]["day"]
    # 720p reserves 21,780 tokens a second: 5 s at SeeDance2's $7.88/M (the dearer of the
    # routes that could have made it), not Dreamina's $7.01.
    assert budget["reserved_usd"] == pytest.approx(21_780 * 5 * 7.88 / 1e6)
    video = sdk.videos.poll(raw.parse().id)
    job = stored(gateway, video.id)
    tokens = task(sim, job.upstream_id).completion_tokens()
    with gateway.http(api_key="sk-metered") as http:
        usage = http.get("/v1/usage").json()
    assert usage["budget"]["day"]["reserved_usd"] == 0
    assert usage["totals"]["cost_usd"] == booked(tokens, 7.01)


def test_a_budget_below_the_dearest_candidate_is_refused_before_any_upstream_call(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    # Dreamina's estimate (0.763389) fits in 0.80, SeeDance2's (0.858132) does not: the
    # create could end up on SeeDance2, so it is not admitted.
    path = keys_file(tmp_path / "keys.yaml", [entry("m", "sk-m", budget_usd_per_day=0.80)])
    gateway = make_gateway(keys_file=path, config=catalog(tmp_path))
    body = {"model": "seedance-2.0", "prompt": "p", "size": "1280x720", "seconds": "5"}
    with gateway.http(api_key="sk-m") as http:
        assert_error(http.post("/v1/videos", json=body), 429, None, "insufficient_quota")
    assert sim.sent() == []
    # Without SeeDance2 in the deployment, Dreamina's estimate is the bound, and fits.
    dreamina_only = make_gateway(keys_file=path, config=catalog(tmp_path), key_seedance2=None)
    with dreamina_only.http(api_key="sk-m") as http:
        assert http.post("/v1/videos", json=body).status_code == 200


# --- Resolutions: 4K on 2.5 and 2.0 only once priced, 720p at most on the rest ----------------


@pytest.mark.parametrize(
    "asked",
    [{"size": "3840x2160"}, {"extra_body": {"resolution": "4k"}}],
    ids=["size", "resolution"],
)
def test_4k_is_not_offered_until_priced(gw: Gateway, sim: Sim, asked: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.sdk().videos.create(model="seedance-2.5", prompt="p", **asked)
    assert caught.value.code == "resolution_not_priced"
    assert caught.value.param == "size"
    assert sim.sent() == []


def test_4k_priced_by_the_operator_is_made_on_dreamina_and_never_mapped_down(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    gateway = make_gateway(config=catalog(tmp_path, PRICED_4K))
    sdk = gateway.sdk()
    raw = sdk.videos.with_raw_response.create(
        model="seedance-2.5", prompt="p", size="3840x2160", seconds="4"
    )
    assert raw.headers["x-mediagate-route"] == "dreamina-seedance-2.5"
    video = sdk.videos.poll(raw.parse().id)
    assert video.status == "completed"
    [call] = posts(sim, ARK_TASKS)
    show("dreamina-seedance-2.5 4k", call)
    assert (call.body["resolution"], call.body["ratio"]) == ("4k", "16:9")
    job = stored(gateway, video.id)
    tokens = task(sim, job.upstream_id).completion_tokens()
    assert tokens == (24 * 4 + 1) * 3840 * 2160 // 1024
    assert job.cost == booked(tokens, 20.0)
    # Both Dreamina routes failing: SeeDance2 has no 4K, so the create is not handed to it at
    # 1080p; the client hears the failure.
    sim.state.reset()
    sim.state.faults.set(by_key={DREAMINA: "503", DEFAULT: "503"})
    with gateway.http() as http:
        answer = http.post(
            "/v1/videos", json={"model": "seedance-2.5", "prompt": "p", "size": "3840x2160"}
        )
    assert answer.status_code == 502
    assert answer.headers["x-mediagate-fallback"] == (
        "dreamina-seedance-2.5=upstream_error,dreamina-seedance-2.5.default=upstream_error,"
        "seedance-2.5=would_map"
    )
    assert {c.group for c in posts(sim, ARK_TASKS)} == {"Dreamina", "default"}


def test_flash_fast_and_mini_stop_at_720p_before_any_upstream_call(gw: Gateway, sim: Sim) -> None:
    for model in ("seedance-2.5-flash", "seedance-2.0-fast", "dreamina-seedance-2-0-mini-260615"):
        for tier in ("1080p", "4k"):
            with pytest.raises(openai.BadRequestError) as caught:
                gw.sdk().videos.create(model=model, prompt="p", extra_body={"resolution": tier})
            assert caught.value.param == "resolution", (model, tier)
    assert sim.sent() == []


def test_sora_2_pro_is_seedance_2_0_at_1080p_on_dreamina_first(gw: Gateway, sim: Sim) -> None:
    raw = gw.sdk().videos.with_raw_response.create(
        model="sora-2-pro", prompt="p", size="1792x1024", seconds="8"
    )
    assert raw.headers["x-mediagate-alias"] == "sora-2-pro>seedance-2.0"
    assert raw.headers["x-mediagate-route"] == "dreamina-seedance-2.0"
    [call] = posts(sim, ARK_TASKS)
    assert call.body["model"] == "dreamina-seedance-2-0-260128"
    assert (call.body["ratio"], call.body["resolution"]) == ("16:9", "1080p")
    video = gw.sdk().videos.poll(raw.parse().id)
    job = stored(gw, video.id)
    assert job.cost == booked(task(sim, job.upstream_id).completion_tokens(), 7.78)


def test_a_first_frame_goes_to_the_fallback_too(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    gateway = make_gateway(config=catalog(tmp_path), key_default=None)
    sim.state.faults.set(by_key={DREAMINA: "503"})
    video = gateway.sdk().videos.create_and_poll(
        model="seedance-2.5",
        prompt="p",
        size="1280x720",
        input_reference=("ref.png", picture(1280, 720), "image/png"),
    )
    assert video.status == "completed"
    served = [c for c in posts(sim, ARK_TASKS) if c.status == 200]
    [call] = served
    assert call.group == "SeeDance2" and call.body["ratio"] == "adaptive"
    assert call.body["content"][1]["role"] == "first_frame"


# --- Every video model, end to end ------------------------------------------------------------


def test_every_video_model_of_the_catalog_generates_through_the_sdk(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    full = load_catalog()
    models = sorted(
        mid for mid, m in full.models.items() if full.routes[m.routes[0]].kind == "video"
    )
    assert {"seedance-2.5-flash", "dreamina-seedance-2-0-mini-260615"} <= set(models)
    gateway = make_gateway(config=catalog(tmp_path))
    sdk = gateway.sdk()

    def make(model: str) -> tuple[str, str, str, float | None]:
        # A first frame (or reference image) wherever the model takes one: i2v needs it.
        video_policy = full.routes[full.models[model].routes[0]].video
        assert video_policy is not None
        extra: dict[str, Any] = {}
        if video_policy.reference:
            extra["input_reference"] = ("ref.png", picture(1280, 720), "image/png")
        raw = sdk.videos.with_raw_response.create(model=model, prompt=f"a heron, {model}", **extra)
        video = sdk.videos.poll(raw.parse().id)
        return model, raw.headers["x-mediagate-route"], video.status, stored(gateway, video.id).cost

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(make, models))
    for model, route, status, cost in results:
        print(f"[every model] {model} via {route}: {status}, ${cost}")
        assert status == "completed" and cost is not None and cost > 0, model
    assert len(results) == len(models)

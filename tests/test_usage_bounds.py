"""Usage is the upstream's claim, bounded by the request: finite, above a floor (a delivered
image made output tokens, a finished video made seconds), at most USAGE_BOUND times the
request's own estimate. Otherwise the estimate is booked and counted, never a fortune, never a
credit, on every route (images, streams, Seedance, Wan)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from mediagate.accounting.pricing import (
    USAGE_BOUND,
    UnusableUsage,
    estimate_images,
    token_cost,
    video_cost,
)
from mediagate.catalog import load_catalog
from mediagate.images.plan import gif_frames, plan_images
from mediagate.images.spec import parse_generation
from mediagate.stores.ledger import Charge

from .conftest import Gateway, Sim, fast_video_polls, wait_until
from .resilience import metric

REJECTED = "mediagate_upstream_usage_rejected_total"


def cost_of(raw: object) -> float:
    return float(raw.headers["x-mediagate-cost-usd"])  # type: ignore[attr-defined]


def totals(gateway: Gateway) -> dict[str, float]:
    with gateway.http() as http:
        result: dict[str, float] = http.get("/v1/usage").json()["totals"]
    return result


@pytest.mark.parametrize("claim", ["huge", "negative", "zero"])
def test_image_usage_out_of_bounds_books_the_estimate(gateway: Gateway, claim: str) -> None:
    client = gateway.sdk()
    usual = cost_of(client.images.with_raw_response.generate(model="gpt-image-2", prompt="fox"))
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2", prompt=f"fox [sim:usage={claim}]"
    )
    assert raw.status_code == 200 and (raw.parse().data or [])[0].b64_json
    cost = cost_of(raw)
    # The estimate ($0.19, an upper bound: the largest size at the dearest quality): at least
    # what such an image costs (0 tokens booked next to nothing), far from the $300 that
    # 9,999,999 output tokens booked.
    assert usual <= cost < 0.2
    assert totals(gateway)["cost_usd"] == pytest.approx(usual + cost)
    assert metric(gateway.url, REJECTED, route="gpt-image-2.official") == 1


def test_a_relayed_streams_usage_out_of_bounds_books_the_estimate(gateway: Gateway) -> None:
    client = gateway.sdk()
    usual = cost_of(client.images.with_raw_response.generate(model="gpt-image-2", prompt="fox"))
    stream = client.images.generate(
        model="gpt-image-2", prompt="fox [sim:usage=huge]", stream=True, partial_images=0
    )
    events = [event.type for event in stream]
    assert events[-1] == "image_generation.completed"
    wait_until(lambda: totals(gateway)["images"] == 2)  # both settled
    streamed = totals(gateway)["cost_usd"] - usual
    assert usual <= streamed < 0.2
    assert metric(gateway.url, REJECTED, route="gpt-image-2.official") == 1


@pytest.mark.parametrize("model", ["seedance-2.0", "wan2.7-t2v"])
def test_video_usage_out_of_bounds_books_the_estimate(
    make_gateway: Callable[..., Gateway], tmp_path: Path, sim: Sim, model: str
) -> None:
    from .test_videos import stored

    gateway = make_gateway(config=fast_video_polls(tmp_path / "polls.yaml"))
    sdk = gateway.sdk()
    plain = sdk.videos.create_and_poll(model=model, prompt="a heron", seconds="5")
    assert plain.status == "completed"
    usual = stored(gateway, plain.id).cost
    assert usual is not None and usual > 0
    costs = []
    for claim in ("huge", "negative", "zero"):
        # 10^15 tokens booked $7.88 billion; a negative count a credit, then a metric's inc()
        # raised and a reconciler round aborted.
        video = sdk.videos.create_and_poll(
            model=model, prompt=f"a heron [sim:usage={claim}]", seconds="5"
        )
        assert video.status == "completed", (claim, video.error)
        cost = stored(gateway, video.id).cost
        assert cost is not None and 0 < cost <= USAGE_BOUND * usual, (claim, cost)
        costs.append(cost)
    assert len(set(costs)) == 1  # the estimate, each time
    # seedance-2.0 is made on its first route, Dreamina's.
    route = {"seedance-2.0": "dreamina-seedance-2.0"}.get(model, model)
    assert metric(gateway.url, REJECTED, route=route) == 3
    assert totals(gateway)["cost_usd"] == pytest.approx(usual + sum(costs))
    with gateway.http(api_key=None) as http:
        text = http.get("/metrics").text
    booked = [line for line in text.splitlines() if line.startswith("mediagate_cost_usd_total")]
    assert booked and all(float(line.rsplit(" ", 1)[1]) > 0 for line in booked)


def test_the_bounds_of_video_usage() -> None:
    catalog = load_catalog(None)
    seedance = catalog.routes["seedance-2.0"].video
    wan = catalog.routes["wan2.7-t2v"].video
    assert seedance is not None and wan is not None
    for tokens in (10**15, -5, 0, 1.5, True):
        with pytest.raises(UnusableUsage):
            video_cost(seedance.price, "720p", 5, output_tokens=tokens)  # type: ignore[arg-type]
    for seconds in (1e15, -5.0, 0.0, float("inf"), float("nan")):
        with pytest.raises(UnusableUsage):
            video_cost(wan.price, "720P", 5, actual_seconds=seconds)
    # A remix's input video counts: its bound is the clip and the longest input the route makes.
    tokens = 21_600 * 10
    with pytest.raises(UnusableUsage):
        video_cost(seedance.price, "720p", 5, output_tokens=tokens * 2, input_video=True)
    assert video_cost(
        seedance.price, "720p", 5, output_tokens=tokens * 2, input_video=True, bound_seconds=20
    )


def test_the_ledger_never_books_a_credit() -> None:
    assert Charge("m", -7.88e9).cost == 0.0
    assert Charge("m", float("nan")).cost == 0.0
    assert Charge("m", 1.5, video_seconds=-3).video_seconds == 0
    assert Charge("m", 1.5).cost == 1.5


def test_the_sdk_reads_an_image_with_unbelievable_usage(client: openai.OpenAI) -> None:
    image = client.images.generate(model="gpt-image-2", prompt="x [sim:usage=zero]")
    assert image.data and image.data[0].b64_json


def test_a_gif_billed_per_frame_is_billed_its_usage(gateway: Gateway) -> None:
    # An upstream that bills each of a GIF's 16 frames as an image: 16 times one image's
    # output tokens, within the request's estimate since that counts every frame.
    raw = gateway.sdk().images.with_raw_response.generate(
        model="gpt-image-2.6-flare",
        prompt="a bouncing ball [sim:usage=per_frame]",
        output_format="gif",
        frame_count=16,
        size="1024x1024",
        quality="low",
    )
    result = raw.parse()
    assert result.output_format == "gif" and result.usage is not None
    route = load_catalog().routes["gpt-image-2.6-flare.official"]
    assert route.price is not None and route.price.tokens is not None
    usage = result.usage.model_dump()
    # 16 frames of 1,088 low-quality tokens a megapixel (a single image is 1,088).
    assert usage["output_tokens"] == 16 * 1088
    assert cost_of(raw) == pytest.approx(token_cost(route.price.tokens, usage))
    assert metric(gateway.url, REJECTED, route="gpt-image-2.6-flare.official") == 0


def test_a_gifs_estimate_counts_its_frames() -> None:
    route = load_catalog().routes["gpt-image-2.6-flare.official"]
    assert route.price is not None and route.price.tokens is not None
    # One low-quality megapixel image's output: 1,088 tokens at the output rate.
    frame = 1088 * route.price.tokens.image_output / 1_000_000

    def estimate(**fields: object) -> float:
        body = {"model": "gpt-image-2.6-flare", "prompt": "a ball", "size": "1024x1024", **fields}
        plan = plan_images(parse_generation(body), route)
        return estimate_images(
            route.price,
            plan.calls,
            "a ball",
            size=plan.size,
            quality="low",
            frames=gif_frames(plan),
        )

    one = estimate()
    assert estimate(output_format="png") == one
    assert estimate(output_format="gif", frame_count=4) - one == pytest.approx(3 * frame, abs=2e-6)
    # Without frame_count, the most the route's frame_count rule allows (catalog data: 16).
    assert estimate(output_format="gif") - one == pytest.approx(15 * frame, abs=2e-6)

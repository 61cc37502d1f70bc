"""GPT Image 2.6 (issue 23): its per-image VIP and web routes, its parameters (quality xhigh and
max, complexity, gif with frame_count, svg) taken where a route takes them and refused with a
400 before anything goes upstream where it does not, and OpenAI's 2026-12-01 shutdowns served
by 2.6 Sunburst. Through the real `openai` SDK, a gateway and the simulated upstream."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx2
import openai
import pytest
from PIL import Image

from mediagate.catalog import load_catalog
from mediagate.simulator import make_png

from .conftest import Gateway, Sim, assert_error, decode_image, only_call

CATALOG = load_catalog()


def _cost(headers: Any) -> float:
    return float(headers["x-mediagate-cost-usd"])


# --- the new routes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "upstream"),
    [
        ("gpt-image-2.6-flare-vip", "gpt-image-2.6-flare-vip"),
        ("gpt-image-2.6-sunburst-vip", "gpt-image-2.6-sunburst-vip"),
    ],
)
def test_the_vip_routes_take_size_and_quality_for_three_cents(
    client: openai.OpenAI, sim: Sim, model: str, upstream: str
) -> None:
    raw = client.images.with_raw_response.generate(
        model=model, prompt="a kite", size="3840x2160", quality="high"
    )
    assert raw.headers["x-mediagate-route"] == CATALOG.models[model].routes[0]
    assert _cost(raw.headers) == 0.03
    result = raw.parse()
    assert decode_image(result.data[0].b64_json).size == (3840, 2160)
    # The route says no size: the answer's is the image's own.
    assert result.size == "3840x2160" and result.output_format == "png"
    call = only_call(sim)
    assert (call.group, call.model) == ("default", upstream)
    assert call.body == {
        "model": upstream,
        "prompt": "a kite",
        "size": "3840x2160",
        "quality": "high",
        "response_format": "b64_json",
    }
    # PNG is what the route makes: asking for it is not refused, it is dropped (the upstream
    # knows no output_format) and reported.
    sim.state.reset()
    png = client.images.with_raw_response.generate(model=model, prompt="p", output_format="png")
    assert png.headers["x-mediagate-dropped"] == "output_format"
    assert "output_format" not in only_call(sim).body


def test_the_web_route_picks_its_size_and_takes_an_output_format(
    client: openai.OpenAI, sim: Sim
) -> None:
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2.6-web", prompt="a kite", size="1024x1024", quality="high"
    )
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6.web"
    assert raw.headers["x-mediagate-dropped"] == "quality,size"
    assert _cost(raw.headers) == 0.03
    assert raw.parse().size == "2048x2048"  # "about 2K", the route's choice
    assert only_call(sim).body == {
        "model": "gpt-image-2.6-web",
        "prompt": "a kite",
        "response_format": "b64_json",
    }
    sim.state.reset()
    gif = client.images.generate(model="gpt-image-2.6-web", prompt="a kite", output_format="gif")
    assert gif.output_format == "gif"
    image = Image.open(io.BytesIO(base64.b64decode(gif.data[0].b64_json or "")))
    assert image.format == "GIF" and image.size == (2048, 2048) and image.n_frames == 9
    assert only_call(sim).body["output_format"] == "gif"


# --- the parameters where a route takes them ------------------------------------------------


@pytest.mark.parametrize("quality", ["xhigh", "max"])
def test_the_official_forward_takes_xhigh_and_max(
    client: openai.OpenAI, sim: Sim, quality: str
) -> None:
    result = client.images.generate(
        model="gpt-image-2.6-flare", prompt="p", quality=quality, complexity="low"
    )
    assert result.quality == quality
    body = only_call(sim).body
    assert (body["quality"], body["complexity"]) == (quality, "low")


def test_an_animated_gif_with_its_frames(client: openai.OpenAI, sim: Sim) -> None:
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2.6-sunburst",
        prompt="a bouncing ball",
        output_format="gif",
        frame_count=4,
        size="1024x1536",
    )
    result = raw.parse()
    assert result.output_format == "gif" and result.size == "1024x1536"
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert (image.format, image.size, image.n_frames) == ("GIF", (1024, 1536), 4)
    body = only_call(sim).body
    assert (body["output_format"], body["frame_count"]) == ("gif", 4)
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-sunburst.official"


def test_an_svg_as_base64_and_as_a_hosted_link(
    client: openai.OpenAI, gateway: Gateway, sim: Sim
) -> None:
    result = client.images.generate(
        model="gpt-image-2.6-flare", prompt="a logo", output_format="svg", size="1024x1024"
    )
    assert result.output_format == "svg"
    svg = base64.b64decode(result.data[0].b64_json or "", validate=True)
    assert svg.startswith(b"<?xml") and b"<svg" in svg and b'width="1024"' in svg
    linked = client.images.generate(
        model="gpt-image-2.6-flare", prompt="a logo", output_format="svg", response_format="url"
    )
    link = linked.data[0].url or ""
    assert link.startswith(f"{gateway.url}/v1/files/images/") and link.endswith(".svg")
    with httpx2.Client() as http:
        served = http.get(link)
    assert served.status_code == 200 and served.content.startswith(b"<?xml")
    assert served.headers["content-type"] == "image/svg+xml"
    # A document that could carry script runs nothing from the gateway's origin.
    assert "sandbox" in served.headers["content-security-policy"]
    assert [c.body["output_format"] for c in sim.sent()] == ["svg", "svg"]


# --- refused with a 400 before anything goes upstream ---------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "param", "words"),
    [
        # The VIP routes: no xhigh or max, no complexity, PNG only.
        ("gpt-image-2.6-flare-vip", {"quality": "xhigh"}, "quality", "low, medium, high."),
        ("gpt-image-2.6-sunburst-vip", {"quality": "max"}, "quality", "low, medium, high."),
        ("gpt-image-2.6-flare-vip", {"complexity": "high"}, "complexity", "'complexity' is"),
        ("gpt-image-2.6-sunburst-vip", {"output_format": "gif"}, "output_format", "gif is"),
        ("gpt-image-2.6-flare-vip", {"output_format": "svg"}, "output_format", "svg is"),
        # The web route: GIF but no SVG, no frame_count, no quality beyond high.
        ("gpt-image-2.6-web", {"output_format": "svg"}, "output_format", "png, jpeg, webp, gif."),
        ("gpt-image-2.6-web", {"output_format": "gif", "frame_count": 4}, "frame_count", "is"),
        ("gpt-image-2.6-web", {"quality": "max"}, "quality", "'quality' max"),
        # Older routes take none of 2.6's parameters.
        ("gpt-image-2.5-flare", {"complexity": "low"}, "complexity", "'complexity'"),
        ("gpt-image-2.5-flare-vip", {"output_format": "gif"}, "output_format", "gif"),
        ("gpt-image-2", {"output_format": "svg"}, "output_format", "png, jpeg, webp."),
        ("gpt-image-2-web", {"quality": "xhigh"}, "quality", "xhigh"),
        ("sora_image", {"frame_count": 3}, "frame_count", "'frame_count'"),
        # The official forward's own rules (catalog `rules`).
        ("gpt-image-2.6-flare", {"frame_count": 4}, "frame_count", "only supported with"),
        ("gpt-image-2.6-flare", {"output_format": "gif", "frame_count": 17}, "frame_count", "16"),
        ("gpt-image-2.6-flare", {"output_format": "gif", "frame_count": 1}, "frame_count", "2"),
        ("gpt-image-2.6-flare", {"output_format": "svg", "n": 2}, "n", "at most 1 image"),
        ("gpt-image-2.6-flare", {"output_format": "gif", "stream": True}, "output_format", "str"),
        ("gpt-image-2.6-flare", {"output_format": "svg", "stream": True}, "output_format", "str"),
        ("gpt-image-2.6-flare", {"output_format": "gif", "output_compression": 50}, None, ""),
    ],
)
def test_what_a_route_does_not_take_is_a_400_before_the_upstream(
    gateway: Gateway, sim: Sim, model: str, body: dict[str, Any], param: str | None, words: str
) -> None:
    response = gateway.generate("p", model=model, **body)
    message = assert_error(response, 400, param or "output_compression")
    assert words in message
    assert sim.sent() == []


def test_svg_is_for_generations_only_and_gif_takes_no_mask(client: openai.OpenAI, sim: Sim) -> None:
    png = make_png(64, 64, "photo")
    with pytest.raises(openai.BadRequestError, match="only on generations") as caught:
        client.images.edit(
            model="gpt-image-2.6-flare",
            image=("a.png", png, "image/png"),
            prompt="vectorise",
            output_format="svg",
        )
    assert caught.value.body["param"] == "output_format"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="mask"):
        client.images.edit(
            model="gpt-image-2.6-flare",
            image=("a.png", png, "image/png"),
            mask=("m.png", make_png(64, 64, "mask"), "image/png"),
            prompt="animate",
            output_format="gif",
        )
    assert sim.sent() == []
    # A gif edit without a mask goes.
    edited = client.images.edit(
        model="gpt-image-2.6-flare",
        image=("a.png", png, "image/png"),
        prompt="animate",
        output_format="gif",
        frame_count=3,
    )
    assert edited.output_format == "gif"
    assert only_call(sim).body["frame_count"] == "3"


def test_a_quality_error_lists_only_what_the_route_takes(gateway: Gateway, sim: Sim) -> None:
    for model, listed in [
        ("gpt-image-2.6-flare-vip", "low, medium, high"),
        ("gpt-image-2.6-flare", "low, medium, high, xhigh, max, auto"),
        ("gpt-image-2", "low, medium, high, auto"),
    ]:
        message = assert_error(gateway.generate("p", model=model, quality="ultra"), 400, "quality")
        assert message.endswith(f"use one of {listed}."), message
        assert "standard" not in message and "hd" not in message
    # A route that takes no quality lists none.
    message = assert_error(
        gateway.generate("p", model="gpt-image-2.6-web", quality="ultra"), 400, "quality"
    )
    assert (
        message == "Invalid value for 'quality': 'ultra'; route gpt-image-2.6.web takes no quality."
    )
    assert sim.sent() == []


# --- fallback to the VIP route ----------------------------------------------------------------


def test_2_6_falls_back_to_its_vip_route_only_with_what_it_takes(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    client = make_gateway(key_openaiofficialenterprise=None).sdk()
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2.6-flare", prompt="[sim:burst503=3:a] p", quality="high"
    )
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-flare.vip"
    assert raw.headers["x-mediagate-fallback"].startswith("gpt-image-2.6-flare.official=")
    assert _cost(raw.headers) == 0.03
    assert [(c.model, c.status) for c in sim.sent()][-1] == ("gpt-image-2.6-flare-vip", 200)
    sim.state.reset()
    # xhigh is not the VIP route's: the request is not handed to it.
    with pytest.raises(openai.InternalServerError):
        client.images.generate(
            model="gpt-image-2.6-flare", prompt="[sim:burst503=3:b] p", quality="xhigh"
        )
    assert {c.model for c in sim.sent()} == {"gpt-image-2.6-flare"}


# --- OpenAI's 2026-12-01 shutdowns -----------------------------------------------------------

SHUT_DOWN = [
    "gpt-image-1.5",
    "gpt-image-1.5-2025-12-16",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
]
DEC_1 = f"@{int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())}"


@pytest.mark.parametrize("name", SHUT_DOWN)
def test_the_shut_down_names_are_served_by_2_6_sunburst_and_say_so(
    client: openai.OpenAI, sim: Sim, name: str
) -> None:
    raw = client.images.with_raw_response.generate(model=name, prompt="a gull", quality="low")
    assert raw.status_code == 200
    assert raw.headers["x-mediagate-alias"] == f"{name}>gpt-image-2.6-sunburst"
    assert raw.headers["deprecation"] == DEC_1
    assert raw.headers["link"] == (
        '<https://developers.openai.com/api/docs/deprecations>; rel="deprecation"; type="text/html"'
    )
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-sunburst.official"
    assert (only_call(sim).group, only_call(sim).model) == (
        "OpenAI Official",
        "gpt-image-2.6-sunburst",
    )


@pytest.mark.parametrize("name", SHUT_DOWN)
def test_without_an_official_key_the_shut_down_names_get_the_vip_route(
    make_gateway: Callable[..., Gateway], sim: Sim, name: str
) -> None:
    client = make_gateway(key_openaiofficial=None, key_openaiofficialenterprise=None).sdk()
    raw = client.images.with_raw_response.generate(model=name, prompt="a gull")
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-sunburst.vip"
    assert raw.headers["x-mediagate-alias"] == f"{name}>gpt-image-2.6-sunburst"
    assert raw.headers["deprecation"] == DEC_1
    assert _cost(raw.headers) == 0.03
    assert (only_call(sim).group, only_call(sim).model) == ("default", "gpt-image-2.6-sunburst-vip")


def test_with_no_image_key_at_all_a_shut_down_name_is_a_404_naming_its_successor(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(
        key_default=None, key_openaiofficial=None, key_openaiofficialenterprise=None
    )
    with pytest.raises(openai.NotFoundError, match=r"gpt-image-2\.6-sunburst"):
        gateway.sdk().images.generate(model="gpt-image-1.5", prompt="p")
    assert sim.sent() == []


def test_the_simulator_answers_the_shut_down_ids_404(sim: Sim) -> None:
    from .conftest import GROUP_KEYS

    with httpx2.Client(base_url=sim.url) as http:
        answer = http.post(
            "/v1/images/generations",
            json={"model": "gpt-image-1.5", "prompt": "p"},
            headers={"Authorization": f"Bearer {GROUP_KEYS['OpenAI Official']}"},
        )
    assert_error(answer, 404, None, "model_not_found")


# --- the answer's size, plain and streamed ---------------------------------------------------


def _completed(gateway: Gateway, model: str, **body: Any) -> dict[str, Any]:
    with gateway.http() as http:
        answer = http.post(
            "/v1/images/generations",
            json={"model": model, "prompt": "a dune", "stream": True, **body},
        )
    assert answer.status_code == 200, answer.text
    events = [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]
    assert events[-1]["type"] == "image_generation.completed"
    return events[-1]


@pytest.mark.parametrize(
    ("model", "body", "size"),
    [
        ("gpt-image-2.6-web", {}, "2048x2048"),
        ("gpt-image-2.6-flare-vip", {}, "1024x1024"),
        ("gpt-image-2.6-sunburst-vip", {"size": "3840x2160"}, "3840x2160"),
        ("gpt-image-2.5-web", {}, "2048x2048"),
        ("gpt-image-2-vip", {}, "2048x2048"),
    ],
)
def test_where_the_route_picks_the_size_plain_and_streamed_answers_agree(
    gateway: Gateway, model: str, body: dict[str, Any], size: str
) -> None:
    plain = gateway.generate("a dune", model=model, **body)
    assert plain.status_code == 200, plain.text
    assert plain.json()["size"] == size
    assert _completed(gateway, model, **body)["size"] == size


# --- what a budget reserves ------------------------------------------------------------------


def test_xhigh_and_max_reserve_more_than_high_on_2_6() -> None:
    from mediagate.accounting.pricing import estimate_images
    from mediagate.sizes import Size

    route = CATALOG.routes["gpt-image-2.6-flare.official"]
    cost = {
        quality: estimate_images(route.price, [1], "p", size=Size(1024, 1024), quality=quality)
        for quality in ("high", "xhigh", "max")
    }
    assert cost["high"] < cost["xhigh"] < cost["max"]
    assert cost["max"] == pytest.approx(16640 * 30 / 1_000_000, abs=0.001)


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_the_web_routes_jpeg_and_webp_say_their_size_plain_and_streamed(
    client: openai.OpenAI, output_format: str
) -> None:
    # The route answers no size: the image's own bytes give it, alike in both answers.
    plain = client.images.generate(
        model="gpt-image-2.6-web", prompt="a kite", output_format=output_format
    )
    image = Image.open(io.BytesIO(base64.b64decode(plain.data[0].b64_json or "")))
    assert image.format == output_format.upper() and image.size == (2048, 2048)
    assert (plain.size, plain.output_format) == ("2048x2048", output_format)
    stream = client.images.generate(
        model="gpt-image-2.6-web", prompt="a kite", output_format=output_format, stream=True
    )
    completed = [event for event in stream if event.type == "image_generation.completed"]
    assert [(e.size, e.output_format) for e in completed] == [("2048x2048", output_format)]


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_the_web_routes_jpeg_and_webp_come_as_links_too(
    client: openai.OpenAI, output_format: str
) -> None:
    # The simulator keeps a link's file under its format's extension (it had none for these).
    answer = client.images.generate(
        model="gpt-image-2.6-web",
        prompt="a kite",
        output_format=output_format,
        response_format="url",
    )
    assert answer.data and answer.data[0].url

"""Image generation through the real OpenAI SDK, for every route and dialect."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from PIL import Image

from mediagate.simulator import make_png

from .conftest import Gateway, Sim, decode_image, only_call


def test_official_parameters_pass_through(client: openai.OpenAI, sim: Sim) -> None:
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2.6-sunburst",
        prompt="a lighthouse",
        size="1536x1024",
        quality="high",
        output_format="webp",
        output_compression=80,
        background="opaque",
        moderation="low",
        complexity="high",
    )
    result = raw.parse()
    assert decode_image(result.data[0].b64_json).size == (1536, 1024)
    assert result.usage is not None and result.usage.total_tokens > 0
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-sunburst.official"
    assert "x-mediagate-dropped" not in raw.headers
    body = only_call(sim).body
    assert body == {
        "model": "gpt-image-2.6-sunburst",
        "prompt": "a lighthouse",
        "size": "1536x1024",
        "quality": "high",
        "output_format": "webp",
        "output_compression": 80,
        "background": "opaque",
        "moderation": "low",
        "complexity": "high",
        # Always explicit: the gateway asks for what the client wants.
        "response_format": "b64_json",
    }


def test_default_model_and_b64_default(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.generate(prompt="a plain request")
    assert decode_image(result.data[0].b64_json).size == (1024, 1024)
    assert only_call(sim).model == "gpt-image-2.5-sunburst"  # the catalog's default


def test_nulls_from_the_sdk_are_treated_as_absent(client: openai.OpenAI, sim: Sim) -> None:
    # The SDK sends JSON null for arguments passed as None; the strict upstream refuses nulls.
    result = client.images.generate(
        model="gpt-image-2-web", prompt="nulls", size=None, quality=None, n=None
    )
    assert decode_image(result.data[0].b64_json).size == (1024, 1024)
    assert only_call(sim).body == {
        "model": "gpt-image-2",
        "prompt": "nulls",
        "response_format": "b64_json",
    }


def test_official_route_uses_the_openai_official_group(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.generate(
        model="gpt-image-2", prompt="a harbour", size="2048x1152", quality="low", n=2
    )
    assert [decode_image(d.b64_json).size for d in result.data or []] == [(2048, 1152)] * 2
    assert result.usage is not None and result.usage.output_tokens > 0
    assert result.size == "2048x1152" and result.quality == "low"
    call = only_call(sim)
    assert (call.group, call.model) == ("OpenAI Official", "gpt-image-2")
    assert call.body["n"] == 2 and call.body["quality"] == "low"


def test_enterprise_route(client: openai.OpenAI, sim: Sim) -> None:
    client.images.generate(model="gpt-image-2-enterprise", prompt="x", size="1024x1024")
    assert only_call(sim).group == "OpenAI Official Enterprise"


def test_web_route_drops_size_and_quality_and_repairs_b64(client: openai.OpenAI, sim: Sim) -> None:
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2-web", prompt="a meadow", size="1536x1024", quality="high"
    )
    result = raw.parse()
    b64 = result.data[0].b64_json
    assert b64 is not None and not b64.startswith("data:") and len(b64) % 4 == 0
    # The simulator draws the model it was asked for: the upstream's name for the route.
    expected = make_png(1024, 1024, "a meadow", "gpt-image-2")
    assert decode_image(b64).tobytes() == Image.open(io.BytesIO(expected)).tobytes()
    assert raw.headers["x-mediagate-dropped"] == "quality,size"
    call = only_call(sim)
    assert (call.group, call.model) == ("default", "gpt-image-2")
    assert "size" not in call.body and "quality" not in call.body


def test_web_route_makes_n_images_with_n_calls(client: openai.OpenAI, sim: Sim) -> None:
    raw = client.images.with_raw_response.generate(model="gpt-image-2-web", prompt="three", n=3)
    assert len(raw.parse().data or []) == 3
    assert raw.headers["x-mediagate-upstream-calls"] == "3"
    assert len(sim.sent()) == 3 and all("n" not in c.body for c in sim.sent())


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        ("3840x2160", "3840x2160"),  # an exact table size passes
        ("1024x1536", "848x1280"),  # 2:3, nearest area is the 1K tier
        ("1920x1080", "2048x1152"),  # 16:9, nearest area is the 2K tier
        ("1024x1024", "1280x1280"),
        ("4000x1700", "3840x1632"),  # about 21:9, large
        ("auto", "2048x2048"),
        (None, "2048x2048"),
    ],
)
def test_vip_route_maps_size_to_the_table(
    client: openai.OpenAI, sim: Sim, asked: str | None, sent: str
) -> None:
    raw = client.images.with_raw_response.generate(
        model="gpt-image-2-vip", prompt="a city", size=asked, quality="high"
    )
    width, height = (int(v) for v in sent.split("x"))
    assert decode_image(raw.parse().data[0].b64_json).size == (width, height)
    assert raw.headers["x-mediagate-dropped"] == "quality"
    if asked != sent:
        assert raw.headers["x-mediagate-mapped"] == f"size={asked or 'default'}>{sent}"
    call = only_call(sim)
    assert call.model == "gpt-image-2-vip" and call.body["size"] == sent
    assert "quality" not in call.body


@pytest.mark.parametrize(
    ("model", "size", "marker", "pixels"),
    [
        ("sora_image", "1024x1536", "【2:3】", (1024, 1536)),
        ("sora_image", "1536x1024", "【3:2】", (1536, 1024)),
        ("gpt-4o-image", "1024x1024", "【1:1】", (1024, 1024)),
        ("gpt-4o-image", "1792x1024", "【3:2】", (1536, 1024)),
        ("sora_image", "720x1280", "【2:3】", (1024, 1536)),
    ],
)
def test_chat_route_turns_size_into_a_ratio_marker(
    client: openai.OpenAI, sim: Sim, model: str, size: str, marker: str, pixels: tuple[int, int]
) -> None:
    result = client.images.generate(model=model, prompt="a fox in snow ", size=size)
    assert decode_image(result.data[0].b64_json).size == pixels
    call = only_call(sim)
    assert call.path == "/v1/chat/completions" and call.model == model
    assert call.body["messages"] == [{"role": "user", "content": f"a fox in snow{marker}"}]


def test_chat_route_keeps_the_users_own_marker(client: openai.OpenAI, sim: Sim) -> None:
    raw = client.images.with_raw_response.generate(
        model="sora_image", prompt="tall tower【2:3】", size="1536x1024"
    )
    assert decode_image(raw.parse().data[0].b64_json).size == (1024, 1536)
    assert raw.headers["x-mediagate-dropped"] == "size"
    assert only_call(sim).body["messages"][0]["content"] == "tall tower【2:3】"


def test_chat_route_without_size_sends_no_marker(client: openai.OpenAI, sim: Sim) -> None:
    client.images.generate(model="sora_image", prompt="anything", quality="high")
    assert only_call(sim).body["messages"][0]["content"] == "anything"


def test_chat_route_n_runs_concurrent_calls(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.generate(model="sora_image", prompt="four cats", n=4, size="1024x1024")
    assert len(result.data or []) == 4
    assert [c.path for c in sim.sent()] == ["/v1/chat/completions"] * 4


def test_url_passthrough_mode_hands_out_the_upstream_link(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    client = make_gateway(image_urls="passthrough").sdk()
    result = client.images.generate(model="sora_image", prompt="link", response_format="url")
    url = result.data[0].url
    assert url is not None and url.startswith(sim.url)
    assert result.data[0].b64_json is None
    assert Image.open(io.BytesIO(httpx2.get(url).content)).size == (1024, 1024)


def test_url_from_an_images_route(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.generate(model="gpt-image-2", prompt="u", response_format="url")
    assert result.data[0].url is not None
    assert only_call(sim).body["response_format"] == "url"


def test_b64_wanted_but_upstream_gave_a_url(client: openai.OpenAI, sim: Sim) -> None:
    # Some routes answer a link even when asked for base64: the gateway downloads it.
    result = client.images.generate(model="gpt-image-2", prompt="[sim:b64url] please")
    assert decode_image(result.data[0].b64_json).size == (1024, 1024)


def test_url_wanted_but_upstream_gave_b64_is_hosted_by_the_gateway(
    client: openai.OpenAI, sim: Sim, gateway: Any
) -> None:
    result = client.images.generate(
        model="gpt-image-2-vip", prompt="[sim:b64only]", response_format="url", size="1280x720"
    )
    url = result.data[0].url
    assert url is not None and url.startswith(f"{gateway.url}/v1/files/images/")
    assert only_call(sim).body["response_format"] == "url"
    response = httpx2.get(url)  # unguessable link, served without a key
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (1280, 720)
    assert httpx2.get(url + "x").status_code == 404


def test_every_response_has_a_request_id(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(model="gpt-image-2-web", prompt="id")
    assert raw.headers["x-request-id"].startswith("req_")

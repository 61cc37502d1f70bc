"""`stream: true` works with the SDK on every route: relayed where the upstream streams,
emulated (keep-alives, then one completed event) where it does not."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import httpx2
import openai
import pytest
from PIL import Image

from .conftest import CLIENT_KEY, Gateway, Sim
from .test_edits import PNG_SMALL


def image_of(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))


@pytest.mark.parametrize(
    ("model", "size", "pixels"),
    [
        ("gpt-image-2-web", None, (1024, 1024)),
        ("gpt-image-2-vip", "1024x1536", (848, 1280)),
        ("sora_image", "1536x1024", (1536, 1024)),
    ],
)
def test_emulated_stream_yields_one_completed_event(
    client: openai.OpenAI, sim: Sim, model: str, size: str | None, pixels: tuple[int, int]
) -> None:
    events = list(
        client.images.generate(model=model, prompt="s", size=size, stream=True, partial_images=2)
    )
    assert [e.type for e in events] == ["image_generation.completed"]
    assert image_of(events[0].b64_json).size == pixels
    assert events[0].size == f"{pixels[0]}x{pixels[1]}" and events[0].output_format == "png"
    assert all("stream" not in c.body and "partial_images" not in c.body for c in sim.sent())


def test_emulated_stream_sends_keepalives_while_the_route_works(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(stream_keepalive_s=0.1)
    body = {"model": "gpt-image-2-web", "prompt": "[sim:sleep=0.6] slow", "stream": True}
    lines: list[str] = []
    with (
        httpx2.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{gateway.url}/v1/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-mediagate-route"] == "gpt-image-2.web"
        lines = list(response.iter_lines())
    keepalives = [line for line in lines if line.startswith(":")]
    assert len(keepalives) >= 4  # one at once, then one per 0.1 s of a 0.6 s generation
    assert lines.index("event: image_generation.completed") > lines.index(keepalives[-1])


def test_n_images_give_n_completed_events(client: openai.OpenAI, sim: Sim) -> None:
    events = list(client.images.generate(model="gpt-4o-image", prompt="n", n=3, stream=True))
    assert [e.type for e in events] == ["image_generation.completed"] * 3
    assert len(sim.sent()) == 3


@pytest.mark.parametrize(
    ("prompt", "words"),
    [("[sim:status=500]", "HTTP 500"), ("[sim:refuse]", "without an image")],
)
def test_upstream_failure_becomes_an_error_event(
    client: openai.OpenAI, prompt: str, words: str
) -> None:
    stream = client.images.generate(model="sora_image", prompt=prompt, stream=True)
    with pytest.raises(openai.APIError, match=words):
        list(stream)


def test_bad_input_is_still_a_plain_400_before_streaming(client: openai.OpenAI, sim: Sim) -> None:
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="gpt-image-2-vip", prompt="x", n=0, stream=True)
    assert sim.sent() == []


def test_stream_ignores_url_and_reports_it(gateway: Gateway) -> None:
    with gateway.http() as http:
        response = http.post(
            "/v1/images/generations",
            json={
                "model": "gpt-image-2-web",
                "prompt": "u",
                "stream": True,
                "response_format": "url",
            },
        )
    assert response.headers["x-mediagate-dropped"] == "response_format"
    assert "image_generation.completed" in response.text


def test_emulated_edit_stream(client: openai.OpenAI, sim: Sim) -> None:
    events = list(
        client.images.edit(
            model="gpt-image-2-web",
            image=("in.png", PNG_SMALL, "image/png"),
            prompt="e",
            stream=True,
        )
    )
    assert [e.type for e in events] == ["image_edit.completed"]


def test_streaming_route_relays_partial_images_as_they_arrive(
    client: openai.OpenAI, sim: Sim
) -> None:
    import time

    arrivals: list[float] = []
    types: list[str] = []
    stream = client.images.generate(
        model="gpt-image-2", prompt="relay", stream=True, partial_images=3, size="1024x1536"
    )
    for event in stream:
        arrivals.append(time.monotonic())
        types.append(event.type)
    assert types == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    # The simulator spaces its four events 12.5 ms apart (37.5 ms first to last); relayed one
    # by one they arrive spread out too, where a buffered stream would arrive all at once.
    assert arrivals[-1] - arrivals[0] > 0.025
    (call,) = sim.sent()
    assert call.body["stream"] is True and call.body["partial_images"] == 3


def test_official_edit_stream_is_relayed(client: openai.OpenAI, sim: Sim) -> None:
    events = list(
        client.images.edit(
            model="gpt-image-2",
            image=("in.png", PNG_SMALL, "image/png"),
            prompt="e",
            stream=True,
            partial_images=1,
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert image_of(events[-1].b64_json).size == (1024, 1024)
    (call,) = sim.sent()
    assert call.body["stream"] == "true"


def test_a_stream_cut_mid_way_becomes_an_error_event(client: openai.OpenAI) -> None:
    stream = client.images.generate(
        model="gpt-image-2", prompt="[sim:cut]", stream=True, partial_images=2
    )
    with pytest.raises(openai.APIError, match=r"broke off|ended before"):
        list(stream)


def test_upstream_error_before_streaming_is_a_plain_http_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.images.generate(model="gpt-image-2", prompt="[sim:status=429]", stream=True)

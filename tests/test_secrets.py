"""Upstream keys never reach a client, whatever the upstream echoes (issue 14, item 9)."""

from __future__ import annotations

import httpx2
import openai

from .conftest import GROUP_KEYS, Gateway, Sim


def _no_key_in(response: httpx2.Response) -> None:
    exposed = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for key in GROUP_KEYS.values():
        assert key not in exposed


def test_an_upstream_echoing_its_key_into_an_images_answer(gateway: Gateway, sim: Sim) -> None:
    for model in ("gpt-image-2", "gpt-image-2-web"):
        response = gateway.generate("a fox [sim:echokey]", model=model, response_format="b64_json")
        assert response.status_code == 200, response.text
        _no_key_in(response)
        body = response.json()
        # Only the fields the OpenAI ImagesResponse has: the upstream's own are dropped.
        assert set(body) <= {
            "created",
            "data",
            "background",
            "output_format",
            "size",
            "quality",
            "usage",
        }
        # They held the key: quality is gone, the size is the image's own (read from its bytes).
        assert "quality" not in body and body["size"] == "1024x1024"
    web = response.json()["data"][0]
    assert web["revised_prompt"].startswith("a fox") and "[redacted]" in web["revised_prompt"]


def test_an_upstream_echoing_its_key_into_video_file_headers(videos_gw: Gateway, sim: Sim) -> None:
    sdk = videos_gw.sdk()
    video = sdk.videos.create_and_poll(model="sora-2", prompt="sea [sim:echokey]")
    assert video.status == "completed"
    with videos_gw.http() as http:
        response = http.get(f"/v1/videos/{video.id}/content")
    assert response.status_code == 200 and response.content
    _no_key_in(response)
    assert "etag" not in response.headers and "content-disposition" not in response.headers
    # Without the leak, the headers a player relies on pass.
    plain = sdk.videos.create_and_poll(model="sora-2", prompt="sea")
    with videos_gw.http() as http:
        assert "etag" in http.get(f"/v1/videos/{plain.id}/content").headers


def test_the_sdk_reads_a_scrubbed_answer(client: openai.OpenAI) -> None:
    image = client.images.generate(model="gpt-image-2-web", prompt="x [sim:echokey]").data
    assert image and image[0].revised_prompt and "[redacted]" in image[0].revised_prompt

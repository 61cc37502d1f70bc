"""The simulated upstream must be as strict as the real routes, or gateway tests prove nothing."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from PIL import Image
from starlette.testclient import TestClient

from mediagate.servethread import BackgroundServer
from mediagate.simulator import (
    DEFAULT_SIM_KEYS,
    SimConfig,
    SimState,
    create_simulator_app,
    make_png,
)
from mediagate.simulator.png import png_dimensions

from .conftest import assert_error

BASE = "http://127.0.0.1:9999"
DEFAULT = "sk-sim-default"
OFFICIAL = "sk-sim-official"
ENTERPRISE = "sk-sim-enterprise"
IMAGES = "/v1/images/generations"
CHAT = "/v1/chat/completions"
LINK_RE = re.compile(r"!\[image\]\((http://127\.0\.0\.1:9999/files/[0-9a-f]+\.png)\)")


@pytest.fixture
def state() -> SimState:
    return SimState()


@pytest.fixture
def client(state: SimState) -> TestClient:
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS)), state)
    return TestClient(app, base_url=BASE)


def post(client: TestClient, path: str, body: Any, token: str | None = DEFAULT) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(path, json=body, headers=headers)


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image.size


def decode_b64(value: str) -> bytes:
    # What a tolerant client has to do with the reverse routes' output.
    value = value.removeprefix("data:image/png;base64,")
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def fetch(client: TestClient, url: str) -> bytes:
    assert url.startswith(f"{BASE}/files/")
    response = client.get(url)  # no Authorization: links behave like CDN links
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    return response.content


def chat_body(text: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "sora_image", "messages": [{"role": "user", "content": text}], **extra}


# --- png ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(3840, 2160), (3520, 2336), (1024, 1024), (1, 1), (7, 3)])
def test_make_png_decodes_at_exact_size(size: tuple[int, int]) -> None:
    data = make_png(*size, seed=f"seed {size}")
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", size)


def test_make_png_follows_seed_and_is_fast() -> None:
    start = time.perf_counter()
    big = make_png(3840, 2160, "a fresh 4k seed")
    assert time.perf_counter() - start < 1.0
    assert len(big) < 1_000_000
    a = Image.open(io.BytesIO(make_png(8, 8, "a cat"))).convert("RGB")
    b = Image.open(io.BytesIO(make_png(8, 8, "a dog"))).convert("RGB")
    assert a.tobytes() != b.tobytes()
    assert make_png(8, 8, "a cat") == make_png(8, 8, "a cat")


def test_make_png_rejects_empty_size() -> None:
    with pytest.raises(ValueError):
        make_png(0, 10, "x")


# --- auth, routing, body shape ----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-nope"}, {"Authorization": f"Basic {DEFAULT}"}],
)
def test_bad_token_is_401(client: TestClient, state: SimState, headers: dict[str, str]) -> None:
    body = {"model": "gpt-image-2", "prompt": "cat"}
    response = client.post(IMAGES, json=body, headers=headers)
    message = assert_error(response, 401, None, "invalid_api_key")
    assert message.startswith("Invalid token (request id ")
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert [(c.group, c.status, c.body) for c in state.calls] == [(None, 401, body)]
    assert not state.files


@pytest.mark.parametrize(
    ("token", "path", "model", "group"),
    [
        (OFFICIAL, IMAGES, "gpt-image-2-vip", "OpenAI Official"),
        (OFFICIAL, IMAGES, "gpt-image-2.5-flare-vip", "OpenAI Official"),
        (OFFICIAL, IMAGES, "gpt-image-2.5-web", "OpenAI Official"),
        (ENTERPRISE, CHAT, "sora_image", "OpenAI Official Enterprise"),
        (DEFAULT, IMAGES, "sora_image", "default"),
        (DEFAULT, CHAT, "gpt-image-2", "default"),
        (DEFAULT, IMAGES, "gpt-image-2.5-sunburst", "default"),
        (DEFAULT, IMAGES, "gpt-image-2.6-flare", "default"),
        (DEFAULT, IMAGES, "gpt-image-2.5", "default"),
        (OFFICIAL, IMAGES, "gpt-image-2.6-flare-vip", "OpenAI Official"),
        (OFFICIAL, IMAGES, "gpt-image-2.6-web", "OpenAI Official"),
    ],
)
def test_wrong_group_or_endpoint_is_503(
    client: TestClient, token: str, path: str, model: str, group: str
) -> None:
    body = (
        chat_body("a cat") | {"model": model} if path == CHAT else {"model": model, "prompt": "x"}
    )
    response = post(client, path, body, token)
    message = assert_error(response, 503, None, "model_not_found")
    assert message == f"No available channel for model {model} under group {group}"
    assert response.json()["error"]["type"] == "upstream_error"


def test_body_must_be_a_json_object(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {DEFAULT}"}
    assert_error(client.post(IMAGES, json=["x"], headers=auth), 400, None)
    bad_json = client.post(
        IMAGES, content=b"{not json", headers=auth | {"Content-Type": "application/json"}
    )
    assert_error(bad_json, 400, None)
    as_form = client.post(IMAGES, data={"model": "gpt-image-2", "prompt": "x"}, headers=auth)
    assert_error(as_form, 400, None)
    assert_error(post(client, IMAGES, {"prompt": "x"}), 400, "model")
    assert_error(post(client, IMAGES, {"model": None, "prompt": "x"}), 400, "model")


def test_unknown_v1_path_is_404_and_recorded(client: TestClient, state: SimState) -> None:
    # (/v1/models exists: the group's model list, tests/test_catalog_drift.py.)
    response = client.get("/v1/assistants", headers={"Authorization": f"Bearer {DEFAULT}"})
    assert_error(response, 404, None)
    calls = [(c.path, c.group, c.status) for c in state.calls]
    assert calls == [("/v1/assistants", "default", 404)]


def test_never_422(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert_error(response, 404, None)


# --- retired ids --------------------------------------------------------------------------


@pytest.mark.parametrize("token", [DEFAULT, OFFICIAL, ENTERPRISE])
@pytest.mark.parametrize("model", ["gpt-image-1", "dall-e-3"])
def test_a_retired_id_is_404_naming_its_replacement(
    client: TestClient, state: SimState, token: str, model: str
) -> None:
    response = post(client, IMAGES, {"model": model, "prompt": "a lighthouse"}, token)
    message = assert_error(response, 404, None, "model_not_found")
    assert model in message and "retired" in message
    assert "gpt-image-2.6-sunburst" in message
    assert "usage" not in response.json()  # not billed
    assert not state.files


# --- what the official routes check (gpt-image-2) ------------------------------------------


def test_official_b64_and_n(client: TestClient) -> None:
    body = {
        "model": "gpt-image-2",
        "prompt": "a lighthouse",
        "size": "1536x1024",
        "quality": "high",
        "n": 2,
        "response_format": "b64_json",
        "output_format": "webp",
        "output_compression": 50,
        "background": "transparent",
        "moderation": "low",
        "user": "u1",
    }
    response = post(client, IMAGES, body, OFFICIAL)
    assert response.status_code == 200, response.text
    images = [base64.b64decode(item["b64_json"], validate=True) for item in response.json()["data"]]
    assert [png_size(image) for image in images] == [(1536, 1024)] * 2
    assert images[0] != images[1]  # n images are distinct, so dropped/duplicated ones show
    single = post(client, IMAGES, body | {"n": 1}, OFFICIAL).json()["usage"]["output_tokens"]
    assert response.json()["usage"]["output_tokens"] == 2 * single


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"output_compression": 50}, "output_compression"),
        ({"output_format": "png", "output_compression": 50}, "output_compression"),
        ({"output_format": "jpeg", "background": "transparent"}, "background"),
        ({"output_format": "gif"}, "output_format"),
        ({"size": "256x256"}, "size"),
        ({"size": None}, "size"),
        ({"quality": "hd"}, "quality"),
        ({"quality": "xhigh"}, "quality"),
        ({"moderation": "strict"}, "moderation"),
        ({"response_format": "png"}, "response_format"),
        ({"complexity": "low"}, "complexity"),
        ({"n": 0}, "n"),
        ({"n": 11}, "n"),
        ({"n": "2"}, "n"),
        ({"n": True}, "n"),
        ({"stream": False}, "stream"),
        ({"style": "vivid"}, "style"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 32001}, "prompt"),
        ({"prompt": 5}, "prompt"),
    ],
)
def test_official_rejects(client: TestClient, extra: dict[str, Any], param: str) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": "a cat"} | extra, OFFICIAL)
    assert_error(response, 400, param)


def test_unknown_parameter_message(client: TestClient) -> None:
    body = {"model": "gpt-image-2", "prompt": "a", "style": "x"}
    assert assert_error(
        post(client, IMAGES, body, OFFICIAL), 400, "style", "unknown_parameter"
    ) == ("Unknown parameter: 'style'.")


def test_missing_prompt(client: TestClient) -> None:
    assert_error(post(client, IMAGES, {"model": "gpt-image-2"}, OFFICIAL), 400, "prompt")


# --- gpt-image-2 official transit --------------------------------------------------------


@pytest.mark.parametrize("token", [OFFICIAL, ENTERPRISE])
def test_official_happy_path(client: TestClient, token: str) -> None:
    body = {"model": "gpt-image-2", "prompt": "a fox", "size": "2048x1152", "quality": "low"}
    response = post(client, IMAGES, body, token)
    assert response.status_code == 200, response.text
    result = response.json()
    assert png_size(base64.b64decode(result["data"][0]["b64_json"], validate=True)) == (2048, 1152)
    assert result["size"] == "2048x1152"
    assert result["quality"] == "low"
    assert result["output_format"] == "png"
    assert result["background"] == "opaque"
    text_tokens = len("a fox") // 4 + 1
    output_tokens = round(272 * 2048 * 1152 / (1024 * 1024))
    assert result["usage"] == {
        "input_tokens": text_tokens,
        "input_tokens_details": {
            "text_tokens": text_tokens,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "image_tokens": 0},
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
        "total_tokens": text_tokens + output_tokens,
    }


def test_cached_directive_reports_cached_input_tokens(client: TestClient) -> None:
    prompt = "a fox in the snow [sim:cached=3:500]"
    body = {"model": "gpt-image-2", "prompt": prompt, "quality": "low"}
    details = post(client, IMAGES, body, OFFICIAL).json()["usage"]["input_tokens_details"]
    # At most what the request has: 9 text tokens, no image tokens.
    assert details == {
        "text_tokens": len(prompt) // 4 + 1,
        "image_tokens": 0,
        "cached_tokens": 3,
        "cached_tokens_details": {"text_tokens": 3, "image_tokens": 0},
    }


def test_official_resolves_auto(client: TestClient) -> None:
    body = {"model": "gpt-image-2", "prompt": "a fox", "size": "auto", "quality": "auto"}
    result = post(client, IMAGES, body | {"background": "auto"}, OFFICIAL).json()
    assert (result["size"], result["quality"], result["background"]) == (
        "1024x1024",
        "medium",
        "opaque",
    )
    url_result = post(client, IMAGES, body | {"response_format": "url"}, OFFICIAL).json()
    assert png_size(fetch(client, url_result["data"][0]["url"])) == (1024, 1024)


@pytest.mark.parametrize(
    "size", ["2048x1152", "3840x2160", "2160x3840", "1024x1536", "1024x640", "2880x2880"]
)
def test_official_accepts_flexible_sizes(client: TestClient, size: str) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": "p", "size": size}, OFFICIAL)
    assert response.status_code == 200, response.text
    width, height = map(int, size.split("x"))
    assert png_size(base64.b64decode(response.json()["data"][0]["b64_json"])) == (width, height)


@pytest.mark.parametrize(
    "size",
    [
        "1000x1000",  # not multiples of 16
        "4096x1024",  # edge over 3840 and ratio 4:1
        "3840x1024",  # ratio over 3
        "512x512",  # under the pixel floor
        "3840x2176",  # over the pixel ceiling
        "2048*2048",
        "",
        "big",
    ],
)
def test_official_rejects_sizes(client: TestClient, size: str) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": "p", "size": size}, OFFICIAL)
    assert_error(response, 400, "size")


def test_official_rejects_null_and_unknown(client: TestClient) -> None:
    base = {"model": "gpt-image-2", "prompt": "p"}
    assert_error(post(client, IMAGES, base | {"quality": None}, OFFICIAL), 400, "quality")
    assert_error(
        post(client, IMAGES, base | {"input_fidelity": "high"}, OFFICIAL), 400, "input_fidelity"
    )


# --- GPT Image 2.5 and 2.6 ------------------------------------------------------------------


@pytest.mark.parametrize("token", [OFFICIAL, ENTERPRISE])
@pytest.mark.parametrize(
    "model",
    [
        "gpt-image-2.5-flare",
        "gpt-image-2.5-sunburst",
        "gpt-image-2.6-flare",
        "gpt-image-2.6-sunburst",
    ],
)
def test_new_official_models(client: TestClient, token: str, model: str) -> None:
    body = {"model": model, "prompt": "a wren", "size": "1536x1024", "quality": "medium"}
    if model.startswith("gpt-image-2.6"):
        body["complexity"] = "high"
    result = post(client, IMAGES, body, token).json()
    assert png_size(base64.b64decode(result["data"][0]["b64_json"], validate=True)) == (1536, 1024)
    assert result["usage"]["output_tokens"] > 0 and result["quality"] == "medium"


def test_2_6_spends_more_tokens_than_2_5_at_low_and_medium(client: TestClient) -> None:
    def output(model: str, quality: str) -> int:
        body = {"model": model, "prompt": "p", "quality": quality}
        tokens: int = post(client, IMAGES, body, OFFICIAL).json()["usage"]["output_tokens"]
        return tokens

    for quality in ("low", "medium"):
        ratio = output("gpt-image-2.6-sunburst", quality) / output(
            "gpt-image-2.5-sunburst", quality
        )
        assert 3 <= ratio <= 4


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("gpt-image-2.5-flare", {"n": 2}, "n"),
        ("gpt-image-2.5-flare", {"complexity": "low"}, "complexity"),
        ("gpt-image-2.5-flare", {"stream": True}, "stream"),
        ("gpt-image-2.5-flare", {"quality": "ultra"}, "quality"),
        ("gpt-image-2.5-sunburst", {"size": "4096x4096"}, "size"),
        ("gpt-image-2.6-flare", {"quality": "ultra"}, "quality"),
        ("gpt-image-2.6-flare", {"complexity": "max"}, "complexity"),
        ("gpt-image-2.6-sunburst", {"partial_images": 1}, "partial_images"),
        ("gpt-image-2.6-sunburst", {"n": 3}, "n"),
    ],
)
def test_new_official_models_reject(
    client: TestClient, model: str, extra: dict[str, Any], param: str
) -> None:
    response = post(client, IMAGES, {"model": model, "prompt": "a cat"} | extra, OFFICIAL)
    assert_error(response, 400, param)


def test_2_5_takes_xhigh_and_max(client: TestClient) -> None:
    for quality in ("xhigh", "max"):
        body = {"model": "gpt-image-2.5-flare", "prompt": "p", "quality": quality}
        assert post(client, IMAGES, body, OFFICIAL).json()["quality"] == quality


@pytest.mark.parametrize("model", ["gpt-image-2.5-flare-vip", "gpt-image-2.5-sunburst-vip"])
def test_2_5_vip_any_size_and_quality_per_call(client: TestClient, model: str) -> None:
    body = {"model": model, "prompt": "a kite", "size": "3840x2160", "quality": "max"}
    response = post(client, IMAGES, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert png_size(base64.b64decode(result["data"][0]["b64_json"], validate=True)) == (3840, 2160)
    assert "usage" not in result  # per call: no tokens


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"quality": "auto"}, "quality"),
        ({"n": 2}, "n"),
        ({"output_format": "png"}, "output_format"),
        ({"size": "1000x1000"}, "size"),
        ({"stream": True}, "stream"),
    ],
)
def test_2_5_vip_rejects(client: TestClient, extra: dict[str, Any], param: str) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2.5-flare-vip", "prompt": "p"} | extra)
    assert_error(response, 400, param)


def test_2_5_web_takes_only_the_prompt(client: TestClient) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2.5-web", "prompt": "a lamp"})
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"], validate=True)
    assert png_size(data) == (2048, 2048)  # "up to ~2K"
    for extra in ({"size": "1024x1024"}, {"quality": "high"}, {"n": 2}):
        body = {"model": "gpt-image-2.5-web", "prompt": "a lamp"} | extra
        assert_error(post(client, IMAGES, body), 400, next(iter(extra)))


# --- gpt-image-2 web (default group) -----------------------------------------------------


def test_web_returns_prefixed_unpadded_b64(client: TestClient) -> None:
    prompt = "a blue teapot"
    expected = make_png(1024, 1024, prompt, "gpt-image-2")
    assert len(expected) % 3, "pick a prompt whose PNG needs padding, or this proves nothing"
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": prompt})
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    value = item["b64_json"]
    assert value.startswith("data:image/png;base64,")
    assert not value.endswith("=")
    assert decode_b64(value) == expected
    assert png_size(decode_b64(value)) == (1024, 1024)
    assert item["revised_prompt"] == prompt
    assert "usage" not in response.json()


def test_web_url_form(client: TestClient) -> None:
    body = {"model": "gpt-image-2", "prompt": "a teapot", "response_format": "url", "user": "u"}
    url = post(client, IMAGES, body).json()["data"][0]["url"]
    assert png_size(fetch(client, url)) == (1024, 1024)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"size": "1024x1024"}, "size"),
        ({"size": None}, "size"),
        ({"size": "auto"}, "size"),
        ({"quality": "high"}, "quality"),
        ({"quality": None}, "quality"),
        ({"output_format": "png"}, "output_format"),
        ({"background": "auto"}, "background"),
        ({"n": 2}, "n"),
    ],
)
def test_web_rejects(client: TestClient, extra: dict[str, Any], param: str) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": "a cat"} | extra)
    message = assert_error(response, 400, param)
    if param in ("size", "quality"):
        assert "does not support" in message


# --- gpt-image-2-vip (default group) -----------------------------------------------------


def test_vip_defaults_and_strips_padding(client: TestClient) -> None:
    expected = make_png(2048, 2048, "a kite", "gpt-image-2-vip")
    assert len(expected) % 3, "pick a prompt whose PNG needs padding, or this proves nothing"
    response = post(client, IMAGES, {"model": "gpt-image-2-vip", "prompt": "a kite"})
    assert response.status_code == 200, response.text
    value = response.json()["data"][0]["b64_json"]
    assert not value.startswith("data:")
    assert not value.endswith("=")
    assert decode_b64(value) == expected
    assert png_size(expected) == (2048, 2048)


@pytest.mark.parametrize("size", ["3840x2160", "2336x3520", "1280x544"])
def test_vip_accepts_table_sizes(client: TestClient, size: str) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2-vip", "prompt": "p", "size": size})
    assert response.status_code == 200, response.text
    width, height = map(int, size.split("x"))
    assert png_size(decode_b64(response.json()["data"][0]["b64_json"])) == (width, height)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"quality": "high"}, "quality"),
        ({"quality": None}, "quality"),
        ({"size": "auto"}, "size"),
        ({"size": "1024x1024"}, "size"),
        ({"size": "2048x1152 "}, "size"),
        ({"size": None}, "size"),
        ({"n": 2}, "n"),
        ({"output_format": "png"}, "output_format"),
    ],
)
def test_vip_rejects(client: TestClient, extra: dict[str, Any], param: str) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2-vip", "prompt": "a cat"} | extra)
    message = assert_error(response, 400, param)
    if extra.get("size") == "auto":
        assert "explicit table size" in message
        assert "3840x2160" in message


# --- chat route (sora_image, gpt-4o-image) -----------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "size"),
    [
        ("a castle【2:3】", (1024, 1536)),
        ("a castle【3:2】", (1536, 1024)),
        ("a castle【1:1】", (1024, 1024)),
        ("a castle\n【3:2】 \n", (1536, 1024)),
        ("a castle", (1024, 1024)),
    ],
)
def test_chat_markers(
    client: TestClient, state: SimState, prompt: str, size: tuple[int, int]
) -> None:
    response = post(client, CHAT, chat_body(prompt))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["object"] == "chat.completion"
    assert re.fullmatch(r"chatcmpl-[0-9a-f]+", result["id"])
    assert result["model"] == "sora_image"
    choice = result["choices"][0]
    assert (choice["index"], choice["finish_reason"]) == (0, "stop")
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith("> ")
    match = LINK_RE.search(content)
    assert match is not None, content
    assert png_size(fetch(client, match.group(1))) == size
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_content_parts_and_gpt_4o_image(client: TestClient) -> None:
    content = [
        {"type": "image_url", "image_url": {"url": "https://example.invalid/ref.png"}},
        {"type": "text", "text": "make it blue【2:3】"},
    ]
    body = {
        "model": "gpt-4o-image",
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "an older request【1:1】"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": content},
        ],
        "stream": False,
        "temperature": 0.7,
        "user": "u1",
    }
    response = post(client, CHAT, body)
    assert response.status_code == 200, response.text
    match = LINK_RE.search(response.json()["choices"][0]["message"]["content"])
    assert match is not None
    assert png_size(fetch(client, match.group(1))) == (1024, 1536)


@pytest.mark.parametrize(
    "prompt",
    [
        "a castle【2:3】【2:3】",
        "a castle【2:3】 at night",
        "a castle【16:9】",
        "a castle【2\uff1a3】",  # full-width colon
        "a castle2:3】",  # the upstream doc's sample code drops the opening bracket
        "a 【castle】【1:1】",
    ],
)
def test_chat_rejects_bad_markers(client: TestClient, prompt: str) -> None:
    message = assert_error(post(client, CHAT, chat_body(prompt)), 400, "messages")
    assert "ratio marker must appear once at the end of the prompt" in message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat_body("a cat", size="1024x1024"), "size"),
        (chat_body("a cat", n=1), "n"),
        (chat_body("a cat", quality="high"), "quality"),
        (chat_body("a cat", prompt="a cat"), "prompt"),
        (chat_body("a cat", stream=True), "stream"),
        (chat_body("a cat", stream=None), "stream"),
        (chat_body("a cat", temperature=3), "temperature"),
        ({"model": "sora_image", "messages": []}, "messages"),
        ({"model": "sora_image"}, "messages"),
        ({"model": "sora_image", "messages": [{"role": "system", "content": "x"}]}, "messages"),
        (chat_body([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]), "messages"),
        (chat_body([{"type": "audio", "audio": "x"}]), "messages[0].content[0]"),
    ],
)
def test_chat_rejects(client: TestClient, body: dict[str, Any], param: str) -> None:
    message = assert_error(post(client, CHAT, body), 400, param)
    if param == "stream" and body["stream"] is True:
        assert message == "streaming not supported by simulator yet"


# --- fault directives ------------------------------------------------------------------


def test_refuse_on_images_route(client: TestClient, state: SimState) -> None:
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": "bad [sim:refuse]"})
    message = assert_error(response, 400, None, "moderation_blocked")
    assert message == "Your request was rejected by the safety system."
    assert not state.files


def test_refuse_on_chat_route(client: TestClient, state: SimState) -> None:
    response = post(client, CHAT, chat_body("bad [sim:refuse]【2:3】"))
    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    assert "content policy" in content
    assert "![" not in content
    assert not state.files


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 400])
def test_status_directive(client: TestClient, status: int) -> None:
    # Faults win over validation: the unknown field would otherwise be a 400.
    body = {"model": "gpt-image-2", "prompt": f"x [sim:status={status}]", "bogus": 1}
    response = post(client, IMAGES, body)
    message = assert_error(response, status, None)
    assert message == f"simulated upstream error {status}"
    assert response.json()["error"]["type"] == "upstream_error"
    assert (response.headers.get("retry-after") == "1") == (status == 429)


def test_status_directive_on_chat(client: TestClient) -> None:
    assert_error(post(client, CHAT, chat_body("x [sim:status=502]")), 502, None)


@pytest.mark.parametrize("path", [IMAGES, CHAT])
def test_garbage_directive(client: TestClient, path: str) -> None:
    prompt = "x [sim:garbage]"
    body = chat_body(prompt) if path == CHAT else {"model": "gpt-image-2", "prompt": prompt}
    response = post(client, path, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html>upstream exploded</html>"


def test_sleep_directive(client: TestClient) -> None:
    start = time.perf_counter()
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": "x [sim:sleep=0.2]"})
    assert response.status_code == 200
    assert time.perf_counter() - start >= 0.2


def test_latency_config(state: SimState) -> None:
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS), latency_s=0.2), state)
    client = TestClient(app, base_url=BASE)
    start = time.perf_counter()
    assert post(client, IMAGES, {"model": "gpt-image-2", "prompt": "x"}).status_code == 200
    assert time.perf_counter() - start >= 0.2


@pytest.mark.parametrize(
    ("token", "model"),
    [(DEFAULT, "gpt-image-2"), (DEFAULT, "gpt-image-2-vip"), (OFFICIAL, "gpt-image-2")],
)
def test_b64url_directive(client: TestClient, token: str, model: str) -> None:
    body = {"model": model, "prompt": "x [sim:b64url]", "response_format": "b64_json"}
    response = post(client, IMAGES, body, token)
    assert response.status_code == 200
    item = response.json()["data"][0]
    assert "b64_json" not in item
    png_size(fetch(client, item["url"]))


# --- files and recording -----------------------------------------------------------------


def test_forget_files_breaks_links(client: TestClient, state: SimState) -> None:
    body = {"model": "gpt-image-2", "prompt": "x", "response_format": "url"}
    url = post(client, IMAGES, body).json()["data"][0]["url"]
    fetch(client, url)
    state.forget_files()
    assert_error(client.get(url), 404, None)
    assert state.calls  # forgetting files keeps the call log
    state.reset()
    assert not state.calls
    assert not state.files
    assert_error(client.get(f"{BASE}/files/nope.png"), 404, None)


def test_calls_record_what_was_sent(client: TestClient, state: SimState) -> None:
    official = {"model": "gpt-image-2", "prompt": "a", "size": "2048x1152"}
    web = {"model": "gpt-image-2", "prompt": "b", "size": None}
    chat = chat_body("c【3:2】")
    assert post(client, IMAGES, official, OFFICIAL).status_code == 200
    assert post(client, IMAGES, web).status_code == 400
    assert post(client, CHAT, chat).status_code == 200
    recorded = [(c.method, c.path, c.group, c.model, c.body, c.status) for c in state.calls]
    assert recorded == [
        ("POST", IMAGES, "OpenAI Official", "gpt-image-2", official, 200),
        ("POST", IMAGES, "default", "gpt-image-2", web, 400),
        ("POST", CHAT, "default", "sora_image", chat, 200),
    ]
    assert "size" in state.calls[1].body  # the null was sent, and that is what failed


def test_app_exposes_state_and_request_id() -> None:
    app = create_simulator_app(SimConfig(keys={"k": "default"}))
    assert isinstance(app.state.sim, SimState)
    client = TestClient(app, base_url=BASE)
    response = post(client, IMAGES, {"model": "gpt-image-2", "prompt": "x"}, "k")
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    assert [c.status for c in app.state.sim.calls] == [200]


# --- reset waits for work still in flight --------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[str, SimState]]:
    """A real server: requests in flight while the test thread resets, as between gateway tests."""
    state = SimState()
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS)), state)
    with BackgroundServer(app) as running:
        yield running.url, state


def send_one(url: str, state: SimState, prompt: str, *, gives_up: bool) -> threading.Thread:
    """Sends a request from a thread of its own, and returns once the simulator has it. One
    that `gives_up` does so after 0.1 s (as a gateway that timed out does); the other waits
    for its answer."""

    def send() -> None:
        body = {"model": "gpt-image-2", "prompt": prompt}
        headers = {"Authorization": f"Bearer {DEFAULT}"}
        if not gives_up:
            response = httpx2.post(f"{url}{IMAGES}", json=body, headers=headers, timeout=10)
            assert response.status_code == 200
            return
        with pytest.raises(httpx2.ReadTimeout):
            httpx2.post(f"{url}{IMAGES}", json=body, headers=headers, timeout=0.1)

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 5
    while not state.headers:
        assert time.monotonic() < deadline, "the request never arrived"
        time.sleep(0.01)
    return thread


def leave_early(url: str, state: SimState, prompt: str) -> threading.Thread:
    """A request whose client gives up after 0.1 s, once the simulator has it."""
    return send_one(url, state, prompt, gives_up=True)


def test_reset_waits_for_a_request_in_flight_to_finish(served: tuple[str, SimState]) -> None:
    url, state = served
    # A slow start records its call only once the wait is over: after the reset, had the reset
    # not waited, so the next test would find a call it never made.
    thread = send_one(url, state, "[sim:slowstart=0.5] x", gives_up=False)
    started = time.monotonic()
    state.reset()
    assert time.monotonic() - started >= 0.3
    thread.join()
    assert state.calls == [] and state.faults.seen == [] and state.headers == []


@pytest.mark.parametrize("wait", ["slowstart", "sleep", "slowbody"])
def test_an_abandoned_wait_ends_when_its_client_hangs_up(
    served: tuple[str, SimState], wait: str
) -> None:
    url, state = served
    # A gateway that gave up on the upstream hangs up; the simulator stops waiting then, so
    # the reset before the next test does not wait out the rest of the five seconds.
    thread = leave_early(url, state, f"[sim:{wait}=5] x")
    thread.join()
    started = time.monotonic()
    state.reset(timeout_s=2)
    assert time.monotonic() - started < 1
    assert state.calls == [] and state.faults.seen == [] and state.headers == []


def test_an_abandoned_request_is_seen_dropped_and_never_answered(
    served: tuple[str, SimState],
) -> None:
    url, state = served
    leave_early(url, state, "[sim:sleep=5] x").join()
    calls, seen = list(state.calls), list(state.faults.seen)
    state.reset(timeout_s=2)  # returns once the request is no longer in flight
    assert [call.status for call in calls] == [0]  # "never answered"
    assert [(s.dropped, s.status) for s in seen] == [(True, 0)]


def test_a_reset_that_waits_too_long_says_what_is_in_flight(
    served: tuple[str, SimState],
) -> None:
    url, state = served
    thread = send_one(url, state, "[sim:sleep=0.5] x", gives_up=False)
    with pytest.raises(TimeoutError, match=f"POST {IMAGES}"):
        state.reset(timeout_s=0.05)
    thread.join()
    state.reset()
    assert state.calls == []


GIF = {"output_format": "gif"}


@pytest.mark.parametrize(
    ("token", "model", "extra", "param"),
    [
        # GPT Image 2.6's VIP routes: no xhigh or max, PNG only, no complexity.
        (DEFAULT, "gpt-image-2.6-flare-vip", {"quality": "xhigh"}, "quality"),
        (DEFAULT, "gpt-image-2.6-sunburst-vip", {"quality": "max"}, "quality"),
        (DEFAULT, "gpt-image-2.6-flare-vip", {"output_format": "png"}, "output_format"),
        (DEFAULT, "gpt-image-2.6-flare-vip", {"complexity": "low"}, "complexity"),
        (DEFAULT, "gpt-image-2.6-flare-vip", {"n": 2}, "n"),
        # Its web route: GIF but no SVG, no size, no quality, no frame_count.
        (DEFAULT, "gpt-image-2.6-web", {"output_format": "svg"}, "output_format"),
        (DEFAULT, "gpt-image-2.6-web", {"size": "1024x1024"}, "size"),
        (DEFAULT, "gpt-image-2.6-web", {"quality": "high"}, "quality"),
        (DEFAULT, "gpt-image-2.6-web", {"output_format": "gif", "frame_count": 3}, "frame_count"),
        # The official forward: frame_count 2-16 with gif only; svg one image, neither streams.
        (OFFICIAL, "gpt-image-2.6-flare", {"frame_count": 3}, "frame_count"),
        (
            OFFICIAL,
            "gpt-image-2.6-flare",
            {"output_format": "gif", "frame_count": 17},
            "frame_count",
        ),
        (
            OFFICIAL,
            "gpt-image-2.6-flare",
            {"output_format": "gif", "frame_count": 1},
            "frame_count",
        ),
        (OFFICIAL, "gpt-image-2.6-flare", {"output_format": "svg", "n": 2}, "n"),
        (OFFICIAL, "gpt-image-2.5-flare", {"output_format": "gif"}, "output_format"),
        (OFFICIAL, "gpt-image-2", {"output_format": "svg"}, "output_format"),
    ],
)
def test_gpt_image_2_6_routes_reject(
    client: TestClient, token: str, model: str, extra: dict[str, Any], param: str
) -> None:
    response = post(client, IMAGES, {"model": model, "prompt": "a cat"} | extra, token)
    assert_error(response, 400, param)


def test_gpt_image_2_6_makes_real_gifs_and_svgs(client: TestClient) -> None:
    body = {"model": "gpt-image-2.6-flare", "prompt": "p", "output_format": "gif"}
    answer = post(client, IMAGES, body | {"frame_count": 5, "size": "1536x1024"}, OFFICIAL).json()
    assert (answer["output_format"], answer["size"]) == ("gif", "1536x1024")
    gif = Image.open(io.BytesIO(base64.b64decode(answer["data"][0]["b64_json"])))
    assert (gif.format, gif.size, gif.n_frames) == ("GIF", (1536, 1024), 5)
    default = post(client, IMAGES, body, OFFICIAL).json()["data"][0]["b64_json"]
    assert Image.open(io.BytesIO(base64.b64decode(default))).n_frames == 9  # OpenAI's default
    svg = post(client, IMAGES, body | {"output_format": "svg"}, OFFICIAL).json()
    assert svg["output_format"] == "svg"
    assert base64.b64decode(svg["data"][0]["b64_json"]).startswith(b"<?xml")
    web = post(client, IMAGES, {"model": "gpt-image-2.6-web", "prompt": "p"}, DEFAULT).json()
    assert "usage" not in web and png_dimensions(base64.b64decode(web["data"][0]["b64_json"])) == (
        2048,
        2048,
    )

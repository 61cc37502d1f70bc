"""POST /v1/images/edits through the SDK's `images.edit`, on every route."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable
from typing import Any

import openai
import pytest
from PIL import Image

from mediagate.simulator import make_png

from .conftest import Gateway, Sim, decode_image, only_call

PNG_SMALL = make_png(64, 64, "input")
PNG_OTHER = make_png(96, 64, "second")


def encoded(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, format=kind)
    return buffer.getvalue()


JPEG, WEBP = encoded("JPEG"), encoded("WEBP")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_official_edit_forwards_the_exact_file(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.edit(
        model="gpt-image-2",
        image=("photo.png", PNG_SMALL, "image/png"),
        prompt="add a hat",
        size="1024x1536",
        quality="low",
        input_fidelity="high",
    )
    assert decode_image(result.data[0].b64_json).size == (1024, 1536)
    call = only_call(sim)
    assert call.path == "/v1/images/edits" and call.model == "gpt-image-2"
    assert [(f["field"], f["sha256"]) for f in call.body["files"]] == [("image", sha(PNG_SMALL))]
    assert call.body["size"] == "1024x1536" and call.body["input_fidelity"] == "high"
    assert call.body["response_format"] == "b64_json"


def test_several_images_go_upstream_as_image_array(client: openai.OpenAI, sim: Sim) -> None:
    images = [
        ("a.png", PNG_SMALL, "image/png"),
        ("b.jpg", JPEG, "image/jpeg"),
        ("c.webp", WEBP, "image/webp"),
    ]
    client.images.edit(model="gpt-image-2", image=images, prompt="combine")
    files = only_call(sim).body["files"]
    assert [f["field"] for f in files] == ["image[]"] * 3
    assert [f["sha256"] for f in files] == [sha(PNG_SMALL), sha(JPEG), sha(WEBP)]
    assert [f["content_type"] for f in files] == ["image/png", "image/jpeg", "image/webp"]


def test_repeated_image_parts_are_accepted(gateway: Gateway, sim: Sim) -> None:
    files = [
        ("image", ("a.png", PNG_SMALL, "image/png")),
        ("image", ("b.png", PNG_OTHER, "image/png")),
    ]
    with gateway.http() as http:
        response = http.post(
            "/v1/images/edits", data={"model": "gpt-image-2", "prompt": "two"}, files=files
        )
    assert response.status_code == 200, response.text
    assert [f["sha256"] for f in only_call(sim).body["files"]] == [sha(PNG_SMALL), sha(PNG_OTHER)]


def test_mask_is_forwarded_where_the_route_supports_it(client: openai.OpenAI, sim: Sim) -> None:
    mask = make_png(64, 64, "mask")
    client.images.edit(
        model="gpt-image-2",
        image=("a.png", PNG_SMALL, "image/png"),
        mask=("m.png", mask, "image/png"),
        prompt="fill",
    )
    files = only_call(sim).body["files"]
    assert [(f["field"], f["sha256"]) for f in files] == [
        ("image", sha(PNG_SMALL)),
        ("mask", sha(mask)),
    ]


@pytest.mark.parametrize("model", ["gpt-image-2-web", "gpt-image-2-vip", "sora_image"])
def test_mask_is_refused_where_the_route_has_none(
    client: openai.OpenAI, sim: Sim, model: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(
            model=model,
            image=("a.png", PNG_SMALL, "image/png"),
            mask=("m.png", PNG_SMALL, "image/png"),
            prompt="fill",
        )
    assert caught.value.body["param"] == "mask"  # type: ignore[index]
    assert sim.sent() == []


def test_web_edit_drops_size_and_quality(client: openai.OpenAI, sim: Sim) -> None:
    raw = client.images.with_raw_response.edit(
        model="gpt-image-2-web",
        image=("a.png", PNG_SMALL, "image/png"),
        prompt="w",
        size="1536x1024",
        quality="high",
    )
    assert raw.headers["x-mediagate-dropped"] == "quality,size"
    body = only_call(sim).body
    assert "size" not in body and "quality" not in body
    assert body["model"] == "gpt-image-2"


def test_vip_edit_maps_size(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.edit(
        model="gpt-image-2-vip",
        image=("a.png", PNG_SMALL, "image/png"),
        prompt="v",
        size="1920x1080",
        quality="high",
    )
    assert decode_image(result.data[0].b64_json).size == (2048, 1152)
    body = only_call(sim).body
    assert body["size"] == "2048x1152" and "quality" not in body


def test_chat_edit_sends_the_images_as_message_parts(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.edit(
        model="sora_image",
        image=[("a.png", PNG_SMALL, "image/png"), ("b.jpg", JPEG, "image/jpeg")],
        prompt="make it night",
        size="1024x1536",
    )
    assert decode_image(result.data[0].b64_json).size == (1024, 1536)
    call = only_call(sim)
    assert call.path == "/v1/chat/completions"
    (message,) = call.body["messages"]
    text, first, second = message["content"]
    assert text == {"type": "text", "text": "make it night【2:3】"}
    assert (
        first["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG_SMALL).decode()
    )
    assert second["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_n_edits_on_a_one_image_route_reuse_the_upload(client: openai.OpenAI, sim: Sim) -> None:
    # Three concurrent upstream requests read the same spooled upload, each in full.
    result = client.images.edit(
        model="gpt-image-2-web", image=("a.png", PNG_OTHER, "image/png"), prompt="n", n=3
    )
    assert len(result.data or []) == 3
    assert [c.body["files"][0]["sha256"] for c in sim.sent()] == [sha(PNG_OTHER)] * 3


def test_edit_url_is_hosted(client: openai.OpenAI, sim: Sim, gateway: Gateway) -> None:
    result = client.images.edit(
        model="gpt-image-2",
        image=("a.png", PNG_SMALL, "image/png"),
        prompt="u",
        response_format="url",
    )
    assert (result.data[0].url or "").startswith(f"{gateway.url}/v1/files/images/")


@pytest.mark.parametrize(
    ("files", "data", "param", "code"),
    [
        ([], {"prompt": "p"}, "image", "missing_required_parameter"),
        (
            [("image", ("fake.png", b"<html>not an image</html>", "image/png"))],
            {"prompt": "p"},
            "image",
            "invalid_image_format",
        ),
        (
            [("image", ("a.gif", b"GIF89a" + b"\0" * 20, "image/gif"))],
            {"prompt": "p"},
            "image",
            "invalid_image_format",
        ),
        (
            [("image[]", (f"{i}.png", PNG_SMALL, "image/png")) for i in range(17)],
            {"prompt": "p"},
            "image",
            None,
        ),
        (
            [("image", ("a.png", PNG_SMALL, "image/png"))],
            {},
            "prompt",
            "missing_required_parameter",
        ),
        ([("image", ("a.png", PNG_SMALL, "image/png"))], {"prompt": "p", "n": "two"}, "n", None),
        (
            [("image", ("a.png", PNG_SMALL, "image/png"))],
            {"prompt": "p", "colour": "red"},
            "colour",
            "unknown_parameter",
        ),
        (
            [("image", ("a.png", PNG_SMALL, "image/png"))],
            {"prompt": "p", "input_fidelity": "max"},
            "input_fidelity",
            None,
        ),
        (
            [
                ("image", ("a.png", PNG_SMALL, "image/png")),
                ("markup", ("m.png", PNG_SMALL, "image/png")),
            ],
            {"prompt": "p"},
            "markup",
            None,
        ),
    ],
)
def test_bad_edits_are_400s_and_nothing_goes_upstream(
    gateway: Gateway,
    sim: Sim,
    files: list[Any],
    data: dict[str, str],
    param: str,
    code: str | None,
) -> None:
    with gateway.http() as http:
        response = http.post(
            "/v1/images/edits",
            data={"model": "gpt-image-2", **data},
            files=files or None,
            headers={} if files else {"content-type": "multipart/form-data; boundary=x"},
            content=None if files else b"--x--\r\n",
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if code:
        assert error["code"] == code
    assert sim.sent() == []


def test_size_caps_are_configurable(make_gateway: Callable[..., Gateway], sim: Sim) -> None:
    client = make_gateway(
        edit_max_file_bytes=len(PNG_SMALL) + 10, edit_max_total_bytes=len(PNG_SMALL) + 20
    ).sdk()
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(
            model="gpt-image-2",
            image=("big.png", PNG_OTHER + b"\0" * 4000, "image/png"),
            prompt="p",
        )
    assert caught.value.code == "file_too_large"
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(
            model="gpt-image-2", image=[("a.png", PNG_SMALL, "image/png")] * 2, prompt="p"
        )
    assert caught.value.code == "file_too_large"
    assert sim.sent() == []

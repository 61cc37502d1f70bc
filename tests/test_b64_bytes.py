"""Base64 as bytes (issue 28): an image answer's base64 is lifted out of the upstream's bytes,
checked where it lies (the alphabet and padding by a strict SIMD decode, the head sniffed) and
spliced into the gateway's answer as is, never becoming a Python str. What is not lifted (bad
base64, not an image, a repairable form) is parsed as before and meets the same checks, so
what passes and what is refused does not change."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import orjson
import pytest
from PIL import Image

from mediagate import jsonio
from mediagate.imagedata import (
    InvalidImageData,
    LiftedB64,
    checked_b64,
    lift_b64,
    loads_lifting,
)

from .conftest import Gateway, Sim, decode_image


def _png(extra: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 8), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue() + b"\0" * extra


def _answer(*b64: str, prompt: str = "a fox", spaces: bool = True) -> bytes:
    """An ImagesResponse as an upstream writes it (json.dumps: with spaces, or compact)."""
    body = {
        "created": 1,
        "data": [{"b64_json": one, "revised_prompt": prompt} for one in b64],
        "size": "16x8",
        "usage": {"total_tokens": 10, "input_tokens": 4, "output_tokens": 6},
    }
    if spaces:
        return json.dumps(body).encode()
    return json.dumps(body, separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    """The payload with every LiftedB64 back as the str orjson would have given."""
    if isinstance(value, LiftedB64):
        return bytes(value.encoded()).decode("ascii")
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@pytest.mark.parametrize("spaces", [True, False])
def test_a_valid_answer_has_its_images_lifted_and_renders_to_the_same_bytes(spaces: bool) -> None:
    first, second = base64.b64encode(_png()).decode(), base64.b64encode(_png(5000)).decode()
    raw = _answer(first, second, spaces=spaces)
    payload = loads_lifting(raw)
    images = [item["b64_json"] for item in payload["data"]]
    assert all(isinstance(image, LiftedB64) for image in images)
    assert [image.kind for image in images] == ["image/png", "image/png"]
    assert images[1].head == _png(5000)[:768]
    assert images[1].decode() == _png(5000)
    assert _plain(payload) == orjson.loads(raw)  # everything else exactly as parsed
    # Spliced into the gateway's answer: the very bytes a str would have rendered to.
    assert jsonio.dumps(payload) == orjson.dumps(orjson.loads(raw))


@pytest.mark.parametrize(
    ("b64", "why"),
    [
        (base64.b64encode(_png(300)).decode()[:200] + "-" + "A" * 199, "alphabet"),  # URL-safe
        ("A" * 4000, "not an image"),  # base64 of zeros
        (base64.b64encode(_png(300)).decode()[:100] + "==" + "QUJD" * 40, "padding inside"),
        (base64.b64encode(_png(300)).decode().rstrip("="), "missing padding"),  # repairable
        ("data:image/png;base64," + base64.b64encode(_png(300)).decode(), "data URL"),
        (base64.b64encode(_png(300)).decode()[:200] + "\n" + "A" * 200, "a line break"),
    ],
)
def test_what_is_not_plain_valid_base64_of_an_image_is_parsed_as_before(b64: str, why: str) -> None:
    raw = _answer(b64)
    payload = loads_lifting(raw)
    assert payload == orjson.loads(raw), why  # a str, as before: the usual checks see it
    value = payload["data"][0]["b64_json"]
    if why in ("missing padding", "data URL"):
        assert checked_b64(value)[1] == "image/png"  # repaired downstream, as before
    else:
        with pytest.raises(InvalidImageData):
            checked_b64(value)


def test_padding_at_the_end_of_a_chunk_is_refused_when_more_follows() -> None:
    # 1 MiB of characters is checked at a time: padding that ends a chunk is inside the data.
    head = base64.b64encode(_png(3 * 262_144 - len(_png()) - 1)).decode()
    assert len(head) == 1 << 20 and head.endswith("=")
    assert lift_b64((head + "QUJD").encode()) is None
    assert lift_b64(head.encode()) is not None


def test_a_huge_answer_is_lifted_whole() -> None:
    image = _png(22_500_000)  # 30 MB of base64
    raw = _answer(base64.b64encode(image).decode(), prompt="é" * 10)
    payload = loads_lifting(raw)
    lifted = payload["data"][0]["b64_json"]
    assert isinstance(lifted, LiftedB64) and len(lifted) == len(base64.b64encode(image))
    assert payload["data"][0]["revised_prompt"] == "é" * 10
    assert lifted.decode() == image


def test_only_an_object_key_named_b64_json_is_lifted() -> None:
    good = base64.b64encode(_png()).decode()
    tricks = [
        # The key's text inside another string (escaped quotes): a prompt, not an image.
        {"data": [{"revised_prompt": f'say ","b64_json":"{good}"', "b64_json": good}]},
        # A key that ends in b64_json after an escaped quote.
        {"data": [{'x"b64_json': good, "b64_json": good}]},
        # A string that looks like a placeholder of another process (another nonce).
        {"data": [{"b64_json": good, "url": "mediagate-lifted-b64-0000-0"}]},
        # An array value, not a key.
        {"data": ["b64_json", good]},
    ]
    for body in tricks:
        raw = json.dumps(body).encode()
        payload = loads_lifting(raw)
        assert _plain(payload) == orjson.loads(raw), body
    lifted = loads_lifting(json.dumps(tricks[0]).encode())["data"][0]
    assert isinstance(lifted["b64_json"], LiftedB64)
    assert isinstance(lifted["revised_prompt"], str)


def test_what_is_not_json_is_still_refused() -> None:
    good = base64.b64encode(_png()).decode()
    for raw in (
        b'{"data": [{"b64_json": "' + good.encode() + b'"}',  # cut short
        b'{"data": [{"b64_json": "' + good.encode() + b'" "x"}]}',
        b'{"data": "x"' + good.encode() + b'"}',
    ):
        with pytest.raises(ValueError):
            orjson.loads(raw)
        with pytest.raises(ValueError):
            loads_lifting(raw)


# --- Through the real SDK against the simulator ------------------------------------------------


def test_a_plain_answer_relays_the_upstreams_base64_unchanged(gateway: Gateway) -> None:
    image = gateway.sdk().images.generate(model="gpt-image-2", prompt="a fox").data
    assert image is not None and image[0].b64_json
    decode_image(image[0].b64_json).verify()


def test_a_hosted_link_hosts_the_decoded_bytes(gateway: Gateway, sim: Sim) -> None:
    # The upstream answers base64 ([sim:b64only]); the gateway hosts the image it decodes.
    image = gateway.sdk().images.generate(
        model="gpt-image-2", prompt="a fox [sim:b64only]", response_format="url"
    )
    assert image.data and image.data[0].url
    with gateway.http() as http:
        hosted = http.get(image.data[0].url.removeprefix(gateway.url))
    assert hosted.status_code == 200
    assert hosted.headers["content-type"] == "image/png"
    Image.open(io.BytesIO(hosted.content)).verify()


def test_a_relayed_stream_carries_valid_images(gateway: Gateway) -> None:
    stream = gateway.sdk().images.generate(
        model="gpt-image-2", prompt="a fox", stream=True, partial_images=1
    )
    kinds = []
    for event in stream:
        kinds.append(event.type)
        decode_image(event.b64_json).verify()
    assert kinds[-1] == "image_generation.completed"
    assert "image_generation.partial_image" in kinds


def test_an_emulated_stream_splices_the_image_into_its_event(gateway: Gateway) -> None:
    # A route that does not stream: the gateway's own completed event, image spliced in.
    stream = gateway.sdk().images.generate(model="gpt-image-2-web", prompt="a fox", stream=True)
    events = [event for event in stream if event.type == "image_generation.completed"]
    assert len(events) == 1
    decode_image(events[0].b64_json).verify()
    assert events[0].output_format == "png"


def test_an_answer_orjson_refuses_still_renders_its_lifted_images() -> None:
    # Integers beyond 64 bits go the standard library's way (jsonio.dumps): the image too.
    good = base64.b64encode(_png()).decode()
    lifted = loads_lifting(_answer(good))["data"][0]["b64_json"]
    assert isinstance(lifted, LiftedB64)
    rendered = jsonio.dumps({"b64_json": lifted, "big": 2**70})
    assert json.loads(rendered) == {"b64_json": good, "big": 2**70}
    with pytest.raises(TypeError):
        jsonio.dumps({"other": object(), "big": 2**70})


def test_the_answer_goes_out_in_pieces_with_the_images_uncopied() -> None:
    first, second = base64.b64encode(_png()).decode(), base64.b64encode(_png(999)).decode()
    payload = loads_lifting(_answer(first, second))
    lifted = [item["b64_json"] for item in payload["data"]]
    pieces = jsonio.spliced(payload)
    assert b"".join(pieces) == jsonio.dumps(payload) == orjson.dumps(_plain(payload))
    # Views of the upstream answer's own bytes, not copies.
    assert [piece for piece in pieces if any(piece is one.json_piece for one in lifted)] == [
        one.json_piece for one in lifted
    ]
    response = jsonio.SplicedJSONResponse(payload, headers={"x-a": "b"})
    assert response.headers["content-length"] == str(len(jsonio.dumps(payload)))
    assert response.body == jsonio.dumps(payload)  # joined when asked (an Idempotency-Key)
    assert jsonio.spliced({"a": 1}) == [b'{"a":1}']


def test_an_answer_mostly_of_other_bytes_is_parsed_the_usual_way() -> None:
    """Lifting copies what is not an image (the placeholder copy) beside the answer: for an
    answer that is mostly padding that would double the bytes the room for upstream answers
    counted (bench-memory's attack c measured +229 MB against +169), so it is parsed as before."""
    good = base64.b64encode(_png()).decode()
    padded = _answer(good).replace(b'"created": 1', b'"created":' + b" " * 200_000 + b"1")
    payload = loads_lifting(padded)
    assert isinstance(payload["data"][0]["b64_json"], str)
    assert payload == orjson.loads(padded)
    assert isinstance(loads_lifting(_answer(good))["data"][0]["b64_json"], LiftedB64)

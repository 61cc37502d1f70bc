"""An upstream image's base64 is checked before it is relayed and billed: standard base64 (the
whole string's alphabet and padding, at C speed) of a known image format (its head decoded and
sniffed). `!!!notbase64` or megabytes of `AAAA` are a 502, maybe paid, billed nothing."""

from __future__ import annotations

import base64
import io
import time

import openai
import pytest
from PIL import Image

from mediagate.imagedata import (
    InvalidImageData,
    LiftedB64,
    checked_b64,
    image_head,
    image_size,
    loads_lifting,
)

from .conftest import Gateway, Sim


def usage_totals(gateway: Gateway) -> dict[str, float]:
    with gateway.http() as http:
        totals: dict[str, float] = http.get("/v1/usage").json()["totals"]
    return totals


@pytest.mark.parametrize("junk", ["junk", "zeros"])
@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_an_upstream_image_that_is_not_one_is_a_502_billed_nothing(
    gateway: Gateway, sim: Sim, junk: str, response_format: str
) -> None:
    # With `url`, the upstream still answers base64 ([sim:b64only]) and the gateway hosts it.
    response = gateway.generate(
        f"a fox [sim:badb64={junk}] [sim:b64only]",
        model="gpt-image-2",
        response_format=response_format,
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "bad_upstream_response"
    assert response.headers["x-should-retry"] == "false"  # the upstream may have charged
    assert len(sim.sent()) == 1  # neither retried nor handed to another route
    assert "AAAA" not in response.text and "!!!" not in response.text
    totals = usage_totals(gateway)
    assert totals["cost_usd"] == 0 and totals["images"] == 0


def test_a_relayed_stream_with_an_image_that_is_not_one(gateway: Gateway, sim: Sim) -> None:
    client = gateway.sdk()
    stream = client.images.generate(
        model="gpt-image-2", prompt="a fox [sim:badb64=zeros]", stream=True, partial_images=0
    )
    with pytest.raises(openai.APIError) as failed:
        for event in stream:
            assert event.type != "image_generation.completed"  # never relayed
    assert "not valid base64" in str(failed.value)
    assert usage_totals(gateway)["cost_usd"] == 0


def test_the_sdk_still_gets_a_valid_image(client: openai.OpenAI) -> None:
    image = client.images.generate(model="gpt-image-2", prompt="fox").data
    assert image and image[0].b64_json
    Image.open(io.BytesIO(base64.b64decode(image[0].b64_json, validate=True))).verify()


def _png_b64(size: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format="PNG")
    png = out.getvalue()
    return base64.b64encode(png + b"\0" * (size - len(png))).decode()


def test_the_check_is_cheap_and_strict() -> None:
    big = _png_b64(22_500_000)  # 30 MB of base64
    started = time.perf_counter()
    value, kind = checked_b64(big)
    spent = time.perf_counter() - started
    assert kind == "image/png" and value == big
    # A full strict decode takes about 90 ms here; the check reads the alphabet only.
    assert spent < 0.5, spent
    small = _png_b64(200)
    assert checked_b64(f"data:image/png;base64,{small.rstrip('=')}")[0] == small  # repaired
    for bad in (
        "!!!notbase64",
        "AAAA" * 1000,  # base64 of zeros: not an image
        small[:40] + "=" + small[41:],  # padding inside
        small[:40] + "é" + small[41:],
        small[:40] + "-_" + small[42:],  # the URL-safe alphabet
        "",
    ):
        with pytest.raises(InvalidImageData):
            checked_b64(bad)


# --- An image's size from its own bytes ----------------------------------------------------


def _encoded(fmt: str, size: tuple[int, int], mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red").save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("JPEG", "RGB", {}),  # baseline: SOF0
        ("JPEG", "RGB", {"progressive": True}),  # SOF2
        ("JPEG", "L", {"quality": 95}),
        ("JPEG", "RGB", {"exif": b"Exif\x00\x00" + b"\x00" * 200}),  # an APP1 before the frame
        ("WEBP", "RGB", {}),  # lossy: VP8
        ("WEBP", "RGB", {"lossless": True}),  # VP8L
        ("WEBP", "RGBA", {}),  # with alpha: VP8X
    ],
)
@pytest.mark.parametrize("size", [(1536, 1024), (1024, 1536), (3, 5)])
def test_a_jpeg_or_webps_size_is_read_from_its_head(
    fmt: str, mode: str, options: dict[str, object], size: tuple[int, int]
) -> None:
    data = _encoded(fmt, size, mode, **options)
    b64 = base64.b64encode(data)
    # The head each answer path reads: a plain `str` image's, and a lifted one's.
    answer = loads_lifting(b'{"data": [{"b64_json": "' + b64 + b'"}]}')
    lifted = answer["data"][0]["b64_json"]
    heads = [image_head(b64.decode())]
    if len(b64) >= 64:  # a smaller one is not lifted
        assert isinstance(lifted, LiftedB64)
        heads.append(lifted.head)
    assert {image_size(head) for head in heads} == {f"{size[0]}x{size[1]}"}


def test_a_size_not_in_the_head_is_none() -> None:
    # A JPEG whose frame header lies past the head (a large ICC profile first), or cut short.
    big_icc = _encoded("JPEG", (64, 48), icc_profile=b"\x00" * 4000)
    assert image_size(big_icc) == "64x48"
    assert image_size(big_icc[:768]) is None
    jpeg = _encoded("JPEG", (64, 48))
    cut = jpeg[: jpeg.index(b"\xff\xc0") + 6]
    assert image_size(cut) is None
    assert image_size(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 60) is None  # a scan, no frame
    assert image_size(b"\xff\xd8\xff\xe0\x00\x00" + b"\x00" * 60) is None  # a bad length
    webp = _encoded("WEBP", (64, 48))
    assert image_size(webp[:24]) is None

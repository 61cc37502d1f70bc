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

from mediagate.imagedata import InvalidImageData, checked_b64

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

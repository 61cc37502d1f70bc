"""input_reference: uploaded or linked, checked, and fitted to the video's exact pixel size
(the upstream refuses anything else) unless the request or the operator turns fitting off."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import openai
import pytest
from PIL import Image

from mediagate.simulator import make_png
from mediagate.videos import reference

from .conftest import Gateway, Sim

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def picture(width: int, height: int, kind: str = "PNG", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "orange").save(out, format=kind)
    return out.getvalue()


def sent_reference(sim: Sim) -> dict[str, Any]:
    [create] = [c for c in sim.sent("/v1/videos") if c.method == "POST"]
    described: dict[str, Any] = create.body["input_reference"]
    return described


@pytest.mark.parametrize(
    ("kind", "mode", "media"),
    [("PNG", "RGBA", "image/png"), ("JPEG", "RGB", "image/jpeg"), ("WEBP", "RGB", "image/webp")],
)
def test_a_reference_of_another_size_is_fitted_in_its_own_format(
    videos_gw: Gateway, sim: Sim, kind: str, mode: str, media: str
) -> None:
    sdk = videos_gw.sdk()
    raw = sdk.videos.with_raw_response.create(
        prompt="start here",
        size="1280x720",
        input_reference=(f"ref.{kind.lower()}", picture(1000, 1000, kind, mode), media),
    )
    assert raw.headers["x-mediagate-mapped"] == "input_reference=1000x1000>1280x720"
    sent = sent_reference(sim)
    assert (sent["format"], sent["width"], sent["height"]) == (kind, 1280, 720)
    assert sent["declared_type"] == media
    assert sdk.videos.poll(raw.parse().id).status == "completed"


def test_a_reference_of_the_right_size_is_sent_untouched(videos_gw: Gateway, sim: Sim) -> None:
    data = picture(1280, 720, "JPEG")  # muse-video's default size
    raw = videos_gw.sdk().videos.with_raw_response.create(
        prompt="exact", input_reference=("ref.jpg", data, "image/jpeg")
    )
    assert "x-mediagate-mapped" not in raw.headers
    assert sent_reference(sim)["sha256"] == hashlib.sha256(data).hexdigest()


def test_fitting_scales_to_cover_then_crops_the_centre() -> None:
    # 400x100: red sides, a green middle 100 px wide. Fitted to 100x100, only the middle stays.
    image = Image.new("RGB", (400, 100), "red")
    image.paste((0, 255, 0), (150, 0, 250, 100))
    out = io.BytesIO()
    image.save(out, format="PNG")
    fitted, note = reference.prepare(out.getvalue(), "100x100", fitting=True, max_pixels=10**7)
    assert note == "input_reference=400x100>100x100"
    result = Image.open(io.BytesIO(fitted.data))
    assert result.size == (100, 100) and result.format == "PNG"
    assert all(result.getpixel((x, 50))[:3] == (0, 255, 0) for x in (2, 50, 97))


def test_the_request_can_turn_fitting_off(videos_gw: Gateway, sim: Sim) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        videos_gw.sdk().videos.create(
            prompt="strict",
            size="1280x720",
            input_reference=("ref.png", picture(1000, 800), "image/png"),
            extra_headers={"x-mediagate-fit-reference": "false"},
        )
    assert "1000x800" in caught.value.message and "1280x720" in caught.value.message
    assert caught.value.param == "input_reference"
    assert sim.sent() == []


def test_the_operator_can_turn_fitting_off(make_gateway: Callable[..., Gateway], sim: Sim) -> None:
    gateway = make_gateway(video_fit_reference=False)
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.sdk().videos.create(
            prompt="strict",
            input_reference=(
                "ref.png",
                picture(720, 1280),
                "image/png",
            ),  # portrait, default landscape
            extra_headers={"x-mediagate-fit-reference": "true"},  # cannot override the operator
        )
    assert "1280x720" in caught.value.message and "720x1280" in caught.value.message
    assert sim.sent() == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (picture(64, 64, "GIF"), "invalid_image_format"),
        (b"%PDF-1.7 definitely not an image", "invalid_image_format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "invalid_image"),  # a PNG signature, no image
    ],
)
def test_what_is_not_a_usable_image_is_a_400(
    videos_gw: Gateway, sim: Sim, data: bytes, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        videos_gw.sdk().videos.create(prompt="x", input_reference=("ref.png", data, "image/png"))
    assert caught.value.code == code and caught.value.param == "input_reference"
    assert sim.sent() == []


def test_oversized_references_are_400s(make_gateway: Callable[..., Gateway], sim: Sim) -> None:
    small_files = make_gateway(video_reference_max_bytes=2048).sdk()
    with pytest.raises(openai.BadRequestError) as caught:
        small_files.videos.create(
            prompt="x", input_reference=("ref.bmp", b"\xff" * 100_000, "image/png")
        )
    assert caught.value.code == "file_too_large"
    few_pixels = make_gateway(video_reference_max_pixels=10_000).sdk()
    with pytest.raises(openai.BadRequestError) as caught:
        few_pixels.videos.create(
            prompt="x", input_reference=("ref.png", picture(720, 1280), "image/png")
        )
    assert caught.value.code == "image_too_large"
    assert sim.sent() == []


def test_an_image_url_reference_is_downloaded_and_fitted(videos_gw: Gateway, sim: Sim) -> None:
    sim.state.files["ref.png"] = (make_png(900, 900, "ref"), "image/png")
    response = videos_gw.video_from_link(f"{sim.url}/files/ref.png")
    assert response.status_code == 200, response.text
    assert response.headers["x-mediagate-mapped"] == "input_reference=900x900>720x1280"
    assert (sent_reference(sim)["width"], sent_reference(sim)["height"]) == (720, 1280)


def test_a_data_url_reference_and_the_node_sdks_multipart_spelling(
    videos_gw: Gateway, sim: Sim
) -> None:
    encoded = base64.b64encode(picture(720, 1280, "WEBP")).decode()
    with videos_gw.http() as http:
        response = http.post(
            "/v1/videos",
            files={
                "prompt": (None, "inline"),
                "input_reference[image_url]": (None, f"data:image/webp;base64,{encoded}"),
            },
        )
    assert response.status_code == 200, response.text
    assert sent_reference(sim)["format"] == "WEBP"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/ref.png",  # private
        "http://127.0.0.1:9/ref.png",  # loopback, not in MEDIAGATE_FETCH_ALLOW_HOSTS
        "file:///etc/passwd",
        "data:image/png;base64,@@@",
    ],
)
def test_image_urls_follow_the_same_rules_as_image_links(
    videos_gw: Gateway, sim: Sim, url: str
) -> None:
    with videos_gw.http() as http:
        response = http.post(
            "/v1/videos", json={"prompt": "x", "input_reference": {"image_url": url}}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "input_reference"
    assert sim.sent() == []


def bomb_png(width: int, height: int) -> bytes:
    """A PNG declaring width x height whose pixels are all zero: a few KB that decode to
    width * height * 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)  # filter byte, then RGB
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def test_a_reference_bomb_is_refused_before_it_is_decoded(videos_gw: Gateway, sim: Sim) -> None:
    # Issue 14, item 5: a 5 KB PNG declaring 6300x6300 (under the 40 MP cap) cost ~240 MB to
    # fit. What is decoded is capped by the route's largest size (sora-2: 1280x720, so 4.6 MP).
    bomb = bomb_png(6300, 6300)
    assert len(bomb) < 200_000
    with pytest.raises(openai.BadRequestError) as caught:
        videos_gw.sdk().videos.create(
            prompt="x", size="1280x720", input_reference=("ref.png", bomb, "image/png")
        )
    assert caught.value.code == "image_too_large"
    assert caught.value.param == "input_reference"
    assert sim.sent() == []
    # Within the route's cap, fitted as before.
    raw = videos_gw.sdk().videos.with_raw_response.create(
        prompt="x", size="1280x720", input_reference=("ref.png", bomb_png(2000, 2000), "image/png")
    )
    assert raw.headers["x-mediagate-mapped"] == "input_reference=2000x2000>1280x720"


def test_a_large_jpeg_reference_is_decoded_reduced() -> None:
    # A JPEG is decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft mode), the smallest that still
    # covers the target: 6400x4800 (30.7 MP, past a 4.6 MP decode cap) fits 1280x720.
    data = picture(6400, 4800, "JPEG")
    fitted, note = reference.prepare(
        data, "1280x720", fitting=True, max_pixels=40_000_000, cap=4_608_000
    )
    assert note == "input_reference=6400x4800>1280x720"
    assert (fitted.width, fitted.height) == (1280, 720)
    with Image.open(io.BytesIO(fitted.data)) as image:
        assert image.size == (1280, 720) and image.format == "JPEG"
    # A PNG of the same size cannot be decoded reduced: refused.
    with pytest.raises(Exception, match="more than the 4608000 pixels"):
        reference.prepare(
            bomb_png(6400, 4800), "1280x720", fitting=True, max_pixels=40_000_000, cap=4_608_000
        )

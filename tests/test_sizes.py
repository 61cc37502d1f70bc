"""`Size`, the WxH value images, videos and pricing share. Pure."""

from __future__ import annotations

import pytest

from mediagate.sizes import NotASize, Size, ratio_of


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1280x720", Size(1280, 720)),
        ("1280X720", Size(1280, 720)),
        ("1280*720", Size(1280, 720)),
        (" 1280 x 720 ", Size(1280, 720)),
        ("01280x0720", Size(1280, 720)),
        ("99999x1", Size(99999, 1)),
    ],
)
def test_parse_takes_the_notations_clients_use(text: str, size: Size) -> None:
    assert Size.parse(text) == size
    assert str(size) == f"{size.width}x{size.height}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "auto",
        "1280",
        "1280x",
        "x720",
        "1280x720x3",
        "-1280x720",
        "1280.5x720",
        "100000x720",
        "1280 720",
        "1280:720",
    ],
)
def test_parse_refuses_what_is_not_wxh(text: str) -> None:
    with pytest.raises(NotASize):
        Size.parse(text)


@pytest.mark.parametrize("text", ["0x720", "1280x0", "0x0"])
def test_a_side_of_zero_is_not_a_size_either(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        Size.parse(text)
    assert not isinstance(caught.value, NotASize)


def test_area_and_ratio() -> None:
    size = Size(1536, 1024)
    assert size.area == 1_572_864 and size.ratio == 1.5
    tall, wide = Size(1024, 1536), Size(1536, 1024)
    assert tall.ratio_distance(1.5) == pytest.approx(wide.ratio_distance(1 / 1.5))
    assert ratio_of("2:3") == pytest.approx(2 / 3)


def test_nearest_is_the_nearest_ratio_then_the_nearest_area() -> None:
    openai = [Size(720, 1280), Size(1280, 720), Size(1024, 1792), Size(1792, 1024)]
    # 1280x720 and 1792x1024 are the same ratio to within the tolerance: the area decides.
    assert Size(1920, 1080).nearest(openai) == Size(1792, 1024)
    assert Size(640, 360).nearest(openai) == Size(1280, 720)
    assert Size(1080, 1920).nearest(openai) == Size(1024, 1792)
    # A square is as far from portrait as from landscape: the earlier choice of the nearest area.
    assert Size(1000, 1000).nearest(openai) == Size(720, 1280)
    # The ratio comes first: a far area of the right shape beats a near area of the wrong one.
    assert Size(4000, 1000).nearest([Size(4000, 1100), Size(100, 25)]) == Size(100, 25)
    assert Size(184, 264).nearest([Size(848, 1280), Size(1360, 2048)]) == Size(848, 1280)
    with pytest.raises(ValueError):
        Size(1, 1).nearest([])


def test_nearest_ratio_compares_on_a_log_scale() -> None:
    markers = ["2:3", "3:2", "1:1"]
    assert Size(1024, 1536).nearest_ratio(markers) == "2:3"
    assert Size(1792, 1024).nearest_ratio(markers) == "3:2"
    assert Size(1100, 1000).nearest_ratio(markers) == "1:1"
    # 2:1 and 1:2 are equally far from 1:1: the first of the nearest.
    assert Size(2, 1).nearest_ratio(["1:1", "4:1"]) == "1:1"

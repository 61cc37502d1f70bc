"""The pure translation pieces, without a network."""

from __future__ import annotations

import base64

import pytest

from mediagate.accounting.pricing import sum_usage
from mediagate.catalog import load_catalog
from mediagate.errors import InvalidRequest, UpstreamError
from mediagate.imagedata import repair_b64, sniff_image_type
from mediagate.images.plan import map_to_table, plan_images, split_n
from mediagate.images.spec import parse_generation
from mediagate.upstream.dialects import get_dialect
from mediagate.upstream.dialects.chat import extract_links, with_marker

CATALOG = load_catalog()
VIP = CATALOG.routes["gpt-image-2.vip"]


def test_every_table_size_passes_unchanged() -> None:
    assert VIP.size is not None
    sizes = [s for tier in VIP.size.table.values() for s in tier]
    assert len(sizes) == 30
    assert all(map_to_table(s, VIP.size) == s for s in sizes)


def test_mapped_sizes_are_always_table_sizes() -> None:
    assert VIP.size is not None
    table = {s for tier in VIP.size.table.values() for s in tier}
    for width in range(256, 4097, 160):
        for height in range(256, 4097, 224):
            assert map_to_table(f"{width}x{height}", VIP.size) in table


@pytest.mark.parametrize(
    ("prompt", "ratio", "expected"),
    [
        ("cat", "2:3", "cat【2:3】"),
        ("cat  \n", "3:2", "cat【3:2】"),
        ("cat", None, "cat"),
    ],
)
def test_marker(prompt: str, ratio: str | None, expected: str) -> None:
    assert with_marker(prompt, ratio) == expected


def test_links_are_extracted_from_markdown() -> None:
    content = (
        "> progress 50%\n\n![image](https://cdn.example/a.png)\n"
        "[download](https://cdn.example/b.png) ![x]( <https://cdn.example/c.webp> )"
        " ![bad](javascript:alert(1))"
    )
    assert extract_links(content) == ["https://cdn.example/a.png", "https://cdn.example/c.webp"]


def test_chat_answer_without_links_is_an_error() -> None:
    payload = {"choices": [{"message": {"content": "Sorry,   I can't."}}]}
    with pytest.raises(UpstreamError, match=r"Sorry, I can.t\."):
        get_dialect("chat").parse(payload)


@pytest.mark.parametrize("payload", [{}, {"data": []}, {"data": [{}]}, [1], "x"])
def test_images_answer_without_images_is_an_error(payload: object) -> None:
    with pytest.raises(UpstreamError):
        get_dialect("images").parse(payload)


def test_b64_repair() -> None:
    raw = base64.b64encode(b"\x89PNG\r\n\x1a\n12345").decode()
    assert repair_b64(raw) == raw
    assert repair_b64("data:image/png;base64," + raw.rstrip("=")) == raw
    assert repair_b64(raw.rstrip("=")) == raw
    assert repair_b64(raw[:8] + "\n" + raw[8:]) == raw
    assert sniff_image_type(base64.b64decode(repair_b64(raw))) == "image/png"


def test_split_n() -> None:
    assert split_n(1, 1) == [1]
    assert split_n(10, 1) == [1] * 10
    assert split_n(7, 3) == [3, 3, 1]
    assert split_n(4, 10) == [4]


def test_usage_of_several_calls_adds_up() -> None:
    one = {"input_tokens": 3, "output_tokens": 10, "input_tokens_details": {"text_tokens": 3}}
    assert sum_usage([one, one]) == {
        "input_tokens": 6,
        "output_tokens": 20,
        "input_tokens_details": {"text_tokens": 6},
    }
    assert sum_usage([]) is None


def test_plan_reports_drops_and_maps() -> None:
    request = parse_generation(
        {"prompt": "p", "size": "1024x1536", "quality": "high", "style": "vivid", "n": 2}
    )
    plan = plan_images(request, VIP)
    assert plan.spec.params == {"size": "848x1280"}
    assert plan.calls == [1, 1]
    assert plan.route.id == "gpt-image-2.vip"
    assert sorted(plan.dropped) == ["quality", "style"]
    assert plan.mapped == ["size=1024x1536>848x1280"]


def test_plans_for_the_gpt_image_2_5_and_2_6_routes() -> None:
    sunburst = CATALOG.routes["gpt-image-2.6-sunburst.official"]
    request = parse_generation(
        {"prompt": "p", "n": 3, "complexity": "low", "quality": "high", "size": "1536x864"}
    )
    plan = plan_images(request, sunburst)
    assert plan.calls == [1, 1, 1]  # one image a request
    assert plan.spec.params == {"complexity": "low", "quality": "high", "size": "1536x864"}
    # 2.5 has no complexity: refused (catalog `refuses`), not dropped; both take xhigh, 2.6's
    # VIP route does not.
    flare = CATALOG.routes["gpt-image-2.5-flare.official"]
    with pytest.raises(InvalidRequest, match="'complexity' is not supported by route"):
        plan_images(request, flare)
    xhigh = parse_generation({"prompt": "p", "quality": "xhigh"})
    assert plan_images(xhigh, flare).spec.params == {"quality": "xhigh"}
    assert plan_images(xhigh, sunburst).spec.params == {"quality": "xhigh"}
    with pytest.raises(InvalidRequest, match=r"use one of low, medium, high[.]$"):
        plan_images(xhigh, CATALOG.routes["gpt-image-2.6-sunburst.vip"])
    # The per-call VIP route: no `auto` quality, no mask.
    vip = CATALOG.routes["gpt-image-2.5-flare.vip"]
    with pytest.raises(InvalidRequest, match="quality"):
        plan_images(parse_generation({"prompt": "p", "quality": "auto"}), vip)
    with pytest.raises(InvalidRequest, match="mask"):
        plan_images(parse_generation({"prompt": "p"}), vip, mask=True)

"""What every route costs, to the millionth of a dollar, from a known upstream `usage`; and that a
budget's reservation is never below it. Pure: the catalog's prices and the pricing functions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mediagate.accounting.pricing import (
    MAX_TOKENS,
    UnusableUsage,
    actual_images,
    estimate_images,
    sum_usage,
    token_classes,
    token_cost,
)
from mediagate.catalog import CatalogError, load_catalog
from mediagate.simulator.rules import ImageJob, image_usage, resolve_route
from mediagate.sizes import Size

CATALOG = load_catalog()

# One usage with every token class the OpenAI image usage reports: 500 text tokens (100 of them
# cached), 1000 image tokens (200 cached), 4000 image and 160 text tokens out.
USAGE: dict[str, Any] = {
    "input_tokens": 1500,
    "input_tokens_details": {
        "text_tokens": 500,
        "image_tokens": 1000,
        "cached_tokens": 300,
        "cached_tokens_details": {"text_tokens": 100, "image_tokens": 200},
    },
    "output_tokens": 4160,
    "output_tokens_details": {"image_tokens": 4000, "text_tokens": 160},
    "total_tokens": 5660,
}
# At the official rates ($ per million: text 5, cached text 1.25, image 8, cached image 2,
# image out 30; text out has no price of its own, so it bills as image out):
#   400 x 5 + 100 x 1.25 + 800 x 8 + 200 x 2 + 4000 x 30 + 160 x 30
#   = 2000 + 125 + 6400 + 400 + 120000 + 4800 = 133,725 per million = $0.133725
OFFICIAL_COST = 0.133725
ENTERPRISE_COST = 0.160470  # x 1.2

# Every image route of the bundled catalog, and what USAGE (or, per call and per image, three
# images) costs on it.
EXPECTED = {
    "gpt-image-2.official": OFFICIAL_COST,
    "gpt-image-2.enterprise": ENTERPRISE_COST,
    "gpt-image-2.5-flare.official": OFFICIAL_COST,
    "gpt-image-2.5-flare.enterprise": ENTERPRISE_COST,
    "gpt-image-2.5-sunburst.official": OFFICIAL_COST,
    "gpt-image-2.5-sunburst.enterprise": ENTERPRISE_COST,
    "gpt-image-2.6-flare.official": OFFICIAL_COST,
    "gpt-image-2.6-flare.enterprise": ENTERPRISE_COST,
    "gpt-image-2.6-sunburst.official": OFFICIAL_COST,
    "gpt-image-2.6-sunburst.enterprise": ENTERPRISE_COST,
    "gpt-image-2.web": 0.09,  # $0.03 a call, one image a call
    "gpt-image-2.vip": 0.09,
    "gpt-image-2.5-flare.vip": 0.09,
    "gpt-image-2.5-sunburst.vip": 0.09,
    "gpt-image-2.5.web": 0.09,
    "gpt-image-2.6-flare.vip": 0.09,  # $0.03 an image
    "gpt-image-2.6-sunburst.vip": 0.09,
    "gpt-image-2.6.web": 0.09,  # $0.03 a call, one image a call
    "sora_image": 0.03,  # $0.01 an image
    "gpt-4o-image": 0.03,
}


def test_every_image_route_has_an_expected_cost() -> None:
    assert set(EXPECTED) == {r.id for r in CATALOG.routes.values() if r.kind == "image"}


@pytest.mark.parametrize(("route_id", "cost"), EXPECTED.items())
def test_the_exact_cost_of_every_route(route_id: str, cost: float) -> None:
    route = CATALOG.routes[route_id]
    multiplier = CATALOG.multiplier(route)
    if route.price is not None and route.price.tokens is not None:
        assert actual_images(route.price, route.max_n, 1, USAGE, 99.0, multiplier) == cost
    else:
        assert actual_images(route.price, route.max_n, 3, None, 99.0, multiplier) == cost


def test_usage_is_read_by_token_class() -> None:
    assert token_classes(USAGE) == {
        "text_input": 400,
        "cached_text_input": 100,
        "image_input": 800,
        "cached_image_input": 200,
        "image_output": 4000,
        "text_output": 160,
    }


def test_fan_out_usage_adds_up_and_so_does_its_cost() -> None:
    """n=3 on a one-image route is three calls: their usage is summed, details included, and
    the bill is the sum of the three calls' bills."""
    route = CATALOG.routes["gpt-image-2.5-sunburst.enterprise"]
    assert route.price is not None and route.price.tokens is not None
    total = sum_usage([USAGE, USAGE, USAGE])
    assert total is not None
    assert total["input_tokens_details"] == {
        "text_tokens": 1500,
        "image_tokens": 3000,
        "cached_tokens": 900,
        "cached_tokens_details": {"text_tokens": 300, "image_tokens": 600},
    }
    assert total["output_tokens_details"] == {"image_tokens": 12000, "text_tokens": 480}
    cost = actual_images(route.price, route.max_n, 3, total, 99.0, 1.2)
    assert cost == 0.48141 == round(3 * ENTERPRISE_COST, 6)


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        # No details at all: every input token bills as image input, the dearer class.
        ({"input_tokens": 100, "output_tokens": 1000}, (100 * 8 + 1000 * 30) / 1e6),
        # Cached tokens without their split: text first (its cache saves least), then image.
        (
            {
                "input_tokens": 300,
                "input_tokens_details": {
                    "text_tokens": 100,
                    "image_tokens": 200,
                    "cached_tokens": 150,
                },
                "output_tokens": 0,
            },
            (100 * 1.25 + 50 * 2 + 150 * 8) / 1e6,
        ),
        # Input tokens the details do not account for: image input.
        (
            {
                "input_tokens": 50,
                "input_tokens_details": {"text_tokens": 20, "image_tokens": 0},
                "output_tokens": 10,
            },
            (20 * 5 + 30 * 8 + 10 * 30) / 1e6,
        ),
        # A cached count larger than its class is capped at the class.
        (
            {
                "input_tokens": 10,
                "input_tokens_details": {
                    "text_tokens": 10,
                    "image_tokens": 0,
                    "cached_tokens": 99,
                    "cached_tokens_details": {"text_tokens": 99, "image_tokens": 0},
                },
                "output_tokens": 0,
            },
            10 * 1.25 / 1e6,
        ),
    ],
)
def test_what_the_usage_leaves_open_never_bills_less(usage: dict[str, Any], cost: float) -> None:
    tokens = CATALOG.routes["gpt-image-2.official"].price.tokens  # type: ignore[union-attr]
    assert tokens is not None
    assert token_cost(tokens, usage) == round(cost, 6)


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": "12", "output_tokens": 4},
        {"input_tokens": 12, "output_tokens": -4},
        {"input_tokens": 12, "input_tokens_details": {"text_tokens": 2.5}},
        {"input_tokens": True},
        {"output_tokens": MAX_TOKENS + 1},
    ],
)
def test_nonsense_counts_cannot_be_billed(usage: dict[str, Any]) -> None:
    # The image service books the route's estimate instead (tests/test_accounting.py).
    tokens = CATALOG.routes["gpt-image-2.official"].price.tokens  # type: ignore[union-attr]
    assert tokens is not None
    with pytest.raises(UnusableUsage):
        token_cost(tokens, usage)


def test_costs_round_half_up_to_the_millionth_of_a_dollar() -> None:
    tokens = CATALOG.routes["gpt-image-2.official"].price.tokens  # type: ignore[union-attr]
    assert tokens is not None
    one_cached = {
        "input_tokens": 1,
        "input_tokens_details": {"text_tokens": 1, "image_tokens": 0, "cached_tokens": 1},
        "output_tokens": 0,
    }
    assert token_cost(tokens, one_cached) == 0.000001  # $0.00000125
    two = {"input_tokens": 2, "input_tokens_details": {"text_tokens": 2, "image_tokens": 0}}
    assert token_cost(tokens, two, multiplier=1.2) == 0.000012


def test_a_route_without_usage_is_billed_its_estimate() -> None:
    route = CATALOG.routes["gpt-image-2.official"]
    assert actual_images(route.price, route.max_n, 1, None, 0.25) == 0.25
    assert actual_images(route.price, route.max_n, 0, USAGE, 0.25) == 0.0  # nothing delivered


def test_a_text_output_price_applies_where_a_route_has_one(tmp_path: Path) -> None:
    override = tmp_path / "catalog.yaml"
    override.write_text(
        "routes:\n  gpt-image-2.official:\n    price: {tokens: {text_output: 10}}\n"
    )
    route = load_catalog(override).routes["gpt-image-2.official"]
    assert route.price is not None and route.price.tokens is not None
    assert token_cost(route.price.tokens, USAGE) == OFFICIAL_COST - 160 * 20 / 1e6


def test_the_older_one_rate_per_direction_form_is_still_read(tmp_path: Path) -> None:
    override = tmp_path / "catalog.yaml"
    override.write_text(
        "routes:\n  gpt-image-2.official:\n"
        "    price: {per_million_input_tokens: 10, per_million_output_tokens: 40}\n"
    )
    route = load_catalog(override).routes["gpt-image-2.official"]
    assert route.price is not None and route.price.tokens is not None
    assert token_cost(route.price.tokens, USAGE) == (1500 * 10 + 4160 * 40) / 1e6


def test_a_token_price_needs_an_estimate(tmp_path: Path) -> None:
    override = tmp_path / "catalog.yaml"
    override.write_text(
        "routes:\n  house:\n    upstream_model: gpt-image-2\n    group: default\n"
        "    dialect: images\n    price: {tokens: {text_input: 1, cached_text_input: 1,"
        " image_input: 1, cached_image_input: 1, image_output: 1}}\n"
    )
    with pytest.raises(CatalogError, match="estimate"):
        load_catalog(override)


# The estimate is a budget's reservation: for whatever the route can be asked, never below what
# the upstream then bills. The simulator's usage stands in for the upstream's.

TOKEN_ROUTES = [
    r for r in CATALOG.routes.values() if r.price is not None and r.price.tokens is not None
]


@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=lambda r: r.id)
@pytest.mark.parametrize("size", [None, "auto", "1024x1024", "3840x2160", "1024x640"])
@pytest.mark.parametrize("edit_images", [0, 3])
def test_the_estimate_is_an_upper_bound(route: Any, size: str | None, edit_images: int) -> None:
    sim_route = resolve_route(route.group, route.upstream_model, "images")
    prompt = "a lighthouse at dusk, in the style of an old postcard"
    multiplier = CATALOG.multiplier(route)
    for quality in [None, *route.values["quality"]]:
        planned = None if size in (None, "auto") else Size.parse(size)
        calls = [1] * 3 if route.max_n == 1 else [3]
        estimate = estimate_images(
            route.price,
            calls,
            prompt,
            size=planned,
            quality=quality,
            input_images=edit_images,
            multiplier=multiplier,
        )
        width, height = (1024, 1024) if size in (None, "auto") else map(int, size.split("x"))
        resolved = "medium" if quality in (None, "auto") else quality
        job = ImageJob(sim_route, prompt, 1, width, height, "b64_json", resolved, "png", "opaque")
        job = replace(job, input_images=edit_images)
        usage = sum_usage([image_usage(job) for _ in range(3)])
        actual = actual_images(route.price, route.max_n, 3, usage, estimate, multiplier)
        assert 0 < actual <= estimate, (route.id, size, quality)


def test_per_call_estimates_are_exact() -> None:
    route = CATALOG.routes["gpt-image-2.5-flare.vip"]
    assert estimate_images(route.price, [1, 1, 1], "p", quality="max") == 0.09
    assert estimate_images(None, [1], "p") == 0.0

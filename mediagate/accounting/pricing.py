"""What a request costs, in USD: estimated before it goes upstream, actual once it is done.

Prices are catalog data per route (`price:` in catalog.yaml; video routes keep theirs per second
by size). The estimate is deliberately an upper bound, because it is what a budget reserves:
concurrent requests must not be able to overspend together. A route without a price costs 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mediagate.catalog import Price

# Output tokens of one 1024x1024 image by quality, as the official GPT image models bill them;
# other sizes scale with their pixel count. Unknown or "auto" quality is priced as "high".
_OUTPUT_TOKENS_1MP = {"low": 272, "medium": 1056, "high": 4160}
_DEFAULT_AREA = 1024 * 1536  # the largest standard size, for an absent or "auto" size
_INPUT_TOKENS_PER_IMAGE = 6000  # an edit's input image, generously (high input fidelity)


def _round(usd: float) -> float:
    return round(usd, 6)


def _token_cost(price: Price, input_tokens: float, output_tokens: float) -> float:
    return (
        input_tokens * (price.per_million_input_tokens or 0)
        + output_tokens * (price.per_million_output_tokens or 0)
    ) / 1_000_000


def _area(size: Any) -> int:
    if isinstance(size, str) and size != "auto":
        width, _, height = size.partition("x")
        if width.isdigit() and height.isdigit():
            return int(width) * int(height)
    return _DEFAULT_AREA


def estimate_images(
    price: Price | None,
    calls: list[int],
    params: dict[str, Any],
    prompt: str,
    input_images: int = 0,
) -> float:
    """The most a request can cost: `calls` images per upstream call, the upstream fields
    `params` (size, quality), the prompt, and an edit's input images."""
    if price is None:
        return 0.0
    n = sum(calls)
    cost = (price.per_image or 0) * n + (price.per_call or 0) * len(calls)
    per_image = _OUTPUT_TOKENS_1MP.get(str(params.get("quality")), 4160)
    output_tokens = per_image * _area(params.get("size")) / (1024 * 1024) * n
    # A token is at least one character of prompt, so the prompt's length bounds its tokens.
    input_tokens = len(prompt) + _INPUT_TOKENS_PER_IMAGE * input_images
    return _round(cost + _token_cost(price, input_tokens * len(calls), output_tokens))


def actual_images(
    price: Price | None, max_n: int, images: int, usage: dict[str, Any] | None, estimate: float
) -> float:
    """What the images delivered cost. Token-priced routes bill `usage`; without it, the
    estimate stands (the upstream charged something, and it is not less than that). Usage
    that is not non-negative integers within MAX_TOKENS raises UnusableUsage."""
    if price is None or images == 0:
        return 0.0
    calls = math.ceil(images / max_n)
    cost = (price.per_image or 0) * images + (price.per_call or 0) * calls
    if price.per_million_input_tokens or price.per_million_output_tokens:
        if not usage:
            return estimate
        tokens_in = _tokens(usage, "input_tokens")
        tokens_out = _tokens(usage, "output_tokens")
        cost += _token_cost(price, tokens_in, tokens_out)
    return _round(cost)


class UnusableUsage(ValueError):
    """The upstream's usage cannot be billed: the caller books the estimate instead."""


# More tokens than any image request can use (an 8 MP image at high quality is ~33k output
# tokens; a prompt is at most 32k characters): a count above this is an upstream fault.
MAX_TOKENS = 10_000_000


def _tokens(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    if value is None:
        return 0
    # bool is an int in Python, and "12" or 12.0 are not what the schema says: refused.
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise UnusableUsage(f"usage.{name} is {str(value)[:40]!r}")
    return value


def video_cost(price_per_second: Mapping[str, float], size: str, seconds: str) -> float | None:
    """USD for a video of `size` lasting `seconds`, from a route's price per second by size; None
    when the route has no price for that size. A create reserves it; a completed job books it."""
    price = price_per_second.get(size)
    if price is None or not seconds.isdigit():
        return None
    return _round(price * int(seconds))

"""What a request costs, in USD: estimated before it goes upstream, actual once it is done.

Prices are catalog data per route (`price:` in catalog.yaml; video routes keep theirs in
`video.price`: per video, per second or per million output tokens, by resolution tier),
multiplied by the route's token group's `multiplier`. A route without a price costs 0.

Token-priced routes bill the upstream's `usage` by token class, as the OpenAI image usage
reports it (`ImagesUsage`, with the cached-token details the other OpenAI usages use):

    input_tokens                  text and image tokens of the prompt and input images
      input_tokens_details        text_tokens, image_tokens (each including its cached part),
                                  cached_tokens, cached_tokens_details {text_tokens, image_tokens}
    output_tokens                 image (and text) tokens made
      output_tokens_details       image_tokens, text_tokens

Whatever the usage leaves open is read so as never to bill less than was used: input tokens
without a class are image input, cached tokens without a class are text first (the class whose
cache saves least), output tokens without a class are image output, and text output without a
price of its own bills as image output.

The estimate is deliberately an upper bound, because it is what a budget reserves: concurrent
requests must not be able to overspend together. How many tokens an image makes is catalog data
too (`price.estimate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from mediagate.catalog import Price, TokenEstimate, TokenPrices, VideoPrice
from mediagate.sizes import Size

_AUTO_AREA = Size(1024, 1536).area  # the largest standard size, for an absent or "auto" size
_MEGAPIXEL = 1024 * 1024
_MICRODOLLAR = Decimal("0.000001")


def _usd(amount: Decimal) -> float:
    """USD to the millionth of a dollar, rounded half up (what the ledger and headers keep)."""
    return float(amount.quantize(_MICRODOLLAR, rounding=ROUND_HALF_UP))


def _round(usd: float) -> float:
    return round(usd, 6)


def _dec(value: float | None) -> Decimal:
    return Decimal(str(value or 0))


class UnusableUsage(ValueError):
    """The upstream's usage cannot be billed: the caller books the estimate instead."""


# Usage is the upstream's claim, bounded by the request: it may bill at most this many times
# the request's own estimate (itself an upper bound: docs/accounting.md, "Usage is a claim").
# Past it, or below the floor (a delivered image made no output tokens, a finished video no
# seconds), the estimate is booked instead.
USAGE_BOUND = 2


# More tokens than any image request can use (an 8 MP image at high quality is ~33k output
# tokens; a prompt is at most 32k characters): a count above this is an upstream fault.
MAX_TOKENS = 10_000_000


def _count(value: Any) -> int:
    """A token count from the usage: absent is 0; anything but an integer from 0 to MAX_TOKENS
    (a negative, a string, a float, a bool, an absurd count) is an upstream fault that cannot
    be billed (UnusableUsage)."""
    if value is None:
        return 0
    # bool is an int in Python, and "12" or 12.0 are not what the schema says: refused.
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise UnusableUsage(f"a token count is {str(value)[:40]!r}")
    return value


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else {}


def token_classes(usage: Mapping[str, Any]) -> dict[str, int]:
    """The upstream's usage as tokens per price class (see the module's docstring)."""
    inputs = _details(usage, "input_tokens_details")
    text, image = _count(inputs.get("text_tokens")), _count(inputs.get("image_tokens"))
    # Input tokens no detail accounts for are billed as image input, the dearer class.
    image += max(0, _count(usage.get("input_tokens")) - text - image)

    cached = _details(inputs, "cached_tokens_details")
    cached_text = min(text, _count(cached.get("text_tokens")))
    cached_image = min(image, _count(cached.get("image_tokens")))
    # Cached tokens no detail accounts for: text first, whose cache saves the least.
    unassigned = max(0, _count(inputs.get("cached_tokens")) - cached_text - cached_image)
    more_text = min(unassigned, text - cached_text)
    cached_text += more_text
    cached_image += min(unassigned - more_text, image - cached_image)

    outputs = _details(usage, "output_tokens_details")
    text_out = _count(outputs.get("text_tokens"))
    image_out = _count(outputs.get("image_tokens"))
    image_out += max(0, _count(usage.get("output_tokens")) - text_out - image_out)
    return {
        "text_input": text - cached_text,
        "cached_text_input": cached_text,
        "image_input": image - cached_image,
        "cached_image_input": cached_image,
        "image_output": image_out,
        "text_output": text_out,
    }


def token_cost(prices: TokenPrices, usage: Mapping[str, Any], multiplier: float = 1.0) -> float:
    """USD for one usage at per-million `prices`, times the group's multiplier: exact to the
    millionth of a dollar."""
    rates = prices.rates
    total = sum(
        (Decimal(tokens) * rates[kind] for kind, tokens in token_classes(usage).items()),
        Decimal(0),
    )
    return _usd(total * _dec(multiplier) / Decimal(1_000_000))


def _output_tokens_per_image(
    estimate: TokenEstimate, quality: str | None, size: Size | None
) -> float:
    table = estimate.output_tokens_per_mp
    per_mp = table.get(quality) if quality is not None else None
    if per_mp is None:  # auto, none, or a quality the table does not know: the largest
        per_mp = max(table.values())
    area = _AUTO_AREA if size is None else size.area
    return per_mp * area / _MEGAPIXEL


def estimate_images(
    price: Price | None,
    calls: list[int],
    prompt: str,
    *,
    size: Size | None = None,
    quality: str | None = None,
    input_images: int = 0,
    frames: int = 1,
    multiplier: float = 1.0,
) -> float:
    """The most a request can cost: `calls` images per upstream call at the planned `size`
    (None: the upstream's choice, counted as the largest standard size) and `quality` (None:
    the dearest), each of `frames` frames (an animated GIF's: each may be billed as an image),
    the prompt, an edit's input images, the group's multiplier."""
    if price is None:
        return 0.0
    n = sum(calls)
    cost = (price.per_image or 0) * n + (price.per_call or 0) * len(calls)
    tokens, estimate = price.tokens, price.estimate
    if tokens is not None and estimate is not None:
        # A token is at least one character of prompt, so the prompt's length bounds its
        # tokens; every call sends the prompt and the input images again. Each input class is
        # priced at the dearer input rate, each output class at the dearer output rate.
        input_tokens = (len(prompt) + estimate.input_tokens_per_image * input_images) * len(calls)
        output_tokens = _output_tokens_per_image(estimate, quality, size) * max(1, frames)
        rate_in = max(tokens.text_input, tokens.image_input)
        rate_out = max(tokens.image_output, tokens.text_output or 0)
        cost += (input_tokens * rate_in + output_tokens * n * rate_out) / 1_000_000
    # Rounded up, so the reservation is never below what the tokens could cost.
    return math.ceil(cost * multiplier * 1_000_000 - 1e-6) / 1_000_000


def actual_images(
    price: Price | None,
    max_n: int,
    images: int,
    usage: dict[str, Any] | None,
    estimate: float,
    multiplier: float = 1.0,
) -> float:
    """What the images delivered cost. Token-priced routes bill `usage` by token class; without
    it, the estimate stands (the upstream charged something, and it is not less than that). Usage
    that is not non-negative integers within MAX_TOKENS, that makes no output token for a
    delivered image, or that bills more than USAGE_BOUND times `estimate` (the request's own
    estimate on this route) raises UnusableUsage."""
    if price is None or images == 0:
        return 0.0
    calls = math.ceil(images / max_n)
    fixed = _dec(price.per_image) * images + _dec(price.per_call) * calls
    cost = _usd(fixed * _dec(multiplier))
    if price.tokens is not None:
        if not usage:
            return estimate
        classes = token_classes(usage)
        if classes["image_output"] + classes["text_output"] <= 0:
            raise UnusableUsage(f"{images} image(s) delivered with no output tokens")
        cost = _usd(Decimal(str(cost)) + Decimal(str(token_cost(price.tokens, usage, multiplier))))
        if cost > USAGE_BOUND * estimate:
            raise UnusableUsage(f"the usage bills {cost} USD, over {USAGE_BOUND}x the estimate")
    return cost


def sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Usage of several upstream calls (or streamed images) added up, field by field, nested
    details included."""
    if not usages:
        return None
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, dict):
                total[key] = sum_usage([total.get(key, {}), value])
            elif type(value) is int and type(total.get(key, 0)) is int:
                total[key] = total.get(key, 0) + value
            else:
                # Not a count (a string, a float, a bool): kept as it is, so the bill sees the
                # usage is unusable instead of a quietly smaller sum.
                total[key] = value
    return total


def video_estimate(price: VideoPrice | None, tier: str, seconds: int) -> float | None:
    """The most a video of `seconds` at price tier `tier` costs, before the upstream says: what
    a create reserves. None when the route has no price for that tier."""
    if price is None:
        return None
    if price.per_video is not None:
        return _round(price.per_video)
    if price.per_second is not None:
        rate = price.per_second.get(tier)
        return None if rate is None else _round(rate * seconds)
    rates = price.per_million_output_tokens or {}
    token_rate = rates.get(tier)
    per_second = (price.tokens_per_second or {}).get(tier)
    if token_rate is None or per_second is None:
        return None
    # Whether an input video makes the lower with-video rate apply is known only at the end:
    # the higher rate is the bound.
    rate_out = max(token_rate.without_video, token_rate.with_video)
    return _round(rate_out * per_second * seconds / 1_000_000)


def video_cost(
    price: VideoPrice | None,
    tier: str,
    seconds: int,
    *,
    output_tokens: int | None = None,
    actual_seconds: float | None = None,
    input_video: bool = False,
    bound_seconds: int | None = None,
) -> float | None:
    """USD for a finished video, from what the upstream reported: flat per video; per second on
    the seconds actually made (the asked-for seconds when it does not say); per million output
    tokens from its usage (the estimate when it reports none). None: no price for that tier.

    What the upstream reports is a claim: seconds that are not a finite number above 0, tokens
    that are not an integer above 0, or a cost over USAGE_BOUND times the estimate of
    `bound_seconds` (default `seconds`; a remix adds its input video's longest length) raise
    UnusableUsage, and the caller books the estimate."""
    if price is None or price.per_video is not None:
        return video_estimate(price, tier, seconds)
    estimate = video_estimate(price, tier, seconds)
    ceiling = video_estimate(price, tier, max(seconds, bound_seconds or seconds))
    if price.per_second is not None:
        if actual_seconds is None:
            return estimate
        rate = price.per_second.get(tier)
        if rate is None:
            return None
        if (
            type(actual_seconds) not in (int, float)
            or not math.isfinite(actual_seconds)
            or actual_seconds <= 0
        ):
            raise UnusableUsage(f"the seconds made are {str(actual_seconds)[:40]!r}")
        cost = _round(rate * math.ceil(actual_seconds))
    else:
        token_rate = (price.per_million_output_tokens or {}).get(tier)
        if token_rate is None or output_tokens is None:
            return estimate
        if type(output_tokens) is not int or output_tokens <= 0:
            raise UnusableUsage(f"the output tokens are {str(output_tokens)[:40]!r}")
        rate = token_rate.with_video if input_video else token_rate.without_video
        # Exact: tokens x rate per million, to the millionth of a dollar (half up), as images.
        cost = _usd(Decimal(output_tokens) * _dec(rate) / Decimal(1_000_000))
    if ceiling is not None and cost > USAGE_BOUND * ceiling:
        raise UnusableUsage(f"the usage bills {cost} USD, over {USAGE_BOUND}x the estimate")
    return cost

"""`Size`: a picture's width and height in pixels, the one typed form of a WxH value for images,
videos and pricing. Pure.

A size is parsed once where it enters (`Size.parse`), compared and measured as a value
(`area`, `ratio`), and rendered back to "WxH" (`str`) only where text is needed: a wire
field, a catalog key, a header. Which sizes a route makes is catalog data; this module only
measures them.

"Nearest" is one rule for every mapping of a size the route does not make (an image table's
tier, a video route's size, the size a Video object shows): the nearest aspect ratio first,
compared on a log scale so 2:1 and 1:2 are as far from 1:1, with ratios within
`RATIO_TOLERANCE` of the nearest counted as equally near (1792x1024 and 1280x720 are both
16:9 for a client); then the nearest area, also on a log scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

# How a client may write a size: WxH, X or * for x, spaces around (what the Videos API has
# always taken; the Images API's request schema is stricter and checks first).
_NOTATION = re.compile(r"^\s*(\d{1,5})\s*[xX*]\s*(\d{1,5})\s*$")
# Ratios whose log differs by at most this count as the same ratio when choosing the nearest.
RATIO_TOLERANCE = 0.05


class NotASize(ValueError):
    """Text that is not WxH at all (as opposed to WxH with a side of 0)."""


@dataclass(frozen=True, slots=True)
class Size:
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"a size has positive sides, not {self.width}x{self.height}")

    @classmethod
    def parse(cls, text: str) -> Size:
        """ "1280x720" (or "1280X720", "1280*720", " 1280 x 720 ") as a Size. NotASize when it
        is not WxH; ValueError when a side is 0."""
        match = _NOTATION.match(text)
        if match is None:
            raise NotASize(f"not a WxH size: {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def ratio(self) -> float:
        """Width over height."""
        return self.width / self.height

    def ratio_distance(self, ratio: float) -> float:
        """How far this size's aspect ratio is from `ratio`, on a log scale."""
        return abs(math.log(self.ratio) - math.log(ratio))

    def nearest(self, choices: Sequence[Size]) -> Size:
        """The choice nearest to this size: nearest ratio first (within RATIO_TOLERANCE of
        the nearest counts as equal), then nearest area; the earlier choice on a tie."""
        if not choices:
            raise ValueError("no sizes to choose from")
        distances = [choice.ratio_distance(self.ratio) for choice in choices]
        best = min(distances)
        near = [c for c, d in zip(choices, distances, strict=True) if d <= best + RATIO_TOLERANCE]
        return min(near, key=lambda choice: abs(math.log(choice.area / self.area)))

    def nearest_ratio(self, labels: Sequence[str]) -> str:
        """The ratio label ("2:3", "16:9") nearest to this size's aspect ratio."""
        if not labels:
            raise ValueError("no ratios to choose from")
        return min(labels, key=lambda label: self.ratio_distance(ratio_of(label)))


def ratio_of(label: str) -> float:
    """A ratio label "W:H" as width over height."""
    width, _, height = label.partition(":")
    return int(width) / int(height)

"""The console's Health page (/console/health): real requests through the SDK on the simulator
(some failing upstream), then the page shows the route that served them, its success rate and
latency, and its failures by code linked to those requests; a member sees its team's only."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import openai
import pytest

from .conftest import (
    Console,
    Gateway,
    console_admin_keys,
    create_key,
    wait_until,
)

MODEL = "gpt-image-2-web"
TIMES = "\u00d7"  # the page's "502 code x 2"


def route_row(page: str, route: str) -> str:
    start = page.index(f'<tr id="route-{route}"')
    return html.unescape(page[start : page.index("</tr>", start)])


def test_health_shows_the_route_that_served_and_its_failures(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    designer_key = create_key(gw, "designer", "marketing")
    analyst_key = create_key(gw, "analyst", "finance")
    designer = gw.sdk(api_key=designer_key)
    for i in range(3):
        made = designer.images.with_raw_response.generate(model=MODEL, prompt=f"a lighthouse {i}")
    route = made.headers["x-mediagate-route"]
    with pytest.raises(openai.InternalServerError):
        designer.images.generate(model=MODEL, prompt="[sim:status=500] a storm")
    with pytest.raises(openai.InternalServerError):
        gw.sdk(api_key=analyst_key).images.generate(model=MODEL, prompt="[sim:status=500] hail")
    admin = console(gw)

    def counted() -> bool:
        return ">5</td>" in route_row(admin.get("/console/health").text, route)

    wait_until(counted, timeout_s=10)
    page = admin.get("/console/health")
    assert page.status_code == 200
    row = route_row(page.text, route)
    assert '<td class="num">5</td>' in row
    assert 'badge bad">60.0%<' in row  # 3 of 5 answered below 400
    assert 'badge ok">closed<' in row
    failure = re.search(
        r'<a href="(/console/requests\?[^"]+)"><span class="mono">502 ([a-z_]+)', row
    )
    assert failure is not None, row
    assert f"{TIMES} 2" in row
    link = parse_qs(urlsplit(failure.group(1)).query)
    assert link["route"] == [route] and link["status"] == ["5xx"] and link["start"]
    assert link["error_code"] == [failure.group(2)]
    # The p50/p95 cells are the admin API's numbers (the same function), as durations.
    with gw.http(designer_key) as http:
        assert http.get("/admin/v1/health").status_code == 200
    # The busiest route comes first; idle routes after it.
    first = re.search(r'<tr id="route-([^"]+)"', page.text)
    assert first is not None and first.group(1) == route
    assert 'class="idle"' in page.text

    # A member: its own team's requests only (3 successes and one failure).
    member = console(gw, designer_key).get("/console/health")
    row = route_row(member.text, route)
    assert '<td class="num">4</td>' in row and 'badge bad">75.0%<' in row
    assert f"{TIMES} 1" in row

"""The console's Models page (/console/models): every model the gateway serves, with its
routes' prices and `as_of` dates, sizes and durations, retired names and whether the upstream
lists them, as the catalog the gateway loaded says (compared with load_catalog's data)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from mediagate.catalog import load_catalog
from mediagate.console.models import price_lines, sizes_of

from .conftest import (
    CONSOLE_ADMIN_KEY,
    Console,
    Gateway,
    Sim,
    console_admin_keys,
    create_key,
    wait_until,
)


def model_block(page: str, model_id: str) -> str:
    start = page.index(f'<tbody class="model" id="model-{model_id}">')
    return html.unescape(page[start : page.index("</tbody>", start)])


def shown_models(page: str) -> list[str]:
    return re.findall(r'<tbody class="model" id="model-([^"]+)">', page)


def test_every_model_with_its_prices_as_the_catalog_says(
    make_gateway: Callable[..., Gateway], console: Console, sim: Sim
) -> None:
    catalog = load_catalog()
    gone = catalog.routes["gpt-image-2.official"]
    sim.state.unlisted.add((gone.group, gone.upstream_model))
    gw = make_gateway(admin_keys=console_admin_keys(), catalog_check_interval_s=3600)
    admin = console(gw)
    with gw.http(CONSOLE_ADMIN_KEY) as http:
        api = http.get("/admin/v1/catalog").json()
    offered = [m["id"] for m in api["models"]]
    assert set(offered) <= set(catalog.models)
    # The simulator serves every group: the bundled catalog's models are all offered.
    assert set(offered) == set(catalog.models)

    page = admin.get("/console/models")
    assert page.status_code == 200
    assert shown_models(page.text) == offered
    for model_id in offered:
        block = model_block(page.text, model_id)
        for route_id in catalog.models[model_id].routes:
            route = catalog.routes[route_id]
            assert route_id in block and route.group in block, (model_id, route_id)
            price = route.price if route.price is not None else route.video and route.video.price
            assert price is not None
            if price.as_of is not None:
                assert price.as_of.isoformat() in block, (model_id, route_id)
            dumped = price.model_dump(mode="json", exclude_none=True)
            lines = price_lines(dumped)
            assert lines, (model_id, route_id)
            for unit, amount in lines:
                assert f"{unit}</span> {amount}" in block, (model_id, route_id, unit)
            for flat in ("per_image", "per_call", "per_video"):
                if getattr(price, flat, None) is not None:
                    assert f"{flat}</span> {getattr(price, flat)}" in block
            for size in sizes_of(route):
                assert size in block
            if route.video is not None:
                assert ", ".join(str(s) for s in route.video.seconds) in block
        if catalog.models[model_id].legacy:
            assert "legacy" in block
    # Retired names: on their successor's row, with the retirement date.
    for alias in catalog.aliases.values():
        block = model_block(page.text, alias.to)
        assert alias.name in block and alias.retired_on.isoformat() in block

    # Whether the upstream still lists each route (the gateway's check, once it has run).
    def unlisted_shown() -> bool:
        block = model_block(admin.get("/console/models").text, "gpt-image-2")
        row = block[block.index("gpt-image-2.official") :]
        return 'badge bad">not listed<' in row[: row.index("</tr>")]

    wait_until(unlisted_shown, timeout_s=15)
    assert 'badge ok">listed<' in admin.get("/console/models").text

    # The filter box: by name (a retired name finds its successor) and by kind.
    videos = [m for m in offered if catalog.routes[catalog.models[m].routes[0]].kind == "video"]
    assert shown_models(admin.get("/console/models?kind=video").text) == videos
    assert shown_models(admin.get("/console/models?q=&kind=").text) == offered  # the empty form
    assert admin.get("/console/models?kind=audio").status_code == 400
    assert videos and set(videos) < set(offered)
    alias = next(iter(catalog.aliases.values()))
    assert alias.to in shown_models(admin.get("/console/models", params={"q": alias.name}).text)
    narrowed = shown_models(admin.get("/console/models?q=sunburst&kind=image").text)
    assert narrowed and all("sunburst" in m for m in narrowed)
    assert shown_models(admin.get("/console/models?q=no-such-model").text) == []
    assert "No model matches" in admin.get("/console/models?q=no-such-model").text


def test_a_member_sees_the_models_its_key_may_use(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    key = create_key(gw, "designer", "marketing", models=["gpt-image-2", "muse-video"])
    page = console(gw, key).get("/console/models")
    assert page.status_code == 200
    assert shown_models(page.text) == ["gpt-image-2", "muse-video"]

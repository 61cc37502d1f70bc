"""The console's Models page (`/console/models`): the catalog as a table.

Its data is the admin API's catalog (`admin_reads.catalog_view`: the models the user may see,
their routes, prices with their `as_of` date, whether the upstream still lists each route),
with the catalog's own facts beside it (mediagate/catalog.py): each route's sizes and
durations, and the retired names (aliases) each model now serves, with their retirement date.
Nothing about a model is written here: it all comes from the catalog the gateway loaded.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from mediagate.catalog import Catalog, Route
from mediagate.console.web import PREFIX, Viewer, render
from mediagate.errors import InvalidRequest
from mediagate.http.admin_reads import catalog_view
from mediagate.http.deps import gateway
from mediagate.http.routes import Routes

pages = Routes()

KINDS = ("image", "video")


def price_lines(price: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A route's price (as the catalog API dumps it) as (unit, amount) lines, e.g.
    ("per_image", "0.04") or ("per_second 720p", "0.1"); `as_of` and `source` apart."""
    if not price:
        return []
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                walk(f"{prefix} {name}".strip(), inner)
        elif isinstance(value, list):
            if value:  # e.g. not_priced: the tiers without a rate yet
                out.append((prefix, ", ".join(str(v) for v in value)))
        else:
            out.append((prefix, str(value)))

    for name, value in price.items():
        if name not in ("as_of", "source"):
            walk(name, value)
    return out


def sizes_of(route: Route) -> list[str]:
    """The sizes a route makes, as its catalog entry gives them."""
    if route.video is not None:
        return list(route.video.sizes)
    rule = route.size
    if rule is None:
        return []
    if rule.rule == "enum":
        return list(rule.values)
    if rule.rule == "table":
        return list(rule.table)
    if rule.rule == "marker":
        return list(rule.markers)
    return [
        f"any WxH, multiple of {rule.multiple}, edge ≤ {rule.max_edge}, "
        f"ratio ≤ {rule.max_ratio:g}, ≤ {rule.max_pixels:,} pixels"
    ]


def model_rows(catalog: Catalog, view: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model of `view` (catalog_view's answer), with its routes' facts."""
    routes = {r["id"]: r for r in view["routes"]}
    retired: dict[str, list[dict[str, Any]]] = {}
    for alias in sorted(catalog.aliases.values(), key=lambda a: a.name):
        for successor in (alias.to, *alias.fallbacks):
            retired.setdefault(successor, []).append(
                {
                    "name": alias.name,
                    "retired_on": alias.retired_on.isoformat(),
                    "served": alias.retired is None and successor == alias.to,
                    "fallback": successor != alias.to,
                    "link": alias.link,
                }
            )
    rows = []
    for model in view["models"]:
        served = []
        for route_id in model["routes"]:
            shown = routes[route_id]
            route = catalog.routes[route_id]
            served.append(
                {
                    **shown,
                    "prices": price_lines(shown["price"]),
                    "sizes": sizes_of(route),
                    "seconds": list(route.video.seconds) if route.video is not None else [],
                }
            )
        kinds = sorted({r["kind"] for r in served})
        rows.append(
            {
                **model,
                "kind": "/".join(kinds),
                "served": served,
                "aliases": retired.get(model["id"], []),
                "listed": [r["listed"] for r in served],
            }
        )
    return rows


@pages.get(PREFIX + "/models", name="console.models", include_in_schema=False)
async def models_page(
    request: Request,
    session: Viewer,
    q: Annotated[str | None, Query(max_length=128)] = None,
    kind: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    if kind == "":
        kind = None  # the filter form's "any"
    if kind is not None and kind not in KINDS:
        raise InvalidRequest("Invalid 'kind': expected image or video.", param="kind")
    gw = gateway(request)
    view = catalog_view(gw, session.principal)
    rows = model_rows(gw.catalog, view)
    total = len(rows)
    text = (q or "").strip().lower()
    if text:
        rows = [
            row
            for row in rows
            if text in row["id"].lower()
            or any(text in a["name"].lower() for a in row["aliases"])
            or any(text in r["id"].lower() for r in row["served"])
        ]
    if kind is not None:
        rows = [row for row in rows if kind in row["kind"].split("/")]
    return render(
        request,
        session,
        "models.html",
        title="Models",
        rows=rows,
        total=total,
        listing_checked=view["listing_checked"],
        kinds=KINDS,
    )

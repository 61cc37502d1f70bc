"""The console's Playground (`/console/playground`): try a model from the browser.

The form is built from the catalog in force (what each model's first route takes: its sizes,
qualities, output formats, video durations, reference image, Muse's styles), handed to the
page's script as a JSON data block (the CSP allows no inline script). The script sends the real
request to /v1 with `fetch`: the session's cookie, the CSRF token and `X-Mediagate-Key` naming
which key to act with (mediagate.http.deps.acting_key), so it is metered, limited and logged as
that key's like any client's. The estimate shown before sending is the server's own pricing
(`GET /console/playground/estimate`), and a finished video plays through
`/console/playground/videos/{id}/content`, which a <video> element can load (it cannot send
headers): the session, the key the user may act with, then the /v1 content route's own relay.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mediagate.accounting.clients import ANONYMOUS
from mediagate.accounting.pricing import video_estimate
from mediagate.catalog import Catalog, Route
from mediagate.console.web import PREFIX, SECURITY_HEADERS, Viewer, render
from mediagate.errors import GatewayError, InvalidRequest, NotFound, PermissionDenied
from mediagate.http.deps import gateway, public_base
from mediagate.http.errors import error_response
from mediagate.http.principals import Principal
from mediagate.http.routes import Routes
from mediagate.http.videos import relay_content
from mediagate.images.plan import plan_images
from mediagate.images.spec import parse_generation
from mediagate.videos.spec import plan_video, video_policy

pages = Routes()

PAGE = PREFIX + "/playground"
# Sizes offered where a route takes any size within its rule (or a ratio): the common ones,
# each kept only if the route's own planning accepts it.
_COMMON_SIZES = (
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "2048x2048",
    "2048x1152",
    "1152x2048",
    "3840x2160",
    "2160x3840",
)
_MAX_KEYS = 500


def _image_sizes(route: Route, model: str) -> list[str]:
    rule = route.size
    if rule is None or "size" not in route.accepts:
        return []
    if rule.rule == "enum":
        return list(rule.values)
    if rule.rule == "table":
        return [size for sizes in rule.table.values() for size in sizes]
    sizes = ["auto"] if rule.rule == "flexible" else []
    for size in _COMMON_SIZES:
        try:
            plan_images(parse_generation({"prompt": "x", "model": model, "size": size}), route)
        except GatewayError:
            continue
        sizes.append(size)
    return sizes


def _image_facts(route: Route, model: str) -> dict[str, Any]:
    takes = route.accepts
    return {
        "kind": "image",
        "sizes": _image_sizes(route, model),
        "qualities": list(route.values.get("quality", [])) if "quality" in takes else [],
        "output_formats": (
            list(route.values.get("output_format", ["png", "jpeg", "webp"]))
            if "output_format" in takes
            else []
        ),
        "max_n": 10 if "n" in takes else 1,
        "max_prompt_chars": route.max_prompt_chars,
    }


def _video_facts(route: Route) -> dict[str, Any]:
    video = video_policy(route)
    styles = {
        name: list(option.values or [])
        for name, option in video.options.items()
        if option.values and option.type in ("string", "ids")
    }
    return {
        "kind": "video",
        # Only what is priced is made (never a free, unbudgeted video): nothing else offered.
        "sizes": [size for size in video.sizes if video.priced(video.tier(size))],
        "default_size": video.default_size,
        "seconds": list(video.seconds),
        "default_seconds": video.default_seconds,
        "reference": video.reference,
        "styles": styles,
        "max_prompt_chars": route.max_prompt_chars,
    }


def catalog_facts(catalog: Catalog, allows: Any = None) -> dict[str, dict[str, Any]]:
    """What the playground's form offers for each model the catalog serves (its first route's
    fields), by model name; `allows(name)` narrows them (a key's allow-list)."""
    facts: dict[str, dict[str, Any]] = {}
    for name, model in sorted(catalog.models.items()):
        if allows is not None and not allows(name):
            continue
        route = catalog.routes[model.routes[0]]
        facts[name] = (
            _video_facts(route) if route.kind == "video" else _image_facts(route, name)
        ) | {"legacy": model.legacy}
    return facts


def _keys(request: Request, principal: Principal) -> list[dict[str, Any]]:
    """The keys this user may act with (by name and team), in force now."""
    gw = gateway(request)
    usable = {
        p.name: p.team for p in gw.clients.policies() if principal.may_act_with(p.name, p.team)
    }
    return [{"name": name, "team": usable[name]} for name in sorted(usable)[:_MAX_KEYS]]


@pages.get(PAGE, name="console.playground", include_in_schema=False)
async def playground_page(request: Request, session: Viewer) -> HTMLResponse:
    gw = gateway(request)
    catalog = gw.catalog
    open_mode = not gw.clients.enabled
    keys = [] if open_mode else _keys(request, session.principal)
    facts = catalog_facts(catalog)
    chosen = request.query_params.get("model") or catalog.default_image_model
    if chosen not in facts:
        chosen = catalog.default_image_model if catalog.default_image_model in facts else ""
    data = {
        "models": facts,
        "default_model": chosen,
        "open": open_mode,
        "keys": keys,
        "estimate_url": PAGE + "/estimate",
        "content_url": PAGE + "/videos/{id}/content",
    }
    return render(
        request,
        session,
        "playground.html",
        title="Playground",
        models=facts,
        chosen=chosen,
        open_mode=open_mode,
        keys=keys,
        facts_json=json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"),
    )


def _number(value: str | None, param: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 4:
        raise InvalidRequest(f"Invalid '{param}': expected a whole number.", param=param)
    return int(value)


def estimate_cost(request: Request, args: dict[str, str]) -> dict[str, Any]:
    """The most a request with these fields can cost, as the gateway would reserve it: an image
    request planned as /v1/images/generations plans it and priced by its estimate, a video's by
    its route's price for the planned tier and seconds (with the group's multiplier)."""
    gw = gateway(request)
    catalog = gw.catalog
    model = args.get("model") or catalog.default_image_model
    target, _ = catalog.resolve(model)
    first = catalog.routes[catalog.model(target).routes[0]]
    chars = min(_number(args.get("prompt_chars"), "prompt_chars", 1), first.max_prompt_chars)
    prompt = "x" * max(1, chars)
    if first.kind == "video":
        _, route, _ = catalog.lookup(model, "video")
        fields: dict[str, Any] = {"prompt": prompt}
        for name in ("size", "seconds"):
            if args.get(name):
                fields[name] = args[name]
        spec = plan_video(fields, route, target, known=catalog.video_options).spec
        video = video_policy(route)
        tier = video.tier(spec.size)
        bound = video_estimate(video.price, tier, spec.seconds)
        usd = None if bound is None else round(bound * catalog.multiplier(route), 6)
        return {
            "model": model,
            "kind": "video",
            "size": spec.size,
            "seconds": spec.seconds,
            "estimate_usd": usd,
        }
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    for name in ("size", "quality", "output_format"):
        if args.get(name):
            body[name] = args[name]
    body["n"] = _number(args.get("n"), "n", 1)
    job = gw.images.plan_generation(body, public_base(request))
    return {
        "model": model,
        "kind": "image",
        "n": body["n"],
        "size": body.get("size"),
        "estimate_usd": gw.images.estimate(job),
    }


@pages.get(PAGE + "/estimate", name="console.playground.estimate", include_in_schema=False)
async def estimate(request: Request, session: Viewer) -> Response:
    """`{"estimate_usd": …}` for `?model=&size=&n=&quality=&seconds=&prompt_chars=`: a bad
    combination is the API's 400 (its JSON error)."""
    args = {k: v[:200] for k, v in request.query_params.items()}
    try:
        answer = estimate_cost(request, args)
    except GatewayError as exc:
        # The page's script shows the API's message: JSON, not the console's error page.
        error = error_response(exc)
        error.headers.update(SECURITY_HEADERS)
        return error
    return JSONResponse(answer, headers=SECURITY_HEADERS)


@pages.get(
    PAGE + "/videos/{video_id}/content",
    name="console.playground.content",
    include_in_schema=False,
)
async def video_content(request: Request, session: Viewer, video_id: str) -> Response:
    """A video the user made with one of its keys, for a <video> element: `?key=` names the key
    it was made with (none on an open gateway); another key's video is a 404, a key the user may
    not act with a 403. Range passes through, as on /v1/videos/{id}/content."""
    gw = gateway(request)
    if gw.clients.enabled:
        name = request.query_params.get("key", "")
        policy = gw.clients.usable(name) if name else None
        if policy is None:
            raise NotFound(f"No video '{video_id[:64]}' of yours.", param="video_id")
        if not session.principal.may_act_with(policy.name, policy.team):
            raise PermissionDenied(
                f"You may not act with the key '{policy.name}': it is not your team's.",
                code="permission_denied",
            )
        owner = policy.name
    else:
        owner = ANONYMOUS.name
    return await relay_content(request, owner, video_id)

"""Image generation: plan the request for its route, call the upstream, answer in one shape."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import TYPE_CHECKING, Any

from .dialects import UpstreamImage, UpstreamResult, get_dialect
from .errors import GatewayError, UpstreamError
from .imagedata import repair_b64, sniff_image_type
from .normalize import Plan, plan_generation
from .schemas import parse_generation

if TYPE_CHECKING:
    from .gateway import Gateway


class ImagesResult:
    def __init__(self, body: dict[str, Any], headers: dict[str, str], count: int) -> None:
        self.body = body
        self.headers = headers
        self.count = count


def _sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Usage of several upstream calls added up, field by field (nested details too)."""
    if not usages:
        return None
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
            elif isinstance(value, dict):
                total[key] = _sum_usage([total.get(key, {}), value])
    return total


async def _finish(gw: Gateway, image: UpstreamImage, plan: Plan, base_url: str) -> dict[str, Any]:
    """One `data[]` item in the form the client asked for."""
    item: dict[str, Any] = {}
    if plan.response_format == "b64_json":
        if image.b64 is not None:
            item["b64_json"] = repair_b64(image.b64)
        else:
            assert image.url is not None
            data, _ = await gw.fetcher.fetch_image(image.url)
            item["b64_json"] = base64.b64encode(data).decode("ascii")
    elif image.url is not None:
        item["url"] = image.url
    else:
        assert image.b64 is not None
        try:
            data = base64.b64decode(repair_b64(image.b64), validate=True)
        except ValueError:
            raise UpstreamError("The upstream returned invalid base64 image data.") from None
        name = await gw.store.put(data, sniff_image_type(data) or "image/png")
        item["url"] = f"{base_url}/v1/files/images/{name}"
    if image.revised_prompt:
        item["revised_prompt"] = image.revised_prompt
    return item


async def generate_images(gw: Gateway, body: Any, base_url: str, state: Any) -> ImagesResult:
    # The model is resolved before the rest is validated, so a bad request is still counted
    # against the model it was for.
    name = body.get("model") if isinstance(body, dict) else None
    name = name or gw.catalog.default_image_model
    if isinstance(name, str):
        _, route = gw.catalog.route_for(name, "image")
        state.model, state.route = name, route
    request = parse_generation(body)
    plan = plan_generation(request, route)
    dialect = get_dialect(route.dialect)

    async def call(n: int) -> tuple[UpstreamResult, list[dict[str, Any]]]:
        payload = await gw.upstream.post_json(route, dialect.build(plan, n))
        result = dialect.parse(payload)
        images = result.images[:n]
        return result, await asyncio.gather(*(_finish(gw, i, plan, base_url) for i in images))

    outcomes = await asyncio.gather(*(call(n) for n in plan.calls), return_exceptions=True)
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if not done:
        error = failed[0]
        raise error if isinstance(error, GatewayError) else UpstreamError(str(error))
    for error in failed:
        if not isinstance(error, Exception):
            raise error  # cancellation and the like are not ours to swallow

    headers = plan.headers()
    if failed:
        # Images that were made (and paid for) are returned rather than thrown away.
        headers["x-mediagate-partial"] = f"{len(plan.calls) - len(failed)}/{len(plan.calls)}"
    data = [item for _, items in done for item in items]
    response: dict[str, Any] = {"created": int(time.time()), "data": data}
    if len(done) == 1:
        response.update(done[0][0].extra)
    usage = _sum_usage([r.usage for r, _ in done if r.usage])
    if usage:
        response["usage"] = usage
    return ImagesResult(response, headers, len(data))

"""Image generations and edits: plan for the route, call the upstream, answer in one shape."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData

from .catalog import Route
from .dialects import Dialect, EditImages, UpstreamImage, UpstreamResult, get_dialect
from .errors import GatewayError, UpstreamError
from .imagedata import repair_b64, sniff_image_type
from .normalize import Plan, plan_images
from .schemas import parse_edit, parse_generation
from .uploads import split_form

if TYPE_CHECKING:
    from .gateway import Gateway


@dataclass
class ImagesResult:
    body: dict[str, Any]  # the OpenAI ImagesResponse
    headers: dict[str, str]
    count: int


@dataclass
class Job:
    """One client request, validated and planned for its route; nothing sent yet."""

    gw: Gateway
    model: str
    plan: Plan
    dialect: Dialect
    edit: EditImages | None
    base_url: str  # where the gateway's own image links point

    @property
    def route(self) -> Route:
        return self.plan.route


def _resolve(gw: Gateway, name: Any, state: Any) -> None:
    # The model is resolved before the rest is validated, so a bad request is still counted
    # against the model it was for.
    name = name or gw.catalog.default_image_model
    if isinstance(name, str):
        _, route = gw.catalog.route_for(name, "image")
        state.model, state.route = name, route


def prepare_generation(gw: Gateway, body: Any, base_url: str, state: Any) -> Job:
    _resolve(gw, body.get("model") if isinstance(body, dict) else None, state)
    request = parse_generation(body)
    plan = plan_images(request, state.route)
    return Job(gw, state.model, plan, get_dialect(plan.route.dialect), None, base_url)


async def prepare_edit(gw: Gateway, form: FormData, base_url: str, state: Any) -> Job:
    settings = gw.settings
    _resolve(gw, form.get("model"), state)
    fields, inputs = split_form(form, settings.edit_max_file_bytes, settings.edit_max_total_bytes)
    request = parse_edit(fields)
    plan = plan_images(request, state.route, mask=inputs.mask is not None)
    dialect = get_dialect(plan.route.dialect)
    data_urls: list[str] = []
    if dialect.inline_images:
        data_urls = await asyncio.to_thread(lambda: [i.data_url() for i in inputs.images])
    edit = EditImages(inputs.images, inputs.mask, data_urls)
    return Job(gw, state.model, plan, dialect, edit, base_url)


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


async def _image_bytes(job: Job, image: UpstreamImage) -> bytes:
    if image.b64 is not None:
        try:
            return base64.b64decode(repair_b64(image.b64), validate=True)
        except ValueError:
            raise UpstreamError("The upstream returned invalid base64 image data.") from None
    assert image.url is not None
    data, _ = await job.gw.fetcher.fetch_image(image.url)
    return data


async def _finish(job: Job, image: UpstreamImage) -> dict[str, Any]:
    """One `data[]` item in the form the client asked for."""
    item: dict[str, Any] = {}
    if job.plan.response_format == "b64_json":
        if image.b64 is not None:
            item["b64_json"] = repair_b64(image.b64)
        else:
            item["b64_json"] = base64.b64encode(await _image_bytes(job, image)).decode("ascii")
    elif image.url is not None and job.gw.settings.image_urls == "passthrough":
        item["url"] = image.url
    else:
        # Upstream links die within a day; the gateway keeps its own copy for the retention.
        data = await _image_bytes(job, image)
        name = await job.gw.store.put(data, sniff_image_type(data) or "image/png")
        item["url"] = f"{job.base_url}/v1/files/images/{name}"
    if image.revised_prompt:
        item["revised_prompt"] = image.revised_prompt
    return item


async def _call(job: Job, n: int) -> tuple[UpstreamResult, list[dict[str, Any]]]:
    payload = await job.gw.upstream.post(job.route, job.dialect.build(job.plan, n, job.edit))
    result = job.dialect.parse(payload)
    items = await asyncio.gather(*(_finish(job, image) for image in result.images[:n]))
    return result, list(items)


async def run(job: Job) -> ImagesResult:
    """All the job's upstream calls, concurrently, merged into one ImagesResponse."""
    outcomes = await asyncio.gather(
        *(_call(job, n) for n in job.plan.calls), return_exceptions=True
    )
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    for error in failed:
        if not isinstance(error, Exception):
            raise error  # cancellation and the like are not ours to swallow
    if not done:
        error = failed[0]
        raise error if isinstance(error, GatewayError) else UpstreamError(str(error))

    headers = job.plan.headers()
    if failed:
        # Images that were made (and paid for) are returned rather than thrown away.
        headers["x-mediagate-partial"] = f"{len(done)}/{len(job.plan.calls)}"
    data = [item for _, items in done for item in items]
    body: dict[str, Any] = {"created": int(time.time()), "data": data}
    if len(done) == 1:
        body.update(done[0][0].extra)
    usage = _sum_usage([result.usage for result, _ in done if result.usage])
    if usage:
        body["usage"] = usage
    return ImagesResult(body, headers, len(data))

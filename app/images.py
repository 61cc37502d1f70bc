"""Image generations and edits: plan for the route, call the upstream, answer in one shape.

A model may list several routes (gpt-image-2: official, then enterprise, then web). The job is
planned for the first; when that route is unavailable or failing in a way that surely cost
nothing (see `app.upstream.unserved`), it is planned again for the next, and so on. A route
that would drop parameters the client sent is skipped when the operator forbids that
(MEDIAGATE_FALLBACK_MAY_DROP, or `fallback_may_drop` per model). The route that finally served
is the job's route (and the request's), so the response headers and billing follow it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData

from . import attempts
from .catalog import Route
from .dialects import Dialect, EditImages, UpstreamImage, UpstreamResult, get_dialect
from .errors import GatewayError, InvalidRequest, UpstreamError
from .imagedata import repair_b64, sniff_image_type
from .normalize import Plan, plan_images
from .schemas import ImageEditRequest, ImageGenerationRequest, parse_edit, parse_generation
from .uploads import split_form
from .upstream import maybe_paid, unserved

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
    # For a fallback: the request to plan again, the routes left, whether they may drop what
    # the client sent, and the request's state (its route follows the job's).
    request: ImageGenerationRequest | ImageEditRequest | None = None
    fallbacks: list[Route] = field(default_factory=list)
    may_drop: bool = True
    state: Any = None
    first_dropped: frozenset[str] = frozenset()

    @property
    def route(self) -> Route:
        return self.plan.route


def _resolve(gw: Gateway, name: Any, state: Any) -> tuple[list[Route], bool]:
    """The model's fallback routes, and whether they may drop parameters."""
    # The model is resolved before the rest is validated, so a bad request is still counted
    # against the model it was for.
    name = name or gw.catalog.default_image_model
    if not isinstance(name, str):
        return [], True
    model, route = gw.catalog.route_for(name, "image")
    state.model, state.route = name, route
    routes = [gw.catalog.routes[rid] for rid in model.routes[1:]]
    may_drop = gw.settings.fallback_may_drop
    if model.fallback_may_drop is not None:
        may_drop = model.fallback_may_drop
    return [r for r in routes if r.kind == "image"], may_drop


def _job(
    gw: Gateway,
    state: Any,
    plan: Plan,
    edit: EditImages | None,
    base_url: str,
    request: ImageGenerationRequest | ImageEditRequest,
    fallbacks: tuple[list[Route], bool],
) -> Job:
    return Job(
        gw,
        state.model,
        plan,
        get_dialect(plan.route.dialect),
        edit,
        base_url,
        request=request,
        fallbacks=fallbacks[0],
        may_drop=fallbacks[1],
        state=state,
        first_dropped=frozenset(plan.dropped),
    )


def prepare_generation(gw: Gateway, body: Any, base_url: str, state: Any) -> Job:
    fallbacks = _resolve(gw, body.get("model") if isinstance(body, dict) else None, state)
    request = parse_generation(body)
    plan = plan_images(request, state.route)
    return _job(gw, state, plan, None, base_url, request, fallbacks)


async def prepare_edit(gw: Gateway, form: FormData, base_url: str, state: Any) -> Job:
    settings = gw.settings
    fallbacks = _resolve(gw, form.get("model"), state)
    fields, inputs = split_form(form, settings.edit_max_file_bytes, settings.edit_max_total_bytes)
    request = parse_edit(fields)
    plan = plan_images(request, state.route, mask=inputs.mask is not None)
    edit = await _inline(EditImages(inputs.images, inputs.mask), get_dialect(plan.route.dialect))
    return _job(gw, state, plan, edit, base_url, request, fallbacks)


async def _inline(edit: EditImages, dialect: Dialect) -> EditImages:
    """The edit with its images as data URLs too, when the dialect sends them inline."""
    if not dialect.inline_images or edit.data_urls:
        return edit
    data_urls = await asyncio.to_thread(lambda: [i.data_url() for i in edit.files])
    return replace(edit, data_urls=data_urls)


async def fall_back(job: Job, error: GatewayError) -> bool:
    """Plan the job for the model's next usable route after `error` on its current one. Only
    after a failure that surely cost nothing. False when no route is left: the caller raises
    `error`. Every route left or skipped is reported in x-mediagate-fallback."""
    if job.request is None or not job.fallbacks or not unserved(error):
        return False
    _left(job, job.route, error.code or "upstream_error")
    while job.fallbacks:
        route = job.fallbacks.pop(0)
        plan = _plan_for(job, job.request, route)
        if isinstance(plan, str):
            _left(job, route, plan)
            continue
        job.dialect = get_dialect(route.dialect)
        if job.edit is not None:
            job.edit = await _inline(job.edit, job.dialect)
        job.plan = plan
        if job.state is not None:
            job.state.route = route
        return True
    return False


def _plan_for(
    job: Job, request: ImageGenerationRequest | ImageEditRequest, route: Route
) -> Plan | str:
    """The job's plan on another route, or why that route cannot take it."""
    if job.plan.stream and route.stream != job.route.stream:
        # A relayed stream cannot turn into an emulated one (or back) halfway.
        return "stream_mode"
    try:
        plan = plan_images(request, route, mask=job.edit is not None and job.edit.mask is not None)
    except InvalidRequest:
        return "invalid"
    if not job.may_drop and set(plan.dropped) - job.first_dropped:
        return "would_drop"
    return plan


def _left(job: Job, route: Route, reason: str) -> None:
    attempts.note_fallback(route.id, reason)
    job.gw.metrics.fallbacks.labels(job.model, route.id, reason).inc()


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
    try:
        result = job.dialect.parse(payload)
        items = await asyncio.gather(*(_finish(job, image) for image in result.images[:n]))
    except GatewayError as error:
        # The upstream made (and charged for) this: no other route, and no retry, for it.
        raise maybe_paid(error) from None
    return result, list(items)


async def run(job: Job) -> ImagesResult:
    """All the job's upstream calls, concurrently, merged into one ImagesResponse; on the
    model's next route when the current one is unavailable or failing."""
    while True:
        try:
            return await _run_route(job)
        except GatewayError as error:
            if not await fall_back(job, error):
                raise


async def _run_route(job: Job) -> ImagesResult:
    outcomes = await asyncio.gather(
        *(_call(job, n) for n in job.plan.calls), return_exceptions=True
    )
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    for error in failed:
        if not isinstance(error, Exception):
            raise error  # cancellation and the like are not ours to swallow
    if not done:
        errors = [
            e if isinstance(e, GatewayError) else maybe_paid(UpstreamError(str(e))) for e in failed
        ]
        # The route is left for another only if none of its calls may have cost anything.
        raise next((e for e in errors if not unserved(e)), errors[0])

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

"""Image generations and edits: the one owner of an image request, from admission to its bill.

`ImageService.plan_generation` and `.plan_edit` validate and plan a request for the model's first
route; `.answer` admits it against the client key's limits and budget, runs it (streamed or not),
settles what it cost, and hands the HTTP layer an `ImagesAnswer` to send.

A model may list several routes (gpt-image-2: official, then enterprise, then web). When the
current route is unavailable or failing in a way that surely cost nothing (the paid rule,
`mediagate.errors.unserved`), the request is planned again for the next, and so on: one loop,
`_on_routes`, for plain and streamed answers alike. A route that would drop parameters the
client sent is skipped when the operator forbids that (MEDIAGATE_FALLBACK_MAY_DROP, or
`fallback_may_drop` per model). The route that finally served is the request's, so the response
headers and the bill follow it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from starlette.datastructures import FormData

from mediagate import context
from mediagate.accounting.clients import KeyPolicy
from mediagate.accounting.metering import Gate, Metering, Ticket
from mediagate.accounting.pricing import (
    UnusableUsage,
    actual_images,
    estimate_images,
    sum_usage,
)
from mediagate.catalog import Alias, Catalog, CatalogHolder, Route
from mediagate.errors import (
    GatewayError,
    InvalidRequest,
    Scrubber,
    maybe_paid,
    unserved,
)
from mediagate.imagedata import (
    FORMATS,
    ImageWork,
    InvalidImageData,
    LiftedB64,
    checked_image,
    image_bytes,
    image_head,
    image_size,
    invalid_image,
    sniff_output_type,
)
from mediagate.images.plan import ImageJob, ImagePlan, ImagesResult, gif_frames, plan_images
from mediagate.images.spec import (
    ImageEditRequest,
    ImageGenerationRequest,
    parse_edit,
    parse_generation,
)
from mediagate.images.streaming import (
    emulate,
    is_event_stream,
    read_json,
    relay,
)
from mediagate.images.uploads import split_form
from mediagate.observability.metrics import Metrics
from mediagate.settings import Settings
from mediagate.stores.hosted import HostedImages
from mediagate.stores.kept import Keeper
from mediagate.stores.ledger import Charge
from mediagate.upstream.dialects import (
    Dialect,
    EditImages,
    UpstreamImage,
    UpstreamResult,
    get_dialect,
)
from mediagate.upstream.fetcher import SafeFetcher
from mediagate.upstream.sender import Upstream, UpstreamAnswer
from mediagate.upstream.transport import UpstreamResponse

T = TypeVar("T")
log = logging.getLogger("mediagate")
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass
class ImagesAnswer:
    """What the HTTP layer sends: an ImagesResponse body, or server-sent events."""

    headers: dict[str, str]
    body: dict[str, Any] | None = None
    events: AsyncIterator[bytes] | None = None


async def _nothing() -> None:
    return None


def _planned(plan: ImagePlan) -> None:
    """The request's record follows the plan it runs (its first, or a fallback's): the route
    that serves, what was dropped and mapped for it, the calls it takes."""
    ctx = context.current()
    ctx.route = plan.route
    ctx.dropped, ctx.mapped = list(plan.dropped), list(plan.mapped)
    ctx.upstream_calls = len(plan.calls)


@dataclass
class ImageService:
    """Image generations and edits, built once in the lifespan from the parts they use."""

    settings: Settings
    catalogs: CatalogHolder  # the catalog in force, read per request (a reload swaps it)
    upstream: Upstream
    fetcher: SafeFetcher
    hosted: HostedImages
    metering: Metering
    metrics: Metrics
    # Upstream keys out of every upstream-written string the client gets (an upstream may echo
    # its key into a revised prompt or a size).
    scrub: Scrubber
    # An edit's images encoded inline: a pool of its own, never the default executor.
    work: ImageWork = field(default_factory=lambda: ImageWork(2, 16))
    # Keeps every image answered for the console's gallery (None: MEDIAGATE_KEEP_OUTPUTS off).
    kept: Keeper | None = None

    @property
    def catalog(self) -> Catalog:
        return self.catalogs.current

    # --- The use case: plan, then answer ---------------------------------------------------

    def plan_generation(self, body: Any, base_url: str) -> ImageJob:
        """A generation request validated and planned for the model's first route."""
        catalog = self.catalog
        fallbacks = self._resolve(catalog, body.get("model") if isinstance(body, dict) else None)
        request = parse_generation(body)
        plan = plan_images(request, _first(fallbacks))
        return self._job(catalog, request, plan, base_url, fallbacks)

    async def plan_edit(self, form: FormData, base_url: str) -> ImageJob:
        """An edit from its multipart form, validated and planned; the form is closed if it is
        refused (and by `answer` once the answer, or its stream, is done)."""
        # The catalog read once, before the uploads are (a reload may land meanwhile).
        catalog = self.catalog
        try:
            fallbacks = self._resolve(catalog, form.get("model"))
            settings = self.settings
            fields, inputs = split_form(
                form, settings.edit_max_file_bytes, settings.edit_max_total_bytes
            )
            request = parse_edit(fields)
            plan = plan_images(request, _first(fallbacks), mask=inputs.mask is not None)
            edit = await _inline(
                EditImages(inputs.images, inputs.mask), plan.route.dialect, self.work
            )
        except BaseException:
            await form.close()
            raise
        return self._job(catalog, request, plan, base_url, fallbacks, edit)

    def plan_edit_fields(self, fields: dict[str, Any], base_url: str, mask: bool) -> ImageJob:
        """An edit's fields validated and planned without its images: a batch's edit line,
        judged at the batch's create (its images are fetched when the line runs)."""
        catalog = self.catalog
        fallbacks = self._resolve(catalog, fields.get("model"))
        request = parse_edit(fields)
        plan = plan_images(request, _first(fallbacks), mask=mask)
        return self._job(catalog, request, plan, base_url, fallbacks)

    # --- Planning ---------------------------------------------------------------------------

    def _resolve(self, catalog: Catalog, name: Any) -> tuple[list[Route], bool]:
        """The model's image routes in order, and whether fallbacks may drop parameters. The
        model is resolved before the rest is validated, so a bad request is still counted
        against the model it was for. A retired name with an alias is its successor's request
        from here on; the request's record keeps the alias (for its headers and log line)."""
        name = name or catalog.default_image_model
        if not isinstance(name, str):
            return [], True  # not a model name at all: the request's validation says so
        model, route, alias = catalog.lookup(name, "image")
        ctx = context.current()
        ctx.served_by(model.id, route)
        ctx.alias = alias
        rest = [catalog.routes[rid] for rid in model.routes[1:]]
        may_drop = self.settings.fallback_may_drop
        if model.fallback_may_drop is not None:
            may_drop = model.fallback_may_drop
        return [route, *(r for r in rest if r.kind == "image")], may_drop

    def _job(
        self,
        catalog: Catalog,
        request: ImageGenerationRequest | ImageEditRequest,
        plan: ImagePlan,
        base_url: str,
        fallbacks: tuple[list[Route], bool],
        edit: EditImages | None = None,
    ) -> ImageJob:
        routes, may_drop = fallbacks
        ctx = context.current()
        ctx.tier, ctx.quality, ctx.n = request.size, request.quality, request.n  # request log
        return ImageJob(
            model=ctx.model or "",
            alias=ctx.alias,
            plan=plan,
            catalog=catalog,
            dialect=get_dialect(plan.route.dialect),
            request=request,
            base_url=base_url,
            edit=edit,
            fallbacks=routes[1:],
            may_drop=may_drop,
            first_dropped=frozenset(plan.dropped),
        )

    # --- Admit, run, settle -----------------------------------------------------------------

    async def answer(
        self,
        policy: KeyPolicy,
        job: ImageJob,
        cleanup: Callable[[], Awaitable[None]] = _nothing,
        gate: Gate | None = None,
    ) -> ImagesAnswer:
        """The job admitted against the key's limits and budget (after the `gate` it passed
        before its body was read), run, and settled."""
        plan = job.plan
        # Reserved: the most the job can cost on any route it may end up on (priced, reserved
        # and billed alike, on the catalog its routes came from: `ImageJob.catalog`).
        estimates = self._estimates(job)
        estimate = max(estimates.values(), default=0.0)
        try:
            scope = _scope(policy, job.model, job.alias)
            ticket = await self.metering.admit(
                policy, scope, images=sum(plan.calls), estimate=estimate, gate=gate
            )
        except BaseException:
            await cleanup()
            raise
        ctx = context.current()
        _planned(plan)
        if self.settings.prompts_logged():
            ctx.prompt = plan.spec.prompt

        async def settle(images: int, usage: dict[str, Any] | None) -> None:
            # Billed on the route that served (a fallback may have changed it); failures cost 0.
            # Everything up to the booking is synchronous, so a request being cancelled (its
            # client hung up mid-stream) has decided its charge before its first await; the
            # booking itself runs shielded (Ticket.settle).
            route = job.route
            multiplier = job.catalog.multiplier(route)
            # Without a usage, a token-billed route is billed its own estimate.
            fallback = estimates.get(route.id, estimate)
            cost = self.cost(route, images, usage, fallback, multiplier)
            ctx.cost, ctx.images = cost, images
            if images and ticket.charge is None:
                self.metrics.images.labels(job.model, route.id).inc(images)
            await ticket.settle(Charge(job.model, cost, images=images))

        if not plan.spec.stream:
            try:
                result = await self._on_routes(job, self._run_route)
            except BaseException:
                ticket.settle_soon(Charge(job.model, 0.0))
                raise
            finally:
                await cleanup()
            await settle(result.count, result.body.get("usage"))
            if self.kept is not None:
                self._keep(self.kept, job, result.body["data"], ctx)
            return ImagesAnswer({}, body=result.body)
        # A stream's final images, kept once it settled (the kept outputs: MEDIAGATE_KEEP_OUTPUTS).
        made: list[dict[str, Any]] = []

        async def settle_and_keep(images: int, usage: dict[str, Any] | None) -> None:
            await settle(images, usage)
            if self.kept is not None and made:
                self._keep(self.kept, job, made, ctx)

        def noted(b64: str | LiftedB64) -> None:
            if self.kept is not None:
                made.append({"b64_json": b64})

        try:
            keepalive_s = self.settings.stream_keepalive_s
            if job.route.stream == "passthrough":
                response, exits = await self._on_routes(job, self._open_stream)
                if is_event_stream(response):
                    events = relay(response, exits, settle_and_keep, noted)
                else:
                    # The upstream ignored `stream` and answered JSON: its events, emulated.
                    work = _noting(self._from_json(job, response, exits), made)
                    events = emulate(job, work, keepalive_s, settle_and_keep)
            else:
                work = _noting(self._on_routes(job, self._run_route), made)
                events = emulate(job, work, keepalive_s, settle_and_keep)
        except BaseException:
            ticket.settle_soon(Charge(job.model, 0.0))
            await cleanup()
            raise
        ctx.streaming = True
        return ImagesAnswer(
            dict(_STREAM_HEADERS), events=_finally(events, ticket, job.model, cleanup)
        )

    def estimate(self, job: ImageJob) -> float:
        """The most the planned job can cost on any route it may end up on: what its admission
        reserves (also the console's playground's estimate)."""
        return max(self._estimates(job).values(), default=0.0)

    def _keep(
        self,
        kept: Keeper,
        job: ImageJob,
        data: list[dict[str, Any]],
        ctx: context.RequestContext,
    ) -> None:
        """The answer's images kept for the gallery, after the answer (in the background: the
        client never waits on it, nor fails with it). Each image bears its share of the cost."""
        row = {
            "request_id": ctx.request_id,
            "key": ctx.key_name,
            "team": ctx.team,
            "principal": ctx.principal,
            "model": job.model,
            "route": job.route.id,
            "size": ctx.tier,
            "quality": ctx.quality,
            "prompt": job.plan.spec.prompt if self.settings.prompts_logged() else None,
            "cost_micros": round((ctx.cost or 0.0) * 1_000_000 / max(len(data), 1)),
        }
        for item in data:
            kept.image(partial(self._kept_bytes, job, item), row)

    async def _kept_bytes(self, job: ImageJob, item: dict[str, Any]) -> tuple[bytes, str]:
        """An answered image's bytes: its base64 decoded, our hosted copy, or the upstream's
        link fetched (MEDIAGATE_IMAGE_URLS=passthrough)."""
        if "b64_json" in item:
            # A str, or a LiftedB64 (a view of the upstream answer's bytes): decoded alike.
            data = await asyncio.to_thread(image_bytes, item["b64_json"])
        else:
            url: str = item["url"]
            ours = f"{job.base_url}/v1/files/images/"
            hosted = await self.hosted.get(url[len(ours) :]) if url.startswith(ours) else None
            if hosted is not None:
                data = b"".join([chunk async for chunk in hosted.chunks])
            else:
                data, _ = await self.fetcher.fetch_image(url)
        return data, sniff_output_type(data) or "image/png"

    def _estimates(self, job: ImageJob) -> dict[str, float]:
        """The most the job can cost on each route it may end up on, by route id: a fallback
        may bill more (the enterprise group's multiplier, a token price after a per-call one)."""
        input_images = len(job.edit.files) if job.edit is not None else 0
        estimates: dict[str, float] = {}
        for route in [job.route, *job.fallbacks]:
            plan = job.plan if route is job.route else _plan_for(job, route)
            if isinstance(plan, str):
                continue  # the job cannot end there
            multiplier = job.catalog.multiplier(route)
            # The planned request is priced, not the fields sent: the chat dialect sends no
            # size, only the ratio marker standing for the size asked.
            estimates[route.id] = estimate_images(
                route.price,
                plan.calls,
                plan.spec.prompt,
                size=plan.size,
                quality=plan.spec.params.get("quality"),
                input_images=input_images,
                frames=gif_frames(plan),
                multiplier=multiplier,
            )
        return estimates

    def cost(
        self,
        route: Route,
        images: int,
        usage: dict[str, Any] | None,
        estimate: float,
        multiplier: float = 1.0,
    ) -> float:
        """What the images delivered cost; an unusable upstream usage is billed at the
        estimate (logged and counted, the images are still the client's)."""
        try:
            return actual_images(route.price, route.max_n, images, usage, estimate, multiplier)
        except UnusableUsage as exc:
            log.warning(
                "unusable upstream usage: booked the estimate",
                extra={"fields": {"route": route.id, "reason": str(exc)}},
            )
            self.metrics.usage_rejected.labels(route.id).inc()
            return actual_images(route.price, route.max_n, images, None, estimate, multiplier)

    async def _on_routes(self, job: ImageJob, attempt: Callable[[ImageJob], Awaitable[T]]) -> T:
        """`attempt` on the job's route, then on the model's next usable routes while a route
        fails in a way that surely cost nothing. The one fallback loop."""
        while True:
            try:
                return await attempt(job)
            except GatewayError as error:
                if not await self._fall_back(job, error):
                    raise

    async def _fall_back(self, job: ImageJob, error: GatewayError) -> bool:
        """ImagePlan the job for the model's next usable route after `error` on its current one.
        False when no route is left (or `error` may have cost something). Every route left or
        skipped is reported in x-mediagate-fallback."""
        if not job.fallbacks or not unserved(error):
            return False
        self.metrics.route_left(job.model, job.route.id, error.code or "upstream_error")
        while job.fallbacks:
            route = job.fallbacks.pop(0)
            plan = _plan_for(job, route)
            if isinstance(plan, str):
                self.metrics.route_left(job.model, route.id, plan)
                continue
            job.dialect = get_dialect(route.dialect)
            if job.edit is not None:
                job.edit = await _inline(job.edit, route.dialect, self.work)
            job.plan = plan
            _planned(plan)
            return True
        return False

    # --- One route --------------------------------------------------------------------------

    async def _run_route(self, job: ImageJob) -> ImagesResult:
        """All the job's upstream calls on its route, concurrently, merged into one
        ImagesResponse: the calls first, then each answer's images (read, fetched, hosted)."""
        route, plan = job.route, job.plan
        send = partial(self.upstream.send, route, paid=True, parse=True)
        requests = [job.dialect.build(plan.spec, n, job.edit) for n in plan.calls]
        sent: list[UpstreamAnswer | BaseException]
        if len(requests) == 1:  # the usual case: in this task, no frame or task between
            try:
                sent = [await send(requests[0])]
            except Exception as exc:
                sent = [exc]
        else:
            sent = await asyncio.gather(*map(send, requests), return_exceptions=True)
        outcomes = await _outcomes(
            [self._images(job, n, answer) for n, answer in zip(plan.calls, sent, strict=True)]
        )
        return self._merged(job, outcomes)

    def _merged(
        self,
        job: ImageJob,
        outcomes: list[tuple[UpstreamResult, list[dict[str, Any]]] | BaseException],
    ) -> ImagesResult:
        """The calls' outcomes as one ImagesResponse (or the error that stands for them)."""
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for error in failed:
            if not isinstance(error, Exception):
                raise error  # cancellation and the like are not ours to swallow
            if not isinstance(error, GatewayError):
                # A fault of ours after a paid call: logged whole, answered without its text.
                log.error("reading an upstream answer failed", exc_info=error)
        if not done:
            errors = [e if isinstance(e, GatewayError) else _internal() for e in failed]
            # The route is left for another only if none of its calls may have cost anything.
            raise next((e for e in errors if not unserved(e)), errors[0])

        if failed:
            # Images that were made (and paid for) are returned rather than thrown away.
            context.current().partial = (len(done), len(job.plan.calls))
        data = [item for _, items in done for item in items]
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if len(done) == 1:
            # Only the ImagesResponse fields the OpenAI schema has, and never an upstream key.
            extra = done[0][0].extra
            body.update({k: v for k, v in extra.items() if v == self.scrub(v)})
        body.update(_described(body, data))
        usage = sum_usage([result.usage for result, _ in done if result.usage])
        if usage:
            body["usage"] = usage
        return ImagesResult(body, len(data))

    async def _images(
        self, job: ImageJob, n: int, answer: UpstreamAnswer | BaseException
    ) -> tuple[UpstreamResult, list[dict[str, Any]]]:
        """One call's images, in the form the client asked for."""
        if isinstance(answer, BaseException):
            raise answer
        return await self._parsed(job, n, answer.payload)

    async def _parsed(
        self, job: ImageJob, n: int, payload: Any
    ) -> tuple[UpstreamResult, list[dict[str, Any]]]:
        try:
            result = job.dialect.parse(payload)
            images = result.images[:n]
            if len(images) == 1:  # the usual case, without a task
                items = [await self._item(job, images[0])]
            else:
                items = await asyncio.gather(*(self._item(job, image) for image in images))
        except GatewayError as error:
            # The upstream made (and charged for) this: no other route, and no retry, for it.
            raise maybe_paid(error) from None
        return result, list(items)

    async def _open_stream(self, job: ImageJob) -> tuple[UpstreamResponse, AsyncExitStack]:
        """The upstream's event stream, open (so its errors are plain HTTP errors and an
        unavailable route can still hand the job on); relayed later."""
        exits = AsyncExitStack()
        try:
            request = job.dialect.build(job.plan.spec, job.plan.calls[0], job.edit)
            stream = self.upstream.stream(job.route, request, paid=True)
            response = await exits.enter_async_context(stream)
        except BaseException:
            await exits.aclose()
            raise
        return response, exits

    async def _from_json(
        self, job: ImageJob, response: UpstreamResponse, exits: AsyncExitStack
    ) -> ImagesResult:
        """The result of a streaming call the upstream answered with plain JSON."""
        try:
            payload = await read_json(response, self.settings.upstream_max_bytes)
        finally:
            await exits.aclose()
        outcome = await asyncio.gather(
            self._parsed(job, job.plan.calls[0], payload), return_exceptions=True
        )
        return self._merged(job, list(outcome))

    async def _image_bytes(self, image: UpstreamImage) -> bytes:
        if image.b64 is not None:
            try:
                return image_bytes(image.b64)
            except ValueError as exc:
                raise invalid_image(exc) from None
        assert image.url is not None
        data, _ = await self.fetcher.fetch_image(image.url)
        return data

    async def _item(self, job: ImageJob, image: UpstreamImage) -> dict[str, Any]:
        """One `data[]` item in the form the client asked for. An image's base64 is checked
        (standard base64 of a known image format) before it is relayed and billed."""
        item: dict[str, Any] = {}
        if job.plan.spec.response_format == "b64_json":
            if image.b64 is not None:
                try:  # a lifted image is spliced into ours as it lay in the answer's bytes
                    item["b64_json"] = checked_image(image.b64)
                except InvalidImageData as exc:
                    raise invalid_image(exc) from None
            else:
                data = await self._image_bytes(image)
                item["b64_json"] = base64.b64encode(data).decode("ascii")
        elif image.url is not None and self.settings.image_urls == "passthrough":
            item["url"] = self.scrub(image.url)
        else:
            # Upstream links die within a day; the gateway keeps its own copy for the retention.
            data = await self._image_bytes(image)
            name = await self.hosted.put(data, sniff_output_type(data) or "image/png")
            item["url"] = f"{job.base_url}/v1/files/images/{name}"
        if image.revised_prompt:
            item["revised_prompt"] = self.scrub(image.revised_prompt)
        return item


def _scope(policy: KeyPolicy, model: str, alias: Alias | None) -> str:
    """The model name a key's scope is checked against: the model that serves, or, through an
    alias, the retired name the key may still list (and the name asked for, if neither)."""
    if alias is not None and not policy.allows(model):
        return alias.name
    return model


async def _outcomes(work: list[Awaitable[T]]) -> list[T | BaseException]:
    """`asyncio.gather(*work, return_exceptions=True)`, without a task of its own when there
    is one piece of work (the usual case: one upstream call, one image)."""
    if len(work) == 1:
        try:
            return [await work[0]]
        except Exception as exc:
            return [exc]
    return await asyncio.gather(*work, return_exceptions=True)


def _described(body: dict[str, Any], data: list[dict[str, Any]]) -> dict[str, str]:
    """`size` and `output_format` where the upstream did not say them (a route that picks the
    size itself, vip or web), from the images' own bytes when they all agree: what a streamed
    answer's completed events say too (images/streaming.py). Base64 images only."""
    if "size" in body and "output_format" in body:
        return {}
    heads = [image_head(item["b64_json"]) for item in data if "b64_json" in item]
    if not heads or len(heads) != len(data):
        return {}
    found: dict[str, str] = {}
    sizes = {image_size(head) for head in heads}
    if "size" not in body and len(sizes) == 1 and None not in sizes:
        found["size"] = sizes.pop() or ""
    formats = {FORMATS.get(sniff_output_type(head) or "") for head in heads}
    if "output_format" not in body and len(formats) == 1 and None not in formats:
        found["output_format"] = formats.pop() or ""
    return found


def _internal() -> GatewayError:
    """An unexpected fault after a call that may have been paid."""
    return maybe_paid(GatewayError("The gateway hit an internal error.", code="internal_error"))


def _first(fallbacks: tuple[list[Route], bool]) -> Route:
    if not fallbacks[0]:
        raise InvalidRequest("Invalid value for 'model': expected a string.", param="model")
    return fallbacks[0][0]


def _plan_for(job: ImageJob, route: Route) -> ImagePlan | str:
    """The job's plan on another route, or why that route cannot take it."""
    if job.plan.spec.stream and route.stream != job.route.stream:
        # A relayed stream cannot turn into an emulated one (or back) halfway.
        return "stream_mode"
    try:
        mask = job.edit is not None and job.edit.mask is not None
        plan = plan_images(job.request, route, mask=mask)
    except InvalidRequest:
        return "invalid"
    if not job.may_drop and set(plan.dropped) - job.first_dropped:
        return "would_drop"
    return plan


async def _inline(edit: EditImages, dialect_name: str, work: ImageWork) -> EditImages:
    """The edit with its images as data URLs too, when the dialect sends them inline."""
    dialect: Dialect = get_dialect(dialect_name)
    if not dialect.inline_images or edit.data_urls:
        return edit
    data_urls = await work.run(lambda: [i.data_url() for i in edit.files])
    return replace(edit, data_urls=data_urls)


async def _noting(work: Awaitable[ImagesResult], made: list[dict[str, Any]]) -> ImagesResult:
    """`work`'s result, its images noted in `made` (to keep once the stream settled)."""
    result = await work
    made.extend(item for item in result.body["data"] if "b64_json" in item or "url" in item)
    return result


async def _finally(
    events: AsyncIterator[bytes],
    ticket: Ticket,
    model: str,
    cleanup: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The stream's events; when it ends however it ends, a stream that never settled (its
    client left before its first byte) settles at 0 and the uploads are closed."""
    try:
        async for event in events:
            yield event
    finally:
        ticket.settle_soon(Charge(model, 0.0))  # 0 only if the stream never decided its charge
        await cleanup()

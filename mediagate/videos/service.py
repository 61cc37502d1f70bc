"""Video jobs: the one owner of each Videos API use case, over the upstream's async jobs and our
job store.

`VideoService.create` validates a request once (`mediagate.videos.spec`), admits it against the
client key's limits and budget (a reservation under the new job's id, held until the job ends),
starts the job upstream, records it and answers; `.remix` does the same from a source job it
reads once.

A video model may list several routes (Seedance: Dreamina's group, Dreamina in `default`, then
SeeDance2). The create goes to the first; a later one takes over only after a failure that
surely did no work (the paid rule, `mediagate.errors.unserved`: never after a timeout or a
broken answer), and only if it makes the video exactly as planned on the first route (the same
size, tier, seconds and shape, nothing more dropped when the operator forbids it, a price for
the tier): a request is never quietly mapped down to fit a fallback. The reservation is the
dearest of those candidates; the job is billed on the route that made it.

`.retrieve`, `.list`, `.delete` and `.content` act on jobs the caller owns. Each hands the HTTP
layer a result (`Video`, `VideoPage`, the deleted `VideoJob`, a streaming
upstream answer); the HTTP layer only translates requests and results. `.reconcile` is the
reconciler's poll of an unfinished job (`mediagate.videos.reconciler`), which may also end it.

The upstream shows a job only to the key that created it and knows it by its own id. So a job
is recorded (our id, upstream id, route, group, key fingerprint, owner, parameters) before the
client hears of it, and every later call finds the key through the record. Status changes are
compare-and-set: whichever replica or poller sees a job finish first records its final state
and cost, and settles the create's reservation with it, once; everyone else reads that record.
The same compare-and-set writes the job's webhook event to the store's outbox
(`mediagate.videos.webhooks`) when the job has a webhook target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mediagate import context
from mediagate.accounting.clients import KeyPolicy
from mediagate.accounting.metering import VIDEO_RESERVATION_TTL_S, Gate, Metering, Ticket
from mediagate.accounting.pricing import UnusableUsage, video_cost, video_estimate
from mediagate.catalog import (
    Catalog,
    CatalogHolder,
    Model,
    Route,
    from_snapshot,
    route_snapshot,
)
from mediagate.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    Scrubber,
    UpstreamError,
    unserved,
)
from mediagate.imagedata import ImageWork
from mediagate.observability.metrics import Metrics
from mediagate.settings import Settings
from mediagate.stores.jobs import TERMINAL, JobStore, Order, UnknownCursor, VideoJob
from mediagate.stores.kept import Keeper
from mediagate.stores.ledger import Charge
from mediagate.upstream.dialects import UpstreamRequest, video_dialect
from mediagate.upstream.dialects.videos import (
    Reference,
    UpstreamVideo,
    VideoDialect,
    VideoSpec,
)
from mediagate.upstream.fetcher import SafeFetcher
from mediagate.upstream.sender import Upstream, UpstreamAnswer
from mediagate.upstream.transport import UpstreamResponse
from mediagate.videos import reference as references
from mediagate.videos.records import is_video_id, job_changes, new_video_id
from mediagate.videos.spec import (
    ReferenceInput,
    VideoPlan,
    VideoRequest,
    check_remix,
    plan_video,
    video_policy,
)
from mediagate.videos.webhooks import video_event

log = logging.getLogger("mediagate")

_CAS_ATTEMPTS = 8
_LIST_REFRESH_CONCURRENCY = 8
_ASKED_KEEP = 10_000  # jobs whose last ask is remembered before old entries are pruned
VARIANTS = ("video", "thumbnail", "spritesheet")


@dataclass(frozen=True)
class Video:
    """A use case's answer: the job as recorded now, and the OpenAI headers its response
    carries (`openai-poll-after-ms`); what the gateway did is on the request's record."""

    job: VideoJob
    headers: dict[str, str]


@dataclass(frozen=True)
class VideoPage:
    """One page of the caller's jobs, each as fresh as the upstream could say."""

    jobs: list[VideoJob]
    has_more: bool


def video_not_found(video_id: str) -> NotFound:
    return NotFound(
        f"No video found with id '{video_id}'. It may have been deleted or have expired.",
        code="video_not_found",
    )


def _route_gone(job: VideoJob) -> UpstreamError:
    return UpstreamError(
        f"The route {job.route} that made this video is no longer configured.",
        code="route_unavailable",
    )


def _dialect(route: Route) -> VideoDialect:
    return video_dialect(route.dialect)


# A route of the model that may make the create, planned, or why it may not (reported in
# x-mediagate-fallback when the create passes it by).
Candidate = tuple[Route, VideoPlan | str]


def not_priced(model: str, tier: str) -> InvalidRequest:
    """A tier the route makes but has no price for: not made until the operator prices it."""
    return InvalidRequest(
        f"Invalid value for 'size': {model} at {tier} is not offered until it is priced "
        "(the upstream publishes no rate for it; an operator sets one in the catalog).",
        param="size",
        code="resolution_not_priced",
    )


@dataclass
class VideoService:
    """The Videos API's use cases, built once in the lifespan from the parts they use."""

    settings: Settings
    catalogs: CatalogHolder  # the catalog in force, read per request (a reload swaps it)
    upstream: Upstream
    fetcher: SafeFetcher
    jobs: JobStore
    metering: Metering
    metrics: Metrics
    scrub: Scrubber
    # Where a client key's video events go (None: no webhook for its jobs).
    webhook_for: Callable[[str], str | None] = field(default=lambda owner: None)
    # When each job was last asked of the upstream (monotonic), and the asks in flight: a job
    # is asked at most once per video_poll_after_ms by this replica, however many retrieves
    # and lists come in (each asks, or shares an ask, or answers the job as last recorded).
    # Decoding and fitting references: a small pool of its own, never the default executor.
    work: ImageWork = field(default_factory=lambda: ImageWork(2, 16))
    clock: Callable[[], float] = time.monotonic
    # Keeps every completed video's content for the console's gallery (None: not kept).
    kept: Keeper | None = None
    _asked: dict[str, float] = field(default_factory=dict, repr=False)
    _asking: dict[str, asyncio.Task[VideoJob]] = field(default_factory=dict, repr=False)

    @property
    def catalog(self) -> Catalog:
        return self.catalogs.current

    # --- The use cases ----------------------------------------------------------------------

    async def create(
        self,
        policy: KeyPolicy,
        request: VideoRequest,
        gate: Gate | None = None,
        *,
        job_id: str | None = None,
    ) -> Video:
        """A new job: validated, admitted (after the `gate` it passed before its body was
        read), started upstream, recorded, answered. `job_id`: the id it is made under (a batch
        line names its job before sending, so a crash cannot lose it); a new one by default."""
        prepared = self._prepare(request)
        model, name, candidates, multipliers = prepared
        job_id = job_id or new_video_id()
        # Reserved: the most the video can cost on any route that may make it (a tier the
        # first route has no price for is a 400 there, before anything is sent).
        usable = [(r, multipliers[r.id], p.spec) for r, p in candidates if not isinstance(p, str)]
        ticket = await self._admit(policy, model, usable, job_id, gate)
        try:
            job = await self._start(
                policy.name, model, name, candidates, multipliers, request, job_id
            )
        except BaseException:
            ticket.settle_soon(Charge(model, 0.0))
            raise
        ctx = context.current()
        ctx.job_id, ctx.upstream_task_id = job.id, job.upstream_id  # the request log's row
        await ticket.release()  # the reservation stays until the job ends
        return self._answer(job)

    def check(self, policy: KeyPolicy, request: VideoRequest) -> float:
        """What `create` would judge of the request before sending anything (the model, the key
        may use it, the plan on its routes, a price for its tier), and the most it can cost:
        a batch's validation and estimate. Sends and reserves nothing."""
        model, _, candidates, multipliers = self._prepare(request)
        policy.require(model)
        usable = [(r, multipliers[r.id], p.spec) for r, p in candidates if not isinstance(p, str)]
        return self._estimate(model, usable)

    def _prepare(self, request: VideoRequest) -> tuple[str, str, list[Candidate], dict[str, float]]:
        """The create resolved and planned: the model served, the name asked, the candidate
        routes with their plans (a fallback's plan may be the reason it cannot serve), and each
        route's group multiplier."""
        name = request.fields.get("model") or self.catalog.default_video_model
        if not isinstance(name, str):
            raise InvalidRequest("Invalid 'model': expected a string.", param="model")
        # A retired name (sora-2, sora-2-pro) is its successor's request from here on; the
        # request's record keeps the alias for its headers (x-mediagate-alias, Deprecation).
        catalog = self.catalog  # one catalog for the whole create, whatever a reload does
        served, route, alias = catalog.lookup(name, "video")
        model = served.id
        ctx = context.current()
        ctx.served_by(model, route)
        ctx.alias = alias
        defaults = alias.params.get(model) if alias is not None else None
        # Validated and mapped once and first, on the first route (nothing is reserved for a
        # bad request), then metered.
        plan = self._plan(catalog, request, route, model, defaults)
        fallbacks = self._fallbacks(catalog, served, (route, plan), request, defaults)
        candidates: list[Candidate] = [(route, plan), *fallbacks]
        # Each route's group multiplier from the same catalog (no await since the lookup): what
        # the reservation and, through the job's route snapshot, the bill use.
        multipliers = {r.id: catalog.multiplier(r) for r, _ in candidates}
        return model, name, candidates, multipliers

    def _plan(
        self,
        catalog: Catalog,
        request: VideoRequest,
        route: Route,
        model: str,
        defaults: dict[str, Any] | None,
    ) -> VideoPlan:
        return plan_video(
            request.fields,
            route,
            model,
            known=catalog.video_options,
            reference=request.reference is not None,
            defaults=defaults,
        )

    def _fallbacks(
        self,
        catalog: Catalog,
        served: Model,
        planned: tuple[Route, VideoPlan],
        request: VideoRequest,
        defaults: dict[str, Any] | None,
    ) -> list[Candidate]:
        """The model's later routes, each planned for the request, or why it cannot take over:
        `invalid` (it refuses the request), `would_map` (it would make another size, tier,
        length or shape: 4K has no SeeDance2 tier), `not_priced`, `would_drop` (it would drop a
        field the first route keeps, where the operator forbids that)."""
        may_drop = self.settings.fallback_may_drop
        if served.fallback_may_drop is not None:
            may_drop = served.fallback_may_drop
        first_route, first = planned
        shape = (first.spec, video_policy(first_route).frame_ratio)
        found: list[Candidate] = []
        for rid in served.routes[1:]:
            route = catalog.routes[rid]
            if route.video is None:
                continue
            try:
                plan = self._plan(catalog, request, route, served.id, defaults)
            except InvalidRequest:
                found.append((route, "invalid"))
                continue
            policy = video_policy(route)
            if (replace(plan.spec, options=first.spec.options), policy.frame_ratio) != shape:
                found.append((route, "would_map"))
            elif not policy.priced(policy.tier(plan.spec.size)):
                found.append((route, "not_priced"))
            elif not may_drop and set(plan.dropped) - set(first.dropped):
                found.append((route, "would_drop"))
            else:
                found.append((route, plan))
        return found

    async def remix(
        self, policy: KeyPolicy, video_id: str, body: Any, gate: Gate | None = None
    ) -> Video:
        """A new job from one of the caller's videos, under the key that made the source."""
        source = await self._owned(policy.name, video_id)
        # New work: the route as the catalog has it now (its price today), not the source's
        # snapshot.
        route = self._current_route(source)
        multiplier = self.catalog.multiplier(route)
        prompt = check_remix(body, route, source.model)
        if source.status != "completed" or source.result_url is None:
            raise InvalidRequest(
                f"Video '{video_id}' cannot be remixed until it has completed"
                + (" (its upstream gave no link to continue from)." if source.final else "."),
                code="video_not_ready",
            )
        info = video_policy(route).sizes.get(source.size)
        spec = VideoSpec(
            prompt=prompt,
            size=source.size,
            seconds=self._remix_seconds(source, route),
            ratio=info.ratio if info else None,
            resolution=info.resolution if info else None,
            source_url=source.result_url,
        )
        job_id = new_video_id()
        ticket = await self._admit(policy, source.model, [(route, multiplier, spec)], job_id, gate)
        try:
            job = await self._start_remix(source, (route, multiplier), spec, job_id)
            ctx = context.current()  # the request log's row
            ctx.job_id, ctx.upstream_task_id = job.id, job.upstream_id
        except BaseException:
            ticket.settle_soon(Charge(source.model, 0.0))
            raise
        await ticket.release()
        return self._answer(job)

    def _remix_seconds(self, source: VideoJob, route: Route) -> int:
        """A remix's length: the source's for an edit; for a continuation the shortest total
        the route makes beyond the source (a 400 naming a longer model when it makes none)."""
        policy = video_policy(route)
        if policy.remix != "continue":
            return source.seconds
        longer = [s for s in policy.seconds if s > source.seconds]
        if longer:
            return min(longer)
        others = sorted(
            (max(other.video.seconds), model.id)
            for model in self.catalog.models.values()
            for other in [self.catalog.routes[model.routes[0]]]
            if other.video is not None
            and other.dialect == route.dialect
            and other.group == route.group
            and max(other.video.seconds) > source.seconds
        )
        hint = f" (continue it with {others[0][1]}: create with that model)" if others else ""
        raise InvalidRequest(
            f"{source.model} makes at most {max(policy.seconds)} s, so it cannot continue a "
            f"{source.seconds} s clip{hint}.",
            code="remix_unsupported",
        )

    async def retrieve(self, owner: str, video_id: str) -> Video:
        """One of the caller's jobs as the upstream sees it now, recorded."""
        job = await self._owned(owner, video_id)
        try:
            return self._answer(await self._refresh(job))
        except NotFound:
            if job.status != "failed":
                raise
            # A failed job stays on record (with why) after the upstream forgot it, e.g. one
            # the reconciler ended because the upstream had lost it.
            return self._answer(job)

    async def list(self, owner: str, *, after: str | None, limit: int, order: Order) -> VideoPage:
        """The caller's jobs, in creation order after the cursor, unfinished ones refreshed."""
        try:
            jobs, has_more = await self.jobs.list(owner, after=after, limit=limit, order=order)
        except UnknownCursor:
            raise InvalidRequest(
                f"Invalid 'after': '{after}' is not one of your videos.", param="after"
            ) from None
        gate = asyncio.Semaphore(_LIST_REFRESH_CONCURRENCY)

        async def fresh(job: VideoJob) -> VideoJob:
            # A listing shows unfinished jobs as they are now; one that cannot be asked keeps
            # its last known state rather than failing the whole page.
            if job.status in TERMINAL:
                return job
            async with gate:
                try:
                    return await self._refresh(job)
                except GatewayError:
                    return job

        return VideoPage(list(await asyncio.gather(*(fresh(job) for job in jobs))), has_more)

    async def delete(self, owner: str, video_id: str) -> VideoJob:
        """The job deleted upstream and hidden from its owner; the record stays (it was paid
        for)."""
        job = await self._owned(owner, video_id)
        route = self._route(job)
        request = _dialect(route).build_delete(route, job.upstream_id)
        if request is not None:  # else the upstream has no delete: the job is hidden here
            with contextlib.suppress(NotFound):  # the upstream already forgot it: intent met
                await self._send_bound(job, route, request)
        for _ in range(_CAS_ATTEMPTS):
            now = time.time()
            changes = {"deleted_at": int(now), "updated_at": now}
            done = await self.jobs.update(job.id, job.status, changes)
            if done is not None:
                return done
            latest = await self.jobs.get(job.id)
            if latest is None or latest.deleted_at is not None:
                raise video_not_found(video_id)
            job = latest
        raise UpstreamError("The video changed too often to delete; try again.", code="conflict")

    async def content(
        self, owner: str, video_id: str, variant: str, headers: dict[str, str]
    ) -> UpstreamResponse:
        """The upstream's streaming answer for a job's file (200, 206 or 416), with `headers`
        (Range and the like) passed on; the caller closes it."""
        if variant not in VARIANTS:
            raise InvalidRequest(
                f"Invalid 'variant': '{variant}'. Expected one of {', '.join(VARIANTS)}.",
                param="variant",
            )
        job = await self._owned(owner, video_id)
        route = self._route(job)
        if variant not in video_policy(route).variants:
            raise NotFound(
                f"{job.model} makes no {variant} for its videos; only "
                f"{', '.join(video_policy(route).variants)}.",
                param="variant",
                code="variant_not_available",
            )
        if not job.final:
            # The record says it is still being made: the upstream has nothing to give yet, and
            # is not asked (a client polls retrieve until `completed`, then downloads).
            raise InvalidRequest(
                f"Video '{video_id}' is not ready: it is {job.status}. Retrieve it until its "
                "status is completed, then download its content.",
                code="video_not_ready",
            )
        request = _dialect(route).build_content(route, job.upstream_id, variant, headers)
        if request is None:
            # The route's result is a signed link: fetched under the SSRF rules, without any
            # upstream key (the object store refuses one).
            if job.result_url is None:
                raise InvalidRequest(
                    f"Video '{video_id}' has no content yet (status {job.status}).",
                    code="video_not_ready",
                )
            return await self.fetcher.open_stream(job.result_url, headers)
        answer = await self._send_bound(
            job, route, request, passthrough=frozenset({416}), stream=True
        )
        return answer.response

    async def reconcile(self, job: VideoJob) -> VideoJob:
        """An unfinished job brought up to date for the reconciler: refreshed from its upstream
        like a client's poll, or ended as failed (cost 0) if the upstream no longer knows it or
        it is past its deadline."""
        deadline_s = self.settings.video_job_deadline_s
        if time.time() - job.created_at > deadline_s:
            message = f"The upstream did not finish the video within {deadline_s:.0f} s."
            return await self._give_up(job, "video_deadline_exceeded", message)
        try:
            # The reconciler keeps its own pace (its interval), not the clients' poll pace.
            return await self._refresh(job, interval_s=0)
        except NotFound:
            return await self._give_up(
                job, "video_upstream_lost", "The upstream no longer knows this video."
            )

    # --- Jobs and routes --------------------------------------------------------------------

    async def _owned(self, owner: str, video_id: str) -> VideoJob:
        """The caller's job, or a 404: another client's job does not exist as far as they know.
        The request is labelled with the job's model and route."""
        job = await self.jobs.get(video_id) if is_video_id(video_id) else None
        if job is not None:
            context.current().job_id = job.id
        if job is None or job.owner != owner or job.deleted_at is not None:
            raise video_not_found(video_id)
        route = self._started_on(job)
        if route is not None:
            context.current().served_by(job.model, route[0])
        return job

    def _started_on(self, job: VideoJob) -> tuple[Route, float] | None:
        """The route the job started on and its group's multiplier: its record's snapshot, so
        a running job keeps its route and price across catalog reloads; for a record made
        before snapshots were kept, the catalog's route of that id now (None if gone)."""
        # An unreadable snapshot: the route as the catalog has it now, rather than a job that
        # can never be polled or billed again.
        started = from_snapshot(job.route_snapshot) if job.route_snapshot is not None else None
        if started is not None:
            return started
        route = self.catalog.routes.get(job.route)
        return None if route is None else (route, self.catalog.multiplier(route))

    def _priced(self, job: VideoJob) -> tuple[Route, float]:
        """The route to poll, fetch and bill a job on (the one it started on) and its
        multiplier."""
        started = self._started_on(job)
        if started is None:
            raise _route_gone(job)
        return started

    def _route(self, job: VideoJob) -> Route:
        return self._priced(job)[0]

    def _current_route(self, job: VideoJob) -> Route:
        """The job's route as the catalog in force has it (for new work from the job)."""
        route = self.catalog.routes.get(job.route)
        if route is None:
            raise _route_gone(job)
        return route

    def _poll_interval_s(self, job: VideoJob) -> float:
        """The least time between two status asks of a job: MEDIAGATE_VIDEO_POLL_OVERRIDE_MS if
        set, else its route's (catalog), else MEDIAGATE_VIDEO_POLL_AFTER_MS."""
        if self.settings.video_poll_override_ms is not None:
            return self.settings.video_poll_override_ms / 1000
        started = self._started_on(job)
        route = started[0] if started is not None else None
        given = route.video.poll_interval_s if route is not None and route.video else None
        return self.settings.video_poll_after_ms / 1000 if given is None else given

    def _answer(self, job: VideoJob) -> Video:
        headers: dict[str, str] = {}
        if not job.final:
            # create_and_poll sleeps this long between polls instead of its default second.
            headers["openai-poll-after-ms"] = str(round(self._poll_interval_s(job) * 1000))
        return Video(job, headers)

    # --- Admission and settlement -----------------------------------------------------------

    async def _admit(
        self,
        policy: KeyPolicy,
        model: str,
        candidates: Sequence[tuple[Route, float, VideoSpec]],
        job_id: str,
        gate: Gate | None = None,
    ) -> Ticket:
        """The key's limits checked and the most the video can cost on any of the `candidates`
        (the routes that may make it, each with its group's multiplier and what it would be
        sent) reserved under the job's id, so whichever replica sees the job finish can settle
        it. A candidate without a price for the video's tier is a 400: never a free, unbudgeted
        video."""
        estimate = self._estimate(model, candidates)
        # The request log's row: what was asked (of the first route), what is reserved.
        first_route, _, asked = candidates[0]
        ctx = context.current()
        ctx.tier, ctx.seconds = video_policy(first_route).tier(asked.size), asked.seconds
        ctx.reserved = estimate
        if self.settings.prompts_logged():
            ctx.prompt = asked.prompt
        return await self.metering.admit(
            policy,
            model,
            images=0,
            estimate=estimate,
            reservation=job_id,
            reservation_ttl_s=VIDEO_RESERVATION_TTL_S,
            gate=gate,
        )

    def _estimate(self, model: str, candidates: Sequence[tuple[Route, float, VideoSpec]]) -> float:
        """The most the video can cost on any of the `candidates`; a candidate without a price
        for the video's tier is a 400."""
        estimate = 0.0
        for route, multiplier, spec in candidates:
            video = video_policy(route)
            tier = video.tier(spec.size)
            bound = video_estimate(video.price, tier, spec.seconds)
            if bound is None:
                raise not_priced(model, tier)
            estimate = max(estimate, bound * multiplier)
        return estimate

    async def _finished(self, job: VideoJob) -> None:
        """Runs once per job, in whichever process won the final compare-and-set: the job's
        cost (0 if it failed) is booked against the reservation its create took, under the
        job's id."""
        metrics = self.metrics
        metrics.videos.labels(job.model, job.route, job.status).inc()
        seconds = job.seconds if job.status == "completed" else 0
        charge = Charge(
            job.model,
            job.cost or 0.0,
            video_seconds=seconds,
            team=self.metering.key_team(job.owner) or "",
            route=job.route or "",
        )
        if await self.metering.ledger.settle(job.owner, job.id, charge) and charge.cost:
            metrics.cost.labels(job.owner, job.model).inc(charge.cost)
        if seconds:
            metrics.video_seconds.labels(job.model, job.route).inc(seconds)
            if self.kept is not None:
                self.kept.video(self._content_chunks(job), self._kept_row(job))
        log.info(
            "video finished",
            extra={
                "fields": {
                    "video_id": job.id,
                    "key": job.owner,
                    "model": job.model,
                    "asked": job.asked,
                    "route": job.route,
                    "status": job.status,
                    "seconds": job.seconds,
                    "size": job.size,
                    "cost_usd": job.cost,
                }
            },
        )

    def _kept_row(self, job: VideoJob) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "key": job.owner,
            "team": self.metering.key_team(job.owner),
            "model": job.model,
            "route": job.route,
            "size": job.size,
            "seconds": job.seconds,
            "prompt": job.prompt if self.settings.prompts_logged() else None,
            "cost_micros": round((job.cost or 0.0) * 1_000_000),
            "upstream_expires_at": job.expires_at,
        }

    async def _content_chunks(self, job: VideoJob) -> AsyncIterator[bytes]:
        """A completed job's video, through the same upstream fetch as its content route."""
        response = await self.content(job.owner, job.id, "video", {})
        try:
            if response.status_code != 200:
                raise UpstreamError(
                    f"The upstream answered {response.status_code} for the video's content."
                )
            async for chunk in response.aiter_bytes():
                yield chunk
        finally:
            await response.aclose()

    # --- Upstream calls and the record ------------------------------------------------------

    async def _start(
        self,
        owner: str,
        model: str,
        asked: str,
        candidates: Sequence[Candidate],
        multipliers: dict[str, float],
        request: VideoRequest,
        job_id: str,
    ) -> VideoJob:
        """The job created upstream (with its reference, fitted) on the first of the
        `candidates` that takes it, and recorded with that route and its group's multiplier
        (`multipliers`, by route id, as admitted). The first is planned; a later one is tried
        only after a failure that surely did no work."""
        route, first = candidates[0]
        assert not isinstance(first, str), "the first route is the one planned"
        spec = first.spec
        ctx = context.current()  # what the route's normalisation did (mediagate.http.headers)
        ctx.dropped, ctx.mapped = list(first.dropped), list(first.mapped)
        reference: Reference | None = None
        note = None
        if request.reference is not None:
            data = await self._reference_bytes(request.reference)
            max_pixels = self.settings.video_reference_max_pixels
            assert route.video is not None, "the catalog gives every video route a policy"
            reference, note = await self.work.run(
                references.prepare,
                data,
                spec.size,
                fitting=request.fit_reference and self.settings.video_fit_reference,
                max_pixels=max_pixels,
                cap=references.decode_cap(list(route.video.sizes), max_pixels),
            )
        created, route, plan = await self._create_on_routes(model, candidates, reference, note)
        spec = plan.spec
        described = None
        if reference is not None:
            described = f"{reference.content_type} {reference.width}x{reference.height}"
            described += " (fitted)" if note else ""
        job = await self._open(
            created,
            (route, multipliers[route.id]),
            spec,
            job_id=job_id,
            owner=owner,
            model=model,
            asked=asked,
            group=route.group,
            key_fp=created.key_fingerprint,
            reference=described,
        )
        return job

    async def _create_on_routes(
        self,
        model: str,
        candidates: Sequence[Candidate],
        reference: Reference | None,
        note: str | None,
    ) -> tuple[UpstreamAnswer, Route, VideoPlan]:
        """The create sent on the first candidate, then on the next usable ones while a route
        fails in a way that surely cost nothing: the upstream's answer, the route that took it
        and its plan. Every route left or passed by is in x-mediagate-fallback."""
        ctx = context.current()
        left = deque(candidates)
        while True:
            route, plan = left.popleft()
            assert not isinstance(plan, str), "a create only moves on to a usable route"
            # The request's record follows the route it is on (mediagate.http.headers).
            ctx.served_by(model, route)
            ctx.dropped, ctx.mapped = list(plan.dropped), list(plan.mapped)
            if note:
                ctx.mapped.append(note)
            # Any key of the group may create the job (a refused one is skipped); the job
            # stays bound to the one that did.
            request = _dialect(route).build_create(route, plan.spec, reference)
            try:
                created = await self.upstream.send(route, request, paid=True, parse=True)
            except GatewayError as error:
                # As the image fallback does: a route is left only after a failure that surely
                # cost nothing, and only while another route is listed (the last failure is the
                # answer itself); the routes passed by say why.
                if not left or not unserved(error):
                    raise
                self.metrics.route_left(model, route.id, error.code or "upstream_error")
                while left and isinstance(left[0][1], str):
                    other, why = left.popleft()
                    self.metrics.route_left(model, other.id, str(why))
                if not left:
                    raise
                continue
            return created, route, plan

    async def _start_remix(
        self, source: VideoJob, priced: tuple[Route, float], spec: VideoSpec, job_id: str
    ) -> VideoJob:
        """The remix (a continuation or an edit of the source clip) created upstream, under the
        source's key, and recorded."""
        route = priced[0]
        dialect = _dialect(route)
        request = dialect.build_remix(route, source.upstream_id, spec)
        if request is None:
            raise InvalidRequest(f"{source.model} cannot remix a video.", code="remix_unsupported")
        answer = await self._send_bound(source, route, request, paid=True, parse=True)
        return await self._open(
            answer,
            priced,
            spec,
            job_id=job_id,
            owner=source.owner,
            model=source.model,
            asked=source.asked,  # shown as the source is
            group=source.group,
            key_fp=source.key_fp,  # the remix lives under the source's key too
            remixed_from=source.id,
        )

    async def _open(
        self,
        created: UpstreamAnswer,
        priced: tuple[Route, float],
        spec: VideoSpec,
        *,
        job_id: str,
        owner: str,
        model: str,
        asked: str | None,
        group: str,
        key_fp: str,
        reference: str | None = None,
        remixed_from: str | None = None,
    ) -> VideoJob:
        """The job the upstream's create (or remix) answer starts, under our `job_id`, bound to
        the key `key_fp` of `group` that made it: recorded before the client hears of it, then
        moved on to that answer. The one place a new VideoJob is made; it keeps `priced` (the
        route and its group's multiplier as admitted) as its route snapshot."""
        route, multiplier = priced
        video = _dialect(route).parse(created.payload, route, time.time())
        now = time.time()
        job = VideoJob(
            id=job_id,
            upstream_id=video.id,
            owner=owner,
            model=model,
            route=route.id,
            group=group,
            key_fp=key_fp,
            prompt=spec.prompt,
            size=spec.size,
            seconds=spec.seconds,
            status="queued",
            created_at=int(now),
            updated_at=now,
            reference=reference,
            remixed_from=remixed_from,
            asked=asked,
            route_snapshot=route_snapshot(route, multiplier),
        )
        await self._insert(job)
        return await self._record(job, video)

    async def _reference_bytes(self, given: ReferenceInput) -> bytes:
        cap = self.settings.video_reference_max_bytes
        if given.data is not None:
            return given.data
        url = given.image_url or ""
        inline = references.decode_data_url(url, cap)
        if inline is not None:
            return inline
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(
                "input_reference.image_url must be an http(s) URL or a data:image/...;base64 URL.",
                param="input_reference",
            )
        # The same rules as upstream image links: public addresses only, capped, images only.
        data = await self.fetcher.fetch_given(url, "input_reference", "input_reference.image_url")
        if len(data) > cap:
            raise references.too_large(cap)
        return data

    async def _insert(self, job: VideoJob) -> None:
        """Record a job the upstream accepted, before the client hears of it."""
        try:
            await self.jobs.insert(job)
        except GatewayError:
            # The upstream is making (and charging for) a video nobody can reach: say which.
            log.error(
                "video job not recorded",
                extra={"fields": {"upstream_id": job.upstream_id, "route": job.route}},
            )
            raise

    async def _refresh(self, job: VideoJob, interval_s: float | None = None) -> VideoJob:
        """The job as the upstream sees it now, recorded; as last recorded when it was asked
        less than `interval_s` ago (default: the route's poll interval, else
        video_poll_after_ms: a retrieve or list storm is not an upstream one). An ask already
        in flight is shared."""
        interval = self._poll_interval_s(job) if interval_s is None else interval_s
        asking = self._asking.get(job.id)
        if asking is not None:
            return await asyncio.shield(asking)
        now = self.clock()
        asked = self._asked.get(job.id)
        if asked is not None and now - asked < interval:
            return job
        if len(self._asked) > _ASKED_KEEP:
            self._asked = {k: t for k, t in self._asked.items() if now - t < interval}
        self._asked[job.id] = now
        task = asyncio.ensure_future(self._ask(job))
        self._asking[job.id] = task
        task.add_done_callback(self._asked_done(job.id))
        return await asyncio.shield(task)

    def _asked_done(self, job_id: str) -> Callable[[asyncio.Task[VideoJob]], None]:
        def done(task: asyncio.Task[VideoJob]) -> None:
            self._asking.pop(job_id, None)
            if not task.cancelled():
                task.exception()  # retrieved: every waiter may have gone away

        return done

    async def _ask(self, job: VideoJob) -> VideoJob:
        route = self._route(job)
        dialect = _dialect(route)
        answer = await self._send_bound(
            job, route, dialect.build_status(route, job.upstream_id), parse=True
        )
        return await self._record(job, dialect.parse(answer.payload, route, time.time()))

    async def _send_bound(
        self,
        job: VideoJob,
        route: Route,
        request: UpstreamRequest,
        *,
        paid: bool = False,
        parse: bool = False,
        stream: bool = False,
        passthrough: frozenset[int] = frozenset(),
    ) -> UpstreamAnswer:
        """A call about `job` (or from it, a remix) under the upstream key that created it:
        the upstream shows a job to no other key. Its 404 is the video's."""
        key = self.upstream.keys.by_fingerprint(job.group, job.key_fp)
        return await self.upstream.send(
            route,
            request,
            paid=paid,
            key=key,
            parse=parse,
            stream=stream,
            not_found=video_not_found(job.id),
            passthrough=passthrough,
        )

    async def _give_up(self, job: VideoJob, code: str, message: str) -> VideoJob:
        log.warning(
            "video ended by the reconciler", extra={"fields": {"video_id": job.id, "code": code}}
        )
        error = {"code": code, "message": message}
        failed = UpstreamVideo(job.upstream_id, "failed", job.progress, error=error)
        return await self._record(job, failed)

    async def _record(self, job: VideoJob, video: UpstreamVideo) -> VideoJob:
        """Our record after the upstream's latest answer, changed by compare-and-set; the
        winner of the final change settles the job."""
        video = self._scrubbed(video)
        for _ in range(_CAS_ATTEMPTS):
            if job.final:
                return job  # the final state was recorded once; nothing overrides it
            changes = job_changes(job, video, time.time())
            if not changes:
                return job
            if changes.get("status") == "completed":
                # (A failure needs no route: a job whose route is gone can still be ended.)
                changes["cost"] = self._cost(job, video)
            elif changes.get("status") == "failed":
                changes["cost"] = 0.0
            event = None
            if changes.get("status") in TERMINAL:
                url = self.webhook_for(job.owner)
                if url:
                    event = video_event(job.id, changes["status"], url, changes["updated_at"])
            won = await self.jobs.update(job.id, job.status, changes, event=event)
            if won is not None:
                if won.final:
                    # A task of its own, awaited shielded and drained at shutdown: a poll or
                    # a reconciler round cancelled now must not leave the bill unbooked.
                    settling = asyncio.create_task(self._finished(won))
                    self.metering.pending.add(settling)
                    settling.add_done_callback(self.metering.pending.discard)
                    await asyncio.shield(settling)
                return won
            latest = await self.jobs.get(job.id)  # someone else moved it first: start from theirs
            if latest is None:
                raise video_not_found(job.id)
            job = latest
        return job

    def _cost(self, job: VideoJob, video: UpstreamVideo) -> float | None:
        """What a completed job costs, from its route's price and what the upstream reported
        (its usage tokens, the seconds it made)."""
        route, multiplier = self._priced(job)
        policy = video_policy(route)
        tier = policy.tier(job.size)
        # A remix's usage counts its input video too: the longest the route makes bounds it.
        bound = job.seconds + (max(policy.seconds) if job.remixed_from is not None else 0)
        try:
            cost = video_cost(
                policy.price,
                tier,
                job.seconds,
                output_tokens=video.output_tokens,
                actual_seconds=video.actual_seconds,
                input_video=job.remixed_from is not None,
                bound_seconds=bound,
            )
        except UnusableUsage as exc:
            log.warning(
                "unusable upstream usage: booked the estimate",
                extra={"fields": {"route": route.id, "video_id": job.id, "reason": str(exc)}},
            )
            self.metrics.usage_rejected.labels(route.id).inc()
            cost = video_estimate(policy.price, tier, job.seconds)
        return None if cost is None else round(cost * multiplier, 6)

    def _scrubbed(self, video: UpstreamVideo) -> UpstreamVideo:
        if video.error is None:
            return video
        # Every string of the upstream's failure reason: keys and internal addresses gone, a
        # code that is not a plain token replaced by ours, a param that names no field dropped.
        error = dict(video.error)
        error["message"] = self.scrub.upstream(str(error.get("message") or ""))
        error["code"] = self.scrub.upstream_code(error.get("code"), "video_generation_failed")
        for optional in ("param", "type"):
            if optional in error:
                kept = self.scrub.upstream_param(error[optional])
                if kept is None:
                    del error[optional]
                else:
                    error[optional] = kept
        return replace(video, error=error)

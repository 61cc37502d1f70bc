"""Video jobs: the Videos API's operations over the upstream's async jobs and our job store.

The upstream shows a job only to the key that created it and knows it by its own id. So a job
is recorded (our id, upstream id, route, group, key fingerprint, owner, parameters) before the
client hears of it, and every later call finds the key through the record. Status changes are
compare-and-set: whichever replica or poller sees a job finish first records its final state
and cost; everyone else reads that record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from . import reference as references
from .catalog import Route
from .dialects.videos import (
    Reference,
    UpstreamVideo,
    build_create,
    build_remix,
    job_changes,
    job_path,
    parse_video,
)
from .errors import GatewayError, InvalidRequest, NotFound, UpstreamError
from .jobstore import TERMINAL, Job, Order, UnknownCursor
from .ledger import Charge
from .videospec import check_remix, plan_video, video_cost

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("mediagate")

_ID = re.compile(r"^video_[0-9a-f]{32}$")
_CAS_ATTEMPTS = 8
_LIST_REFRESH_CONCURRENCY = 8
VARIANTS = ("video", "thumbnail", "spritesheet")


@dataclass
class ReferenceInput:
    """What the client gave as input_reference: uploaded bytes or a link (http(s) or data:)."""

    data: bytes | None = None
    image_url: str | None = None


@dataclass
class Created:
    job: Job
    headers: dict[str, str]


def video_not_found(video_id: str) -> NotFound:
    return NotFound(
        f"No video found with id '{video_id}'. It may have been deleted or have expired.",
        code="video_not_found",
    )


def _route(gw: Gateway, job: Job) -> Route:
    route = gw.catalog.routes.get(job.route)
    if route is None:
        raise UpstreamError(
            f"The route {job.route} that made this video is no longer configured.",
            code="route_unavailable",
        )
    return route


def new_video_id() -> str:
    return f"video_{secrets.token_hex(16)}"


async def owned_job(gw: Gateway, owner: str, video_id: str) -> Job:
    """The caller's job, or a 404: another client's job does not exist as far as they know."""
    job = await gw.jobs.get(video_id) if _ID.match(video_id) else None
    if job is None or job.owner != owner or job.deleted_at is not None:
        raise video_not_found(video_id)
    return job


def _scrubbed(gw: Gateway, video: UpstreamVideo) -> UpstreamVideo:
    if video.error is None:
        return video
    error = {**video.error, "message": gw.scrub(video.error["message"])}
    return UpstreamVideo(**{**video.__dict__, "error": error})


async def _finished(gw: Gateway, job: Job) -> None:
    """Runs once per job, in whichever process won the final compare-and-set: the job's cost
    (0 if it failed) is booked against the reservation its create took, under the job's id."""
    gw.metrics.videos.labels(job.model, job.route, job.status).inc()
    seconds = int(job.seconds) if job.status == "completed" and job.seconds.isdigit() else 0
    charge = Charge(job.model, job.cost or 0.0, video_seconds=seconds)
    if await gw.ledger.settle(job.owner, job.id, charge) and charge.cost:
        gw.metrics.cost.labels(job.owner, job.model).inc(charge.cost)
    if job.status == "completed" and job.seconds.isdigit():
        gw.metrics.video_seconds.labels(job.model, job.route).inc(int(job.seconds))
    log.info(
        "video finished",
        extra={
            "fields": {
                "video_id": job.id,
                "key": job.owner,
                "model": job.model,
                "route": job.route,
                "status": job.status,
                "seconds": job.seconds,
                "size": job.size,
                "cost_usd": job.cost,
            }
        },
    )


async def record(gw: Gateway, job: Job, video: UpstreamVideo) -> Job:
    """Our record after the upstream's latest answer, changed by compare-and-set."""
    route = _route(gw, job)
    video = _scrubbed(gw, video)
    for _ in range(_CAS_ATTEMPTS):
        if job.final:
            return job  # the final state was recorded once; nothing overrides it
        changes = job_changes(job, video, time.time())
        if not changes:
            return job
        if changes.get("status") == "completed":
            changes["cost"] = video_cost(route, job.size, job.seconds)
        elif changes.get("status") == "failed":
            changes["cost"] = 0.0
        won = await gw.jobs.update(job.id, job.status, changes)
        if won is not None:
            if won.final:
                await _finished(gw, won)
            return won
        latest = await gw.jobs.get(job.id)  # someone else moved it first: start from theirs
        if latest is None:
            raise video_not_found(job.id)
        job = latest
    return job


async def _reference_bytes(gw: Gateway, given: ReferenceInput) -> bytes:
    cap = gw.settings.video_reference_max_bytes
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
    try:
        # The same rules as upstream image links: public addresses only, capped, images only.
        data, _ = await gw.fetcher.fetch_image(url)
    except GatewayError as exc:
        raise InvalidRequest(
            f"Could not use input_reference.image_url: {exc.message}",
            param="input_reference",
            code=exc.code or "invalid_image_url",
        ) from None
    if len(data) > cap:
        raise references.too_large(cap)
    return data


async def create_video(
    gw: Gateway,
    owner: str,
    route: Route,
    model: str,
    fields: dict[str, Any],
    given: ReferenceInput | None,
    fitting: bool,
    job_id: str | None = None,
) -> Created:
    spec = plan_video(fields, route, model)
    headers = {"x-mediagate-route": route.id}
    reference: Reference | None = None
    note = None
    if given is not None:
        assert route.video is not None
        if not route.video.reference:
            raise InvalidRequest(
                f"{model} does not take an input_reference.", param="input_reference"
            )
        data = await _reference_bytes(gw, given)
        reference, note = await asyncio.to_thread(
            references.prepare,
            data,
            spec.size,
            fitting=fitting and gw.settings.video_fit_reference,
            max_pixels=gw.settings.video_reference_max_pixels,
        )
        if note:
            headers["x-mediagate-mapped"] = note

    path, parts = build_create(route, spec, reference)
    # Any key of the group may create the job (a refused one is skipped); the job stays bound
    # to the one that did.
    payload, fingerprint = await gw.upstream.create_json(route, "POST", path, files=parts)
    video = _scrubbed(gw, parse_video(payload, route))
    now = time.time()
    described = None
    if reference is not None:
        described = f"{reference.content_type} {reference.width}x{reference.height}"
        described += " (fitted)" if note else ""
    job = Job(
        id=job_id or new_video_id(),
        upstream_id=video.id,
        owner=owner,
        model=model,
        route=route.id,
        group=route.group,
        key_fp=fingerprint,
        prompt=spec.prompt,
        size=spec.size,
        seconds=spec.seconds,
        status="queued",
        created_at=int(now),
        updated_at=now,
        reference=described,
    )
    await _insert(gw, job)
    return Created(await record(gw, job, video), headers)


async def _insert(gw: Gateway, job: Job) -> None:
    """Record a job the upstream accepted, before the client hears of it."""
    try:
        await gw.jobs.insert(job)
    except GatewayError:
        # The upstream is making (and charging for) a video nobody can reach: say which.
        log.error(
            "video job not recorded",
            extra={"fields": {"upstream_id": job.upstream_id, "route": job.route}},
        )
        raise


async def refresh(gw: Gateway, job: Job) -> Job:
    """The job as the upstream sees it now, recorded."""
    route = _route(gw, job)
    key = gw.upstream.keys.by_fingerprint(job.group, job.key_fp)
    payload = await gw.upstream.json_with_key(
        route, key, "GET", job_path(job.upstream_id), not_found=video_not_found(job.id)
    )
    return await record(gw, job, parse_video(payload, route))


async def list_videos(
    gw: Gateway, owner: str, after: str | None, limit: int, order: Order
) -> tuple[list[Job], bool]:
    try:
        jobs, has_more = await gw.jobs.list(owner, after=after, limit=limit, order=order)
    except UnknownCursor:
        raise InvalidRequest(
            f"Invalid 'after': '{after}' is not one of your videos.", param="after"
        ) from None
    gate = asyncio.Semaphore(_LIST_REFRESH_CONCURRENCY)

    async def fresh(job: Job) -> Job:
        # A listing shows unfinished jobs as they are now; one that cannot be asked keeps its
        # last known state rather than failing the whole page.
        if job.status in TERMINAL:
            return job
        async with gate:
            try:
                return await refresh(gw, job)
            except GatewayError:
                return job

    return list(await asyncio.gather(*(fresh(job) for job in jobs))), has_more


async def delete_video(gw: Gateway, owner: str, video_id: str) -> Job:
    job = await owned_job(gw, owner, video_id)
    route = _route(gw, job)
    key = gw.upstream.keys.by_fingerprint(job.group, job.key_fp)
    with contextlib.suppress(NotFound):  # the upstream already forgot it: intent met
        await gw.upstream.call_with_key(
            route, key, "DELETE", job_path(job.upstream_id), not_found=video_not_found(job.id)
        )
    for _ in range(_CAS_ATTEMPTS):
        # The record stays (the video was paid for); it just stops being visible.
        now = time.time()
        done = await gw.jobs.update(job.id, job.status, {"deleted_at": int(now), "updated_at": now})
        if done is not None:
            return done
        latest = await gw.jobs.get(job.id)
        if latest is None or latest.deleted_at is not None:
            raise video_not_found(video_id)
        job = latest
    raise UpstreamError("The video changed too often to delete; try again.", code="conflict")


async def remix_video(
    gw: Gateway, owner: str, video_id: str, body: Any, job_id: str | None = None
) -> Created:
    source = await owned_job(gw, owner, video_id)
    route = _route(gw, source)
    prompt = check_remix(body, route)
    key = gw.upstream.keys.by_fingerprint(source.group, source.key_fp)
    path, payload = build_remix(source.upstream_id, prompt)
    answer = await gw.upstream.json_with_key(
        route, key, "POST", path, json=payload, not_found=video_not_found(source.id)
    )
    video = _scrubbed(gw, parse_video(answer, route))
    now = time.time()
    job = Job(
        id=job_id or new_video_id(),
        upstream_id=video.id,
        owner=owner,
        model=source.model,
        route=source.route,
        group=source.group,
        key_fp=source.key_fp,  # the remix lives under the source's key too
        prompt=prompt,
        size=video.size or source.size,
        seconds=video.seconds or source.seconds,
        status="queued",
        created_at=int(now),
        updated_at=now,
        remixed_from=source.id,
    )
    await _insert(gw, job)
    return Created(await record(gw, job, video), {"x-mediagate-route": route.id})


async def open_content(
    gw: Gateway, job: Job, variant: str, headers: dict[str, str]
) -> httpx.Response:
    """The upstream's streaming answer for a job's file (200, 206 or 416); the caller closes."""
    route = _route(gw, job)
    key = gw.upstream.keys.by_fingerprint(job.group, job.key_fp)
    return await gw.upstream.call_with_key(
        route,
        key,
        "GET",
        job_path(job.upstream_id, "/content"),
        params={"variant": variant},
        headers=headers,
        not_found=video_not_found(job.id),
        passthrough=frozenset({416}),
        stream=True,
    )

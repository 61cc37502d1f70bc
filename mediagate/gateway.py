"""The composition root: the gateway's long-lived parts, built in the app's lifespan from the
settings and torn down with it.

`open_gateway` checks the configuration, opens the stores, the pooled upstream client and the
hosted-image store, builds the upstream sender, the fetcher, metering and the use-case services
from them, and hands the HTTP layer a `Gateway` holding them. Nothing here serves a request."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx2
from pydantic import SecretStr

from mediagate.accounting.clients import KeyRegistry, KeysFileError
from mediagate.accounting.metering import Metering
from mediagate.catalog import Catalog, CatalogError, load_catalog
from mediagate.errors import Scrubber
from mediagate.imagedata import ImageWork
from mediagate.images.service import ImageService
from mediagate.observability.metrics import Metrics
from mediagate.observability.tracing import Tracer
from mediagate.servethread import BackgroundServer
from mediagate.settings import Settings, group_env_name
from mediagate.stores import StoreConfigError, check_store_url, open_stores
from mediagate.stores.hosted import HostedImages, open_hosted_images
from mediagate.stores.idempotency import IdempotencyStore
from mediagate.stores.jobs import JobStore
from mediagate.stores.ledger import Ledger
from mediagate.upstream.aiohttp_transport import AiohttpTransport
from mediagate.upstream.breaker import Breakers
from mediagate.upstream.fetcher import SafeFetcher, public_transport
from mediagate.upstream.room import AnswerRoom
from mediagate.upstream.sender import KeyRing, Upstream
from mediagate.upstream.transport import HttpxTransport, Transport
from mediagate.videos.reconciler import Reconciler
from mediagate.videos.service import VideoService
from mediagate.videos.webhooks import WebhookSender, check_secret

log = logging.getLogger("mediagate")


class ConfigError(RuntimeError):
    pass


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing. The one upstream client serves every tenant: a cookie
    the upstream (or an image host) sets while answering one client's request must never be
    sent with another's. (A jar, not httpx2.Cookies: the client would copy those into a new
    jar with the default policy.)"""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


@dataclass
class Gateway:
    """The long-lived parts the HTTP layer uses: the use cases, and what they share."""

    settings: Settings
    catalog: Catalog  # as this deployment offers it (routes with a key)
    clients: KeyRegistry  # client keys
    metrics: Metrics
    scrub: Scrubber
    images: ImageService  # image generations and edits
    videos: VideoService  # video jobs: create, remix, retrieve, list, delete, content
    hosted: HostedImages  # images the gateway hosts at its own links
    metering: Metering  # client keys' limits, budgets and bills
    ledger: Ledger  # rate limits, concurrency, budgets, usage
    idempotency: IdempotencyStore  # Idempotency-Key results, in the job store's backend
    upstream: Upstream
    fetcher: SafeFetcher
    jobs: JobStore  # video jobs
    reconciler: Reconciler  # refreshes unfinished jobs, so each ends and is billed
    webhooks: WebhookSender | None  # delivers the outbox's events (None: no secret set)


def check_config(settings: Settings) -> KeyRegistry:
    """Refuse a configuration that cannot serve safely, with a message an operator can act on."""
    try:
        clients = KeyRegistry(settings.client_keys(), settings.keys_file)
    except (ValueError, KeysFileError) as exc:
        raise ConfigError(str(exc)) from None
    if not clients.enabled and not settings.simulator:
        raise ConfigError(
            "MEDIAGATE_API_KEYS or MEDIAGATE_KEYS_FILE must name at least one client key; only "
            "the offline simulator mode may run without client authentication"
        )
    if not settings.simulator and not settings.upstream_url:
        raise ConfigError("MEDIAGATE_UPSTREAM_URL is required when upstream keys are set")
    try:
        load_catalog(settings.config)
        check_store_url(settings.job_store_url())
    except (CatalogError, StoreConfigError) as exc:
        raise ConfigError(str(exc)) from None
    if settings.webhook_secret is not None:
        try:
            check_secret(settings.webhook_secret.get_secret_value())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    elif settings.webhook_url or any(p.webhook_url for p in clients.policies()):
        raise ConfigError("a webhook URL is set: MEDIAGATE_WEBHOOK_SECRET (whsec_...) is required")
    if settings.webhook_url and not settings.webhook_url.startswith(("http://", "https://")):
        raise ConfigError("MEDIAGATE_WEBHOOK_URL must be an http(s) URL")
    return clients


def webhook_targets(settings: Settings, clients: KeyRegistry) -> Callable[[str], str | None]:
    """Where a client key's video events go: its own `webhook_url`, else the gateway's; none
    without a signing secret."""

    def target(owner: str) -> str | None:
        if settings.webhook_secret is None:
            return None
        policy = clients.policy(owner)
        return (policy.webhook_url if policy else None) or settings.webhook_url

    return target


def _start_simulator(settings: Settings) -> tuple[Settings, BackgroundServer]:
    """Offline mode: a simulated upstream on a loopback port, with fresh keys for every group."""
    from .simulator import SimConfig, create_simulator_app

    groups = load_catalog(settings.config).groups()
    keys = {group: f"sim-{secrets.token_hex(12)}" for group in groups}
    server = BackgroundServer(create_simulator_app(SimConfig(keys={k: g for g, k in keys.items()})))
    server.start()
    update = {
        "upstream_url": f"{server.url}/v1",
        "fetch_allow_hosts": [*settings.fetch_allow_hosts, f"{server.host}:{server.port}"],
        # The simulator's keys replace any configured ones; group_keys() reads these too.
        "key_default": None,
        "key_openaiofficial": None,
        "key_openaiofficialenterprise": None,
        "key_sora2official": None,
        "key_gptimage2enterprise": None,
        "key_seedance2": None,
        "key_dreamina": None,
        "key_wan": None,
        "extra_group_keys": {group_env_name(g): SecretStr(k) for g, k in keys.items()},
        # Simulated videos take well under a second; polling every 10 s would feel broken.
        "video_poll_after_ms": min(settings.video_poll_after_ms, 500),
        # ...and so would Muse's own 15 s: every video route polls at that pace too.
        "video_poll_override_ms": min(settings.video_poll_override_ms or 500, 500),
    }
    return settings.model_copy(update=update), server


async def _sweep_forever(store: HostedImages, interval_s: float) -> None:
    while True:
        try:
            removed = await store.sweep()
            if removed:
                log.info("swept %d expired images", removed)
        except Exception as exc:  # a failed sweep must not stop the next one
            log.warning("sweeping expired images failed: %s", type(exc).__name__)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    metrics: Metrics,
    scrub: Scrubber,
    transport: httpx2.AsyncBaseTransport | None = None,
    *,
    tracer: Tracer | None = None,
) -> AsyncIterator[Gateway]:
    simulator = None
    if settings.simulator:
        settings, simulator = _start_simulator(settings)
        log.warning("serving against the built-in simulated upstream at %s", settings.upstream_url)
    try:
        clients = check_config(settings)
        if not clients.enabled:
            log.warning("client authentication is OFF: simulator mode without MEDIAGATE_API_KEYS")
        upstream_url = settings.upstream_url
        if upstream_url is None:  # check_config's rule, restated for the type checker
            raise ConfigError("MEDIAGATE_UPSTREAM_URL is required")
        full = load_catalog(settings.config)
        group_keys, renamed = full.upstream_keys(settings.group_keys)
        for old, new, used in renamed:
            # A token group renamed upstream: the old variable still works, said once, here.
            log.warning(
                "%s is deprecated: the token group '%s' is now '%s'; %s",
                group_env_name(old),
                old,
                new,
                f"set {group_env_name(new)} instead"
                if used
                else f"it is ignored, {group_env_name(new)} is set",
            )
        keys = KeyRing(
            group_keys,
            auth_cooldown_s=settings.upstream_key_auth_cooldown_s,
            rate_cooldown_s=settings.upstream_key_rate_cooldown_s,
            on_bench=lambda group, reason: metrics.key_cooldowns.labels(group, reason).inc(),
        )
        catalog = full.offered(keys.has)
        if not catalog.models:
            raise ConfigError("no model is usable: set MEDIAGATE_KEY_<GROUP> for a token group")
        scrub.add(settings.all_upstream_keys())
        scrub.trust_host(httpx2.URL(upstream_url).host)
        limits = httpx2.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=settings.upstream_keepalive_s,
        )
        # The sender's network (mediagate.upstream.transport): aiohttp's, else an httpx2
        # transport through the adapter (httpx2's own pool, or the one a test hands over).
        network: Transport
        if transport is not None:
            network = HttpxTransport(transport)
        elif settings.upstream_transport == "aiohttp":
            network = AiohttpTransport(limits)
        else:
            network = HttpxTransport(httpx2.AsyncHTTPTransport(limits=limits))
        try:
            hosted = open_hosted_images(
                settings.image_store_url,
                settings.data_dir,
                settings.image_retention_s,
                settings.s3_endpoint_url,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        webhook_hosts = [*settings.fetch_allow_hosts, *settings.webhook_allow_hosts]
        tls = httpx2.create_ssl_context()  # one CA bundle loaded for both fetching clients
        sweeper = asyncio.create_task(_sweep_forever(hosted, settings.image_sweep_interval_s))
        try:
            async with (
                # The upstream sender's network (it builds its calls itself: no client).
                network,
                # Image links an upstream wrote (and video references a client gave) go through
                # a client of their own, which connects to public addresses only.
                httpx2.AsyncClient(
                    timeout=httpx2.Timeout(settings.fetch_timeout_s),
                    cookies=no_cookies(),
                    transport=public_transport(settings.fetch_allow_hosts, limits, tls),
                ) as fetch_client,
                # Webhook receivers: the same address rules, with the webhook allow-list too.
                httpx2.AsyncClient(
                    cookies=no_cookies(), transport=public_transport(webhook_hosts, limits, tls)
                ) as webhook_client,
                open_stores(settings.job_store_url(), settings.store_prefix) as stores,
            ):
                upstream = Upstream(
                    network,
                    upstream_url,
                    keys,
                    metrics,
                    scrub,
                    settings.upstream_timeout_s,
                    connect_timeout_s=settings.upstream_connect_timeout_s,
                    max_bytes=settings.upstream_max_bytes,
                    breakers=Breakers(
                        ((r.id, r.breaker) for r in catalog.routes.values()),
                        lambda route, state: metrics.circuit_state.labels(route).set(state),
                    ),
                    tracer=tracer,
                    room=AnswerRoom(
                        settings.max_inflight_upstream_bytes,
                        settings.upstream_room_wait_s,
                        metrics,
                    ),
                )
                fetcher = SafeFetcher(
                    fetch_client,
                    settings.fetch_allow_hosts,
                    settings.fetch_max_bytes,
                    settings.fetch_timeout_s,
                    tracer=tracer,
                )
                metering = Metering(
                    stores.ledger, metrics, flush_interval_s=settings.usage_flush_interval_s
                )
                # Image decoding and encoding: one small pool of its own for both services.
                work = ImageWork(settings.image_workers, settings.image_work_queue)
                videos = VideoService(
                    settings,
                    catalog,
                    upstream,
                    fetcher,
                    stores.jobs,
                    metering,
                    metrics,
                    scrub,
                    webhook_targets(settings, clients),
                    work=work,
                )
                reconciler = Reconciler(videos, stores.jobs, metrics, settings.reconcile_every_s())
                webhooks = None
                if settings.webhook_secret is not None:
                    poster = SafeFetcher(
                        webhook_client,
                        webhook_hosts,
                        settings.fetch_max_bytes,
                        settings.webhook_timeout_s,
                        tracer=tracer,
                    )
                    webhooks = WebhookSender(
                        stores.jobs,
                        poster,
                        settings.webhook_secret.get_secret_value(),
                        settings.webhook_retry_base_s,
                        metrics,
                        hold_s=settings.webhook_claim_hold_s,
                    )
                gateway = Gateway(
                    settings=settings,
                    catalog=catalog,
                    clients=clients,
                    metrics=metrics,
                    scrub=scrub,
                    images=ImageService(
                        settings, catalog, upstream, fetcher, hosted, metering, metrics, scrub, work
                    ),
                    videos=videos,
                    hosted=hosted,
                    metering=metering,
                    ledger=stores.ledger,
                    idempotency=stores.idempotency,
                    upstream=upstream,
                    fetcher=fetcher,
                    jobs=stores.jobs,
                    reconciler=reconciler,
                    webhooks=webhooks,
                )
                workers = [asyncio.create_task(reconciler.run_forever())]
                if webhooks is not None:
                    every_s = min(1.0, settings.webhook_retry_base_s)
                    workers.append(asyncio.create_task(webhooks.run_forever(every_s)))
                try:
                    yield gateway
                finally:
                    for worker in workers:
                        worker.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                    # Requests cut off by the shutdown still owe their settlement; the
                    # stores close only after it is booked.
                    await metering.drain()
                    work.close()
        finally:
            sweeper.cancel()
    finally:
        if simulator is not None:
            simulator.stop()

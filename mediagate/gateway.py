"""The composition root: the gateway's long-lived parts, built in the app's lifespan from the
settings and torn down with it.

`open_gateway` checks the configuration, opens the stores, the pooled upstream client and the
hosted-image store, builds the upstream sender, the fetcher, metering and the use-case services
from them, and hands the HTTP layer a `Gateway` holding them. Nothing here serves a request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING

import httpx2
from pydantic import SecretStr

from mediagate.accounting.clients import AdminKey, KeyRegistry, KeysFileError, admin_keys
from mediagate.accounting.metering import Metering
from mediagate.accounting.requestlog import RequestLog
from mediagate.batches.endpoints import Endpoints
from mediagate.batches.files import FileService
from mediagate.batches.runner import BatchRunner
from mediagate.batches.service import BatchService
from mediagate.catalog import Catalog, CatalogError, CatalogHolder, load_catalog
from mediagate.errors import Scrubber
from mediagate.imagedata import ImageWork
from mediagate.images.service import ImageService
from mediagate.observability.metrics import Metrics
from mediagate.observability.tracing import Tracer
from mediagate.settings import Settings, group_env_name
from mediagate.stores import StoreConfigError, check_coordination, open_stores
from mediagate.stores.hosted import HostedImages, open_hosted_images
from mediagate.stores.idempotency import IdempotencyStore
from mediagate.stores.jobs import JobStore
from mediagate.stores.kept import Keeper
from mediagate.stores.ledger import Ledger
from mediagate.stores.sql.db import Database, DatabaseConfigError, check_database_url
from mediagate.stores.sql.meta import kept_secret
from mediagate.upstream.breaker import Breakers
from mediagate.upstream.fetcher import SafeFetcher, public_transport
from mediagate.upstream.lanes import Lanes
from mediagate.upstream.listing import CatalogWatch
from mediagate.upstream.room import AnswerRoom
from mediagate.upstream.sender import KeyRing, Upstream
from mediagate.upstream.transport import Deferred, HttpxTransport, Transport
from mediagate.videos.reconciler import Reconciler
from mediagate.videos.service import VideoService
from mediagate.videos.webhooks import WebhookSender, check_secret

if TYPE_CHECKING:
    from mediagate.servethread import BackgroundServer

log = logging.getLogger("mediagate")


# The catalog's first check against the upstream's lists, this long after start.
_FIRST_CHECK_AFTER_S = 2.0
# The upstream network (aiohttp's) is built this long after start, off the first answer's path.
_READY_AFTER_S = 1.0
# The files' store keeps what their rows keep (each file's own expiry, or none).
_FILES_RETENTION_S = 100 * 365 * 86400.0


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
    catalogs: CatalogHolder  # the catalog in force, as this deployment offers it (keyed routes)
    clients: KeyRegistry  # client keys
    admin_keys: list[AdminKey]  # the admin API's keys (digests), MEDIAGATE_ADMIN_KEYS
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
    database: Database  # the records (MEDIAGATE_DATABASE_URL)
    reconciler: Reconciler  # refreshes unfinished jobs, so each ends and is billed
    webhooks: WebhookSender | None  # delivers the outbox's events (None: no secret set)
    batches: BatchService  # the Files and Batch APIs
    batch_runner: BatchRunner  # runs batches' lines, in every replica
    # Checks the catalog against the upstream's model lists (None: the interval is 0).
    catalog_watch: CatalogWatch | None = None
    # One row per request in the database, written in batches (None: MEDIAGATE_REQUEST_LOG off).
    request_log: RequestLog | None = None
    # Signs the console's sessions: MEDIAGATE_CONSOLE_SECRET, else the one kept in the database.
    console_secret: bytes = b""
    # The images and videos kept for the console's gallery (None: MEDIAGATE_KEEP_OUTPUTS off).
    kept: Keeper | None = None

    @property
    def catalog(self) -> Catalog:
        """The catalog in force: read it per request, never keep it."""
        return self.catalogs.current

    def reload_catalog(self) -> Catalog:
        """MEDIAGATE_CONFIG read again and, if valid, put in force for new requests (SIGHUP).
        An invalid file is refused (ConfigError), with its reason logged, and the catalog in
        force is kept. Work already started keeps its routes and prices (a video job its
        route snapshot). A group new in the file is served with its MEDIAGATE_KEY_<GROUP> as
        the settings read it at start; a group whose key is unset is not offered until a
        restart with one."""
        keys = self.upstream.keys
        try:
            full = load_catalog(self.settings.config)
            group_keys, _ = full.upstream_keys(self.settings.group_keys)
            new_keys = {g: k for g, k in group_keys.items() if not keys.has(g)}
            catalog = full.offered(lambda group: keys.has(group) or bool(new_keys.get(group)))
            if not catalog.models:
                raise CatalogError("no model would be usable: no route has a key for its group")
        except CatalogError as exc:
            self.metrics.catalog_reloads.labels("refused").inc()
            log.error(
                "catalog reload refused; the catalog in force is kept",
                extra={"fields": {"config": str(self.settings.config), "reason": str(exc)}},
            )
            raise ConfigError(str(exc)) from None
        added = keys.add_groups(new_keys)
        old = self.catalogs.swap(catalog)
        for route in catalog.routes.values():
            self.upstream.breakers.get(route.id, route.breaker)  # its gauge from now on
        changed = sorted(
            rid for rid, route in catalog.routes.items() if old.routes.get(rid, route) != route
        )
        self.metrics.catalog_reloads.labels("applied").inc()
        log.info(
            "catalog reloaded",
            extra={
                "fields": {
                    "config": str(self.settings.config),
                    "models": len(catalog.models),
                    "routes_added": sorted(set(catalog.routes) - set(old.routes)),
                    "routes_removed": sorted(set(old.routes) - set(catalog.routes)),
                    "routes_changed": changed,
                    "groups_keyed": added,
                    "groups_without_key": sorted(g for g in full.groups() if not keys.has(g)),
                }
            },
        )
        if self.catalog_watch is not None:
            self.catalog_watch.trigger()
        return catalog

    def reload_on_signal(self) -> None:
        """SIGHUP's handler: a refused file is already logged; the gateway serves on."""
        with contextlib.suppress(ConfigError):
            self.reload_catalog()


def check_config(settings: Settings) -> KeyRegistry:
    """Refuse a configuration that cannot serve safely, with a message an operator can act on."""
    try:
        # The keys in the database join at open (`KeyRegistry.open`); outside simulator mode
        # a client key is always required, wherever the keys are kept.
        clients = KeyRegistry(
            settings.client_keys(), settings.keys_file, required=not settings.simulator
        )
    except (ValueError, KeysFileError) as exc:
        raise ConfigError(str(exc)) from None
    if not clients.enabled_by_config() and not settings.simulator and not _has_admin(settings):
        raise ConfigError(
            "MEDIAGATE_API_KEYS or MEDIAGATE_KEYS_FILE must name at least one client key, or "
            "MEDIAGATE_ADMIN_KEYS name an admin to keep them in the database (mediagate keys, "
            "/admin/v1/keys); only the offline simulator mode may run without client "
            "authentication"
        )
    if not settings.simulator and not settings.upstream_url:
        raise ConfigError("MEDIAGATE_UPSTREAM_URL is required when upstream keys are set")
    if settings.store_url:
        raise ConfigError(
            "MEDIAGATE_STORE_URL is replaced: the records (jobs, usage, budgets, keys) live in "
            "MEDIAGATE_DATABASE_URL (sqlite:///path, or postgresql://... for replicas) and "
            "replicas coordinate through MEDIAGATE_REDIS_URL. Move the old store's records with "
            "`mediagate db import <the MEDIAGATE_STORE_URL>`, then unset it."
        )
    try:
        _admin_keys(settings)
        load_catalog(settings.config)
        check_database_url(settings.records_url())
        check_coordination(settings.records_url(), settings.redis_url)
    except (CatalogError, StoreConfigError, DatabaseConfigError, ValueError) as exc:
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


def _has_admin(settings: Settings) -> bool:
    return settings.admin_keys is not None or settings.admin_key is not None


def _admin_keys(settings: Settings) -> list[AdminKey]:
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return admin_keys(secret(settings.admin_keys), secret(settings.admin_key))


def key_team(clients: KeyRegistry) -> Callable[[str], str | None]:
    """A key's team by the key's name (a video's settlement, after its request, books it)."""

    def team(name: str) -> str | None:
        policy = clients.policy(name)
        return policy.team if policy is not None else None

    return team


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
    from mediagate.servethread import BackgroundServer

    from .simulator import SimConfig, create_simulator_app

    groups = load_catalog(settings.config).groups()
    keys = {group: f"sim-{secrets.token_hex(12)}" for group in groups}
    server = BackgroundServer(create_simulator_app(SimConfig(keys={k: g for g, k in keys.items()})))
    server.start()
    update = {
        "upstream_url": f"{server.url}/v1",
        "fetch_allow_hosts": [*settings.fetch_allow_hosts, f"{server.host}:{server.port}"],
        # The simulator's keys replace any configured ones; group_keys() reads these too.
        **{name: None for name in Settings.model_fields if name.startswith("key_")},
        "extra_group_keys": {group_env_name(g): SecretStr(k) for g, k in keys.items()},
        # Simulated videos take well under a second; polling every 10 s would feel broken.
        "video_poll_after_ms": min(settings.video_poll_after_ms, 500),
        # ...and so would Muse's own 15 s: every video route polls at that pace too.
        "video_poll_override_ms": min(settings.video_poll_override_ms or 500, 500),
    }
    return settings.model_copy(update=update), server


def _key_ring(settings: Settings, full: Catalog, metrics: Metrics) -> KeyRing:
    """Every token group's upstream keys, a renamed group's old variable said once, here."""
    group_keys, renamed = full.upstream_keys(settings.group_keys)
    for old, new, used in renamed:
        log.warning(
            "%s is deprecated: the token group '%s' is now '%s'; %s",
            group_env_name(old),
            old,
            new,
            f"set {group_env_name(new)} instead"
            if used
            else f"it is ignored, {group_env_name(new)} is set",
        )
    return KeyRing(
        group_keys,
        auth_cooldown_s=settings.upstream_key_auth_cooldown_s,
        rate_cooldown_s=settings.upstream_key_rate_cooldown_s,
        on_bench=lambda group, reason: metrics.key_cooldowns.labels(group, reason).inc(),
    )


def _limits(settings: Settings, cap: int | None = None) -> httpx2.Limits:
    """A pool's limits: `cap` connections at most (None: no limit), kept alive for
    MEDIAGATE_UPSTREAM_KEEPALIVE_S."""
    return httpx2.Limits(
        max_connections=cap,
        max_keepalive_connections=cap,
        keepalive_expiry=settings.upstream_keepalive_s,
    )


def _network(
    settings: Settings, limits: httpx2.Limits, transport: httpx2.AsyncBaseTransport | None
) -> Transport:
    """The sender's network (mediagate.upstream.transport): aiohttp's, else an httpx2
    transport through the adapter (httpx2's own pool, or the one a test hands over)."""
    if transport is not None:
        return HttpxTransport(transport)
    if settings.upstream_transport == "aiohttp":
        # aiohttp (~150-250 ms to import) is loaded neither with the app nor on the path to
        # the first answer: in a worker thread, a moment after the gateway serves (_READY_AFTER_S),
        # or by the first upstream call if that comes sooner.
        def build() -> Transport:
            from mediagate.upstream.aiohttp_transport import AiohttpTransport

            return AiohttpTransport(limits)

        return Deferred(build)
    return HttpxTransport(httpx2.AsyncHTTPTransport(limits=limits))


async def _ready_later(network: Transport) -> None:
    """The deferred upstream network built in the background once the gateway serves."""
    if isinstance(network, Deferred):
        await asyncio.sleep(_READY_AFTER_S)
        try:
            await network.ready()
        except Exception:  # the first call builds it again, and fails with the reason
            log.exception("the upstream network could not be readied")


def _sender(
    settings: Settings,
    upstream_url: str,
    network: Transport,
    keys: KeyRing,
    metrics: Metrics,
    scrub: Scrubber,
    catalog: Catalog,
    tracer: Tracer | None,
) -> Upstream:
    """The one sender, with a breaker per route of the catalog."""
    return Upstream(
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
            settings.max_inflight_upstream_bytes, settings.upstream_room_wait_s, metrics
        ),
        lanes=Lanes(metrics, settings.max_connections),
    )


@asynccontextmanager
async def open_upstream(
    settings: Settings, transport: httpx2.AsyncBaseTransport | None = None
) -> AsyncIterator[tuple[Upstream, Catalog]]:
    """The sender alone, built as the gateway builds it, and the catalog it can serve (routes
    whose group has a key): what `mediagate catalog check` asks the upstream with. Raises
    CatalogError for an invalid catalog, ConfigError without MEDIAGATE_UPSTREAM_URL."""
    full = load_catalog(settings.config)
    if not settings.upstream_url:
        raise ConfigError("MEDIAGATE_UPSTREAM_URL is required to ask the upstream")
    metrics = Metrics()
    keys = _key_ring(settings, full, metrics)
    scrub = Scrubber(settings.all_upstream_keys())
    scrub.trust_host(httpx2.URL(settings.upstream_url).host)
    network = _network(settings, _limits(settings), transport)
    catalog = full.offered(keys.has)
    async with network:
        yield (
            _sender(settings, settings.upstream_url, network, keys, metrics, scrub, catalog, None),
            catalog,
        )


async def _sweep_forever(sweep: Callable[[], Awaitable[int]], what: str, interval_s: float) -> None:
    """`sweep` every `interval_s` (hosted images, kept outputs), for as long as the gateway
    runs; a failed sweep is logged and the next one tried."""
    while True:
        try:
            removed = await sweep()
            if removed:
                log.info("swept %d %s", removed, what)
        except Exception as exc:  # a failed sweep must not stop the next one
            log.warning("sweeping %s failed: %s", what, type(exc).__name__)
        await asyncio.sleep(interval_s)


def _keeper(settings: Settings, database: Database, metrics: Metrics) -> Keeper | None:
    """MEDIAGATE_KEEP_OUTPUTS: a folder ("outputs") of the hosted-object store, with its own
    retention, beside the hosted images (whose sweep leaves it alone)."""
    if not settings.outputs_kept():
        return None
    store = open_hosted_images(
        settings.image_store_url,
        settings.data_dir,
        settings.keep_outputs_days * 86400,
        settings.s3_endpoint_url,
        within="outputs",
    )
    return Keeper(
        store, database, metrics, settings.keep_outputs_days, settings.keep_outputs_max_bytes
    )


def _batches(
    settings: Settings,
    database: Database,
    images: ImageService,
    videos: VideoService,
    fetcher: SafeFetcher,
    metering: Metering,
) -> BatchService:
    """The Files and Batch APIs: files in the hosted-object store's "files" folder (their
    expiry is their rows', swept by `FileService.sweep`)."""
    store = open_hosted_images(
        settings.image_store_url,
        settings.data_dir,
        _FILES_RETENTION_S,
        settings.s3_endpoint_url,
        within="files",
    )
    files = FileService(
        store,
        database,
        settings.files_max_bytes,
        settings.files_quota_bytes,
        settings.batch_max_lines,
    )
    return BatchService(
        files,
        Endpoints(images, videos, files, fetcher),
        database,
        metering,
    )


def batch_capacity(settings: Settings) -> int:
    """The batch lines one replica runs at once, all batches together: MEDIAGATE_BATCH_SHARE of
    the calls it holds (MEDIAGATE_MAX_INFLIGHT; without a bound, of 1,000)."""
    return max(1, int(settings.batch_share * (settings.inflight_limit() or 1000)))


async def _console_secret(settings: Settings, database: Database) -> bytes:
    """MEDIAGATE_CONSOLE_SECRET, else the one kept in the records database (made once)."""
    if settings.console_secret is not None:
        return settings.console_secret.get_secret_value().encode()
    if not settings.console:
        return b""
    return await kept_secret(database)


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    metrics: Metrics,
    scrub: Scrubber,
    transport: httpx2.AsyncBaseTransport | None = None,
    *,
    tracer: Tracer | None = None,
    request_log: RequestLog | None = None,
) -> AsyncIterator[Gateway]:
    simulator = None
    if settings.simulator:
        settings, simulator = _start_simulator(settings)
        log.warning("serving against the built-in simulated upstream at %s", settings.upstream_url)
    try:
        clients = check_config(settings)
        upstream_url = settings.upstream_url
        if upstream_url is None:  # check_config's rule, restated for the type checker
            raise ConfigError("MEDIAGATE_UPSTREAM_URL is required")
        full = load_catalog(settings.config)
        keys = _key_ring(settings, full, metrics)
        catalog = full.offered(keys.has)
        if not catalog.models:
            raise ConfigError("no model is usable: set MEDIAGATE_KEY_<GROUP> for a token group")
        catalogs = CatalogHolder(catalog)
        scrub.add(settings.all_upstream_keys())
        scrub.trust_host(httpx2.URL(upstream_url).host)
        # The sender's pool has no limit of its own: the calls are bounded where a wait is
        # visible (mediagate.upstream.lanes) and by MEDIAGATE_MAX_INFLIGHT. The fetching
        # clients' pools keep MEDIAGATE_MAX_CONNECTIONS, when set.
        network = _network(settings, _limits(settings), transport)
        limits = _limits(settings, settings.max_connections)
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
        sweeper = asyncio.create_task(
            _sweep_forever(hosted.sweep, "expired images", settings.image_sweep_interval_s)
        )
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
                open_stores(
                    settings.records_url(),
                    settings.store_prefix,
                    redis_url=settings.redis_url,
                    pool_size=settings.database_pool_size,
                ) as stores,
            ):
                await clients.open(stores.database)  # its keys and teams, kept fresh
                if not clients.enabled:
                    log.warning("client authentication is OFF: simulator mode without client keys")
                elif not clients.policies():
                    log.warning("no client key yet: make one with `mediagate keys create`")
                upstream = _sender(
                    settings, upstream_url, network, keys, metrics, scrub, catalog, tracer
                )
                fetcher = SafeFetcher(
                    fetch_client,
                    settings.fetch_allow_hosts,
                    settings.fetch_max_bytes,
                    settings.fetch_timeout_s,
                    tracer=tracer,
                )
                metering = Metering(
                    stores.ledger,
                    metrics,
                    flush_interval_s=settings.usage_flush_interval_s,
                    teams=clients.team,  # a team's shared budgets
                    key_team=key_team(clients),
                )
                # Image decoding and encoding: one small pool of its own for both services.
                work = ImageWork(settings.image_workers, settings.image_work_queue)
                kept = _keeper(settings, stores.database, metrics)
                videos = VideoService(
                    settings,
                    catalogs,
                    upstream,
                    fetcher,
                    stores.jobs,
                    metering,
                    metrics,
                    scrub,
                    webhook_targets(settings, clients),
                    work=work,
                    kept=kept,
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
                watch = None
                if settings.catalog_check_interval_s > 0:
                    watch = CatalogWatch(
                        upstream,
                        lambda: catalogs.current,
                        metrics,
                        settings.catalog_check_interval_s,
                        # In the background once the gateway serves, never on the path to
                        # its first answer (a cold start).
                        first_after_s=min(settings.catalog_check_interval_s, _FIRST_CHECK_AFTER_S),
                    )
                images = ImageService(
                    settings,
                    catalogs,
                    upstream,
                    fetcher,
                    hosted,
                    metering,
                    metrics,
                    scrub,
                    work,
                    kept=kept,
                )
                batches = _batches(settings, stores.database, images, videos, fetcher, metering)
                runner = BatchRunner(
                    batches,
                    clients,
                    stores.jobs,
                    metrics,
                    webhook_targets(settings, clients),
                    concurrency=settings.batch_concurrency,
                    capacity=batch_capacity(settings),
                    poll_s=settings.batch_poll_interval_s,
                    lease_s=settings.batch_lease_s,
                    request_log=request_log if settings.request_log else None,
                )
                gateway = Gateway(
                    settings=settings,
                    catalogs=catalogs,
                    clients=clients,
                    admin_keys=_admin_keys(settings),
                    metrics=metrics,
                    scrub=scrub,
                    images=images,
                    videos=videos,
                    hosted=hosted,
                    metering=metering,
                    ledger=stores.ledger,
                    idempotency=stores.idempotency,
                    upstream=upstream,
                    fetcher=fetcher,
                    jobs=stores.jobs,
                    database=stores.database,
                    reconciler=reconciler,
                    webhooks=webhooks,
                    catalog_watch=watch,
                    request_log=request_log if settings.request_log else None,
                    console_secret=await _console_secret(settings, stores.database),
                    kept=kept,
                    batches=batches,
                    batch_runner=runner,
                )
                if gateway.request_log is not None:
                    gateway.request_log.attach(stores.database)
                    gateway.request_log.start()
                workers = [
                    asyncio.create_task(_ready_later(network)),
                    asyncio.create_task(reconciler.run_forever()),
                    asyncio.create_task(runner.run_forever()),
                    asyncio.create_task(
                        _sweep_forever(
                            batches.files.sweep, "expired files", settings.image_sweep_interval_s
                        )
                    ),
                ]
                if watch is not None:
                    workers.append(asyncio.create_task(watch.run_forever()))
                if kept is not None:
                    sweep = _sweep_forever(
                        kept.sweep, "kept outputs", settings.image_sweep_interval_s
                    )
                    workers.append(asyncio.create_task(sweep))
                if webhooks is not None:
                    every_s = min(1.0, settings.webhook_retry_base_s)
                    workers.append(asyncio.create_task(webhooks.run_forever(every_s)))
                # SIGHUP reloads MEDIAGATE_CONFIG (`mediagate serve`: the loop runs in the main
                # thread; a gateway served from another thread, as in tests, has no signals).
                loop = asyncio.get_running_loop()
                on_hup = threading.current_thread() is threading.main_thread()
                if on_hup:
                    loop.add_signal_handler(signal.SIGHUP, gateway.reload_on_signal)
                try:
                    yield gateway
                finally:
                    if on_hup:
                        loop.remove_signal_handler(signal.SIGHUP)
                    for worker in workers:
                        worker.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                    await runner.close(
                        settings.shutdown_timeout_s
                    )  # lines in flight, ended and billed
                    if kept is not None:  # the outputs being kept, kept
                        await kept.drain()
                    # Requests cut off by the shutdown still owe their settlement; the
                    # stores close only after it is booked.
                    await metering.drain()
                    if gateway.request_log is not None:  # what is queued, written
                        await gateway.request_log.close()
                    work.close()
                    await clients.close()
        finally:
            sweeper.cancel()
    finally:
        if simulator is not None:
            simulator.stop()

"""Configuration from `MEDIAGATE_*` environment variables.

Settings are built once by the CLI (or by a test) and passed into `create_app`; nothing in the
package reads the environment behind their back.
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KEY_PREFIX = "MEDIAGATE_KEY_"


def group_env_name(group: str) -> str:
    """The env var of a group's keys: "OpenAI Official" -> MEDIAGATE_KEY_OPENAIOFFICIAL.

    Deriving the name from the group means a group added in the catalog YAML needs no code.
    """
    return KEY_PREFIX + re.sub(r"[^A-Za-z0-9]", "", group).upper()


# File descriptors kept out of MEDIAGATE_MAX_INFLIGHT's default, at the least (see
# `inflight_for`).
FD_RESERVE = 64
_UNLIMITED_FDS = 1 << 20  # what an unlimited RLIMIT_NOFILE is counted as


def fd_ceiling() -> int:
    """The process's file-descriptor ceiling: its soft RLIMIT_NOFILE (`mediagate serve` raises
    it to the hard limit first)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED_FDS if soft == resource.RLIM_INFINITY else soft


def inflight_for(ceiling: int) -> int:
    """Calls in flight `ceiling` file descriptors hold: (ceiling - reserve) / 2, the reserve
    a tenth of the ceiling and at least FD_RESERVE. 1,024 -> 461; 65,536 -> 29,491."""
    reserve = max(FD_RESERVE, ceiling // 10)
    return max(1, (ceiling - reserve) // 2)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAGATE_", extra="ignore")

    upstream_url: str | None = None
    key_default: SecretStr | None = None
    key_openaiofficial: SecretStr | None = None
    key_openaiofficialenterprise: SecretStr | None = None
    # The video families' own groups: Seedance 2.x (SeeDance2, and Dreamina's Seedance in
    # Dreamina) and Wan (Wan).
    key_seedance2: SecretStr | None = None
    key_dreamina: SecretStr | None = None
    key_wan: SecretStr | None = None
    # The same groups' keys under their earlier names (Sora2Official, GPTImage2 Enterprise):
    # still read, with a warning at start naming the new variable (the catalog's `groups`
    # says which group a name was).
    key_sora2official: SecretStr | None = None
    key_gptimage2enterprise: SecretStr | None = None
    # Keys of groups that only a catalog override knows about, keyed by env var name. Filled
    # from the environment by `_collect_group_keys`, or passed directly by tests.
    extra_group_keys: dict[str, SecretStr] = Field(default_factory=dict)

    api_keys: SecretStr | None = None
    # Per-team keys with scopes, limits and budgets (accounting/clients.py); re-read on change.
    keys_file: Path | None = None
    # The key of the admin usage view (GET /v1/admin/usage); no admin view without one. It is
    # also one `admin` of the admin API (/admin/v1), named "admin".
    admin_key: SecretStr | None = None
    # The admin API's keys, stored as digests: `name:role:sha256,...` with role `admin` or
    # `viewer` and the SHA-256 (hex) of the key (`mediagate keys digest` prints one).
    admin_keys: SecretStr | None = None
    # When set, GET /metrics needs `Authorization: Bearer <token>` (it shows tenant names,
    # spend and budgets); unset, /metrics is open (keep it off the public Ingress then).
    metrics_token: SecretStr | None = None
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    data_dir: Path = Path("./data")
    config: Path | None = None

    # Downloads of images an upstream model linked to.
    fetch_max_bytes: int = 50 * 1024 * 1024
    fetch_timeout_s: float = 60.0
    # Upstream timeouts: connecting should be quick, a generation may take minutes.
    upstream_connect_timeout_s: float = 10.0
    # The upstream sender's network: aiohttp (mediagate.upstream.aiohttp_transport) or
    # httpx2's own httpcore2 pool (through mediagate.upstream.transport's adapter). Image links
    # and webhooks always use httpcore2 (the fetcher's per-address checks are a network backend
    # of its).
    upstream_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    upstream_timeout_s: float = 360.0
    # Upstream calls at once, all routes together (a route's own bound is its catalog
    # `max_concurrent`). Unset (the default): no cap of its own, so the pool never holds back a
    # call the replica admitted (MEDIAGATE_MAX_INFLIGHT bounds those). When set, a call past it
    # waits in a visible queue (mediagate.upstream.lanes), never as a connect timeout.
    max_connections: int | None = Field(default=None, ge=1)
    # Calls (requests under /v1) one replica holds at once; past it a 503 server_overloaded
    # with Retry-After at once, before anything is read, sent or reserved. Unset: derived from
    # the process's file-descriptor ceiling (`inflight_limit`). 0: no bound.
    max_inflight: int | None = Field(default=None, ge=0)
    # How long an idle pooled connection is kept for reuse. Shorter than the idle timeout of
    # the server at the other end (5 s for uvicorn, gunicorn and the simulator, 60-75 s for
    # nginx): reusing a connection that server is closing fails the call, and a paid call
    # that fails after it was written is not retried.
    upstream_keepalive_s: float = Field(default=4.0, gt=0)
    # Resilience. The largest upstream answer read into memory (a 200 with more is a 502).
    upstream_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # What all requests together may hold of upstream answers at once (mediagate.upstream.room:
    # taken as read, by Content-Length where given, until the request ends); an answer waits
    # for room at most upstream_room_wait_s (then a 503 server_overloaded, maybe paid), one
    # that can never fit is a 502 upstream_response_too_large at once. 0: no bound.
    max_inflight_upstream_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    upstream_room_wait_s: float = Field(default=30.0, ge=0)
    # Memory the C allocator keeps for the next answers instead of giving it back to the
    # system after each (mediagate.allocator; `mediagate serve` on glibc only): without it,
    # each large answer is read into fresh pages, a page fault each. All of it is given back
    # once no call has been in flight for 2 s. None: the room for upstream answers
    # (max_inflight_upstream_bytes, or 512 MiB without one); 0: glibc's own behaviour.
    allocator_keep_mb: int | None = Field(default=None, ge=0)
    # Key pools: how long a refused (401/403) or repeatedly rate-limited key rests.
    upstream_key_auth_cooldown_s: float = Field(default=600.0, ge=0)
    upstream_key_rate_cooldown_s: float = Field(default=30.0, ge=0)
    # Whether a fallback route may drop parameters the client sent (per model in the catalog).
    fallback_may_drop: bool = True
    # Idempotency-Key: how long a result is kept, the lease of a request in progress (renewed
    # while it runs, so a crashed replica's claim expires), how long a repeat waits for it,
    # and the largest answer kept for replay.
    idempotency_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    idempotency_lease_s: float = Field(default=30.0, gt=0)
    idempotency_wait_s: float = Field(default=420.0, ge=0)
    idempotency_max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # SIGTERM: stop accepting, let requests in flight finish for at most this long, exit 0.
    shutdown_timeout_s: int = Field(default=30, ge=0)
    # The usage and cost of requests that held nothing in the store (keys without a budget or
    # a concurrency limit) are booked in one batch this often, off the request path; a clean
    # stop books what is queued (mediagate.accounting.metering).
    usage_flush_interval_s: float = Field(default=0.25, gt=0, le=60)
    # A request's headers are due within this many seconds of the connection opening (or of
    # the previous response on it); a slower client is cut off (slowloris).
    header_timeout_s: float = Field(default=10.0, gt=0)
    # How often the catalog's routes are checked against the upstream's GET /v1/models per
    # token group (at start, then every this many seconds; 0: never), exported as
    # mediagate_catalog_route_listed (mediagate.upstream.listing).
    catalog_check_interval_s: float = Field(default=6 * 3600.0, ge=0)
    log_level: str = "info"
    # Prompts in the access log line and the request log's `prompt` column. Unset: on in the
    # offline simulator mode (fake images), off otherwise (`prompts_logged`).
    log_prompts: bool | None = None
    # The request log (mediagate.accounting.requestlog): one row per request in the records'
    # database, written off the request path in batches of at most 500 rows, every
    # request_log_flush_s; while the database is unreachable at most request_log_queue rows
    # wait (more are dropped, counted in mediagate_request_log_dropped_total); rows older
    # than request_log_days are swept. Off (false): nothing logged, no rollup `requests`.
    request_log: bool = True
    request_log_queue: int = Field(default=10000, ge=1)
    request_log_flush_s: float = Field(default=0.5, gt=0, le=60)
    request_log_days: float = Field(default=30, gt=0)
    # OpenTelemetry traces over OTLP/HTTP (mediagate.observability.tracing). Unset: on when the
    # standard OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (see
    # `_otel_from_standard_variables`); true or false decides. Where spans go, with which
    # headers, and the service name come from the standard OTEL_* variables the SDK reads.
    otel: bool | None = None

    # The records (client keys and teams, the request log, usage rollups, budget reservations
    # and settlements, video jobs and their outbox): sqlite:///path (default: mediagate.sqlite3
    # under data_dir; one host) or postgresql://user:password@host:5432/db (several replicas).
    # Migrations are applied at start under a lock, or by `mediagate db upgrade`.
    database_url: str | None = None
    # PostgreSQL connections per process (each a worker thread of the database's own pool).
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # Where replicas coordinate (rate windows, concurrency slots, Idempotency-Key locks):
    # redis://host:port/db. Unset: the SQLite database (one host).
    redis_url: str | None = None

    # Replaced by MEDIAGATE_DATABASE_URL and MEDIAGATE_REDIS_URL: a gateway with it set refuses
    # to start, naming `mediagate db import` (which reads it) to move its records over.
    store_url: str | None = None
    # The prefix of the Redis keys (MEDIAGATE_REDIS_URL).
    store_prefix: str = "mediagate"
    # The upstream refuses a reference image whose pixels differ from `size`; fitting resizes
    # and centre-crops it instead. Off: a mismatch is a 400 naming both sizes.
    video_fit_reference: bool = True
    video_reference_max_bytes: int = 20 * 1024 * 1024
    # Decoded pixels, so a small file that inflates to gigabytes is refused before fitting.
    video_reference_max_pixels: int = 40_000_000
    # CPU-heavy image work (fitting a reference, encoding an edit's images inline) runs in a
    # pool of its own: this many at once, this many more waiting, past that a 429.
    image_workers: int = Field(default=2, ge=1)
    image_work_queue: int = Field(default=16, ge=0)
    # openai-poll-after-ms on unfinished jobs: create_and_poll sleeps this long between polls.
    # It is also the least time between two upstream status calls for one job: a retrieve or
    # a list sooner than that answers the job as last seen.
    video_poll_after_ms: int = Field(default=10_000, ge=0)
    # When set, every video route is polled at this pace instead of its catalog
    # `video.poll_interval_s` (the upstream's own advice, e.g. Muse's 15 s).
    video_poll_override_ms: int | None = Field(default=None, ge=0)
    # Reads (video list, retrieve, content) per minute per client key, a budget apart from
    # requests_per_minute; a key's `reads_per_minute` overrides it. 0: unlimited.
    reads_per_minute: int = Field(default=600, ge=0)
    # The reconciler refreshes every unfinished job this often (unset: the video polling
    # interval above, at least a second), so a job nobody polls still ends and is billed.
    reconcile_interval_s: float | None = Field(default=None, gt=0)
    # A job the upstream has not finished this long after its create ends as failed (cost 0).
    video_job_deadline_s: float = Field(default=3 * 3600.0, gt=0)

    # Webhooks (video.completed, video.failed), signed per Standard Webhooks with the secret
    # (whsec_<base64>). The URL is the whole gateway's; a key's `webhook_url` in the keys file
    # wins for its jobs. Private addresses only if allowed here (host:port) or in
    # fetch_allow_hosts. A failed delivery is retried after retry_base_s, doubling, for 24 h.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_retry_base_s: float = Field(default=5.0, gt=0)
    # One delivery's time limit (a receiver should answer at once and work afterwards), and how
    # long a replica holds an event it claimed: one whose claimer died mid-try is due again
    # after the hold, so the hold outlasts the timeout (a live try is never sent twice).
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_claim_hold_s: float = Field(default=15.0, gt=0)

    # Image edits: caps on what a client may upload, checked before anything goes upstream.
    edit_max_file_bytes: int = 50 * 1024 * 1024
    edit_max_total_bytes: int = 100 * 1024 * 1024
    # The largest JSON body (counted as it arrives, chunked or not): room for the largest
    # legitimate one, a video input_reference of video_reference_max_bytes as a data: URL.
    max_json_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    # The JSON of an image generation or a video remix: a prompt of at most 32,000 characters
    # and a few options, so far less (each JSON body is also capped by max_json_bytes).
    max_generation_json_bytes: int = Field(default=512 * 1024, gt=0)
    # The request bodies all clients may have this replica hold at once (by Content-Length
    # where given, counted as read otherwise; held until the request ends): past it, a 503
    # server_overloaded with Retry-After before the body is read. 0: no bound.
    max_inflight_body_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    # A request body is due within body_timeout_s of the handler starting to read it, plus
    # one second per body_min_bytes_per_s received (so a large upload at a fair pace is never
    # cut, and a trickle always is): a 408 request_timeout, and the connection is closed.
    body_timeout_s: float = Field(default=30.0, gt=0)
    body_min_bytes_per_s: int = Field(default=64 * 1024, gt=0)
    # Streaming on routes that do not stream: an SSE comment this often while the route works.
    stream_keepalive_s: float = 15.0
    # Links the gateway hands out for response_format=url.
    #   rehost: always a copy the gateway serves for image_retention_s (upstream links die in
    #   about a day); passthrough: the upstream's own link when it gave one.
    image_urls: Literal["rehost", "passthrough"] = "rehost"
    image_retention_s: float = 7 * 24 * 3600
    image_sweep_interval_s: float = 3600.0
    # Where hosted images live: a directory under data_dir by default, or s3://bucket/prefix
    # (with s3_endpoint_url for S3-compatible services) when several replicas serve the links.
    image_store_url: str | None = None
    s3_endpoint_url: str | None = None
    # The gateway's public base URL for the links it hands out; otherwise taken from
    # X-Forwarded-Proto/-Host/-Prefix, or the request itself.
    public_url: str | None = None

    # The console (/console): the platform team's and the teams' web pages, served by the
    # gateway itself (mediagate/console/).
    console: bool = True
    # Signs the console's session cookies; the same on every replica. Unset: one is generated
    # and kept in the records database (its `meta` table), so replicas sharing it agree.
    console_secret: SecretStr | None = None
    # How long a console session lasts from sign-in.
    console_session_s: float = Field(default=12 * 3600.0, gt=0)
    # The console's jobs page shows a video job as stuck when it is unfinished and its status
    # or progress has not moved for this long.
    console_stuck_after_s: float = Field(default=600.0, gt=0)
    # OpenID Connect sign-in to the console (all three set it on): the issuer's URL (its
    # /.well-known/openid-configuration is read), and this gateway's client at it, whose
    # redirect URI is <public URL>/console/oidc/callback.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    # The ID token's claims that give the user's role (`admin`, `viewer`; anything else is a
    # team `member`) and team.
    oidc_role_claim: str = "role"
    oidc_team_claim: str = "team"
    oidc_scopes: str = "openid email profile"
    # A link from a request's trace id to the tracing UI: `{trace_id}` is replaced
    # (https://tempo.example/trace/{trace_id}); unset, the console shows the id unlinked.
    trace_url_template: str | None = None
    # Keep what the gateway made (images and videos) in the hosted-object store, so the
    # console's gallery shows them and a video outlives its upstream link. Unset: on in
    # simulator mode only (`outputs_kept`).
    keep_outputs: bool | None = None
    keep_outputs_days: float = Field(default=30.0, gt=0)
    # The most the kept outputs may take in all; past it the oldest are removed first.
    keep_outputs_max_bytes: int = Field(default=10 * 1024**3, gt=0)

    # The Files and Batch APIs (mediagate.batches). A file is stored in the hosted-object store
    # (its "files" folder); each key may keep this much in files at once (0: no quota).
    files_quota_bytes: int = Field(default=2 * 1024**3, ge=0)
    # The largest file an upload may be, and the most lines a batch's input may have.
    files_max_bytes: int = Field(default=200 * 1024**2, gt=0)
    batch_max_lines: int = Field(default=50_000, gt=0)
    # Lines of one batch in flight at once, and the share of the replica's calls
    # (MEDIAGATE_MAX_INFLIGHT) all batches together may take, so interactive calls keep room.
    batch_concurrency: int = Field(default=8, gt=0)
    batch_share: float = Field(default=0.5, gt=0, le=1)
    # How often a replica looks for batch lines to run, and how long a line it took stays its
    # own without a renewal (a replica that died: its unsent lines go to another after this).
    batch_poll_interval_s: float = Field(default=0.5, gt=0)
    batch_lease_s: float = Field(default=30.0, gt=0)

    # Filled in by the CLI when it starts the embedded simulator (offline mode).
    simulator: bool = False

    @field_validator("fetch_allow_hosts", "webhook_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _hold_outlasts_a_delivery(self) -> Settings:
        if self.webhook_claim_hold_s <= self.webhook_timeout_s:
            raise ValueError(
                "MEDIAGATE_WEBHOOK_CLAIM_HOLD_S must be longer than MEDIAGATE_WEBHOOK_TIMEOUT_S"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _collect_group_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "extra_group_keys" not in data:
            declared = {
                KEY_PREFIX + name.removeprefix("key_").upper()
                for name in cls.model_fields
                if name.startswith("key_")
            }
            extra = {
                name: value
                for name, value in os.environ.items()
                if name.startswith(KEY_PREFIX) and name not in declared and value
            }
            if extra:
                data = {**data, "extra_group_keys": extra}
        return data

    @model_validator(mode="before")
    @classmethod
    def _otel_from_standard_variables(cls, data: Any) -> Any:
        # The OpenTelemetry convention: configuring an OTLP endpoint turns exporting on.
        if isinstance(data, dict) and data.get("otel") is None:
            endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
            disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
            if endpoint and not disabled:
                data = {**data, "otel": True}
        return data

    def group_keys(self, group: str) -> list[str]:
        """The upstream keys of a token group (comma-separated in the env var), possibly none."""
        name = group_env_name(group)
        field = name.removeprefix("MEDIAGATE_").lower()
        secret = getattr(self, field, None) if field in type(self).model_fields else None
        if secret is None:
            secret = self.extra_group_keys.get(name)
        if not isinstance(secret, SecretStr):
            return []
        return _split(secret.get_secret_value()) or []

    def inflight_limit(self) -> int:
        """MEDIAGATE_MAX_INFLIGHT, or by default what the file-descriptor ceiling holds: a call
        holds about two descriptors (the client's connection and the upstream's), and a tenth
        of the ceiling (at least FD_RESERVE) is kept for the rest (idle kept-alive
        connections, the stores, image links, logs)."""
        if self.max_inflight is not None:
            return self.max_inflight
        return inflight_for(fd_ceiling())

    def allocator_keep_bytes(self) -> int:
        """MEDIAGATE_ALLOCATOR_KEEP_MB in bytes, by default the room for upstream answers: the
        most that answers read whole hold at once, so what a replica under load reuses."""
        if self.allocator_keep_mb is not None:
            return self.allocator_keep_mb << 20
        return self.max_inflight_upstream_bytes or 512 << 20

    def reconcile_every_s(self) -> float:
        """How often the reconciler refreshes unfinished jobs."""
        if self.reconcile_interval_s is not None:
            return self.reconcile_interval_s
        return max(1.0, self.video_poll_after_ms / 1000)

    def outputs_kept(self) -> bool:
        """MEDIAGATE_KEEP_OUTPUTS, by default on in simulator mode only."""
        return self.simulator if self.keep_outputs is None else self.keep_outputs

    def oidc_enabled(self) -> bool:
        """OpenID Connect sign-in is on when its issuer, client id and secret are all set."""
        return bool(self.oidc_issuer and self.oidc_client_id and self.oidc_client_secret)

    def prompts_logged(self) -> bool:
        """MEDIAGATE_LOG_PROMPTS, by default on in simulator mode only."""
        return self.simulator if self.log_prompts is None else self.log_prompts

    def records_url(self) -> str:
        """Where the records are: MEDIAGATE_DATABASE_URL, else a SQLite file in data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mediagate.sqlite3').resolve()}"

    def all_upstream_keys(self) -> list[str]:
        """Every configured upstream key, so error text can be scrubbed of them."""
        secrets = [
            value
            for name in type(self).model_fields
            if name.startswith("key_") and isinstance(value := getattr(self, name), SecretStr)
        ]
        secrets += self.extra_group_keys.values()
        keys: list[str] = []
        for secret in secrets:
            if secret is not None:
                keys += _split(secret.get_secret_value()) or []
        return keys

    def client_keys(self) -> dict[str, str]:
        """`name:key` pairs from MEDIAGATE_API_KEYS, as {name: key}."""
        if self.api_keys is None:
            return {}
        pairs: dict[str, str] = {}
        for item in _split(self.api_keys.get_secret_value()) or []:
            name, sep, key = item.partition(":")
            if not sep or not name or not key:
                raise ValueError("MEDIAGATE_API_KEYS entries must look like name:key")
            pairs[name.strip()] = key.strip()
        return pairs

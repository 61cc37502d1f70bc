-- The records every part of the gateway shares: teams and client keys, the request log, and
-- the usage rollups. Money is integer micro-USD (cost_micros), so sums are exact. Times are
-- Unix seconds (UTC). Owners: keys and teams accounting/clients.py; the request log
-- accounting/requestlog.py; rollups the ledger's settlement (cost, images, video seconds)
-- and the request log's writer (requests, errors, reads), each keyed by its own id so that
-- nothing is counted twice.

CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    models TEXT,
    requests_per_minute INTEGER,
    images_per_minute INTEGER,
    reads_per_minute INTEGER,
    concurrent_requests INTEGER,
    budget_usd_per_day DOUBLE PRECISION,
    budget_usd_per_month DOUBLE PRECISION,
    source TEXT NOT NULL DEFAULT 'api',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    deleted_at DOUBLE PRECISION
);

CREATE TABLE client_keys (
    name TEXT PRIMARY KEY,
    team TEXT,
    sha256 TEXT NOT NULL UNIQUE,
    previous_sha256 TEXT,
    previous_until DOUBLE PRECISION,
    models TEXT NOT NULL DEFAULT '["*"]',
    requests_per_minute INTEGER,
    images_per_minute INTEGER,
    reads_per_minute INTEGER,
    concurrent_requests INTEGER,
    budget_usd_per_day DOUBLE PRECISION,
    budget_usd_per_month DOUBLE PRECISION,
    expires_at DOUBLE PRECISION,
    webhook_url TEXT,
    source TEXT NOT NULL DEFAULT 'api',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX client_keys_team ON client_keys (team);
CREATE INDEX client_keys_previous ON client_keys (previous_sha256);

CREATE TABLE request_log (
    request_id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    key TEXT NOT NULL DEFAULT '',
    team TEXT NOT NULL DEFAULT '',
    principal TEXT,
    endpoint TEXT NOT NULL,
    method TEXT NOT NULL DEFAULT '',
    model TEXT,
    alias TEXT,
    route TEXT,
    routes_tried TEXT,
    token_group TEXT,
    mapped TEXT,
    dropped TEXT,
    tier TEXT,
    quality TEXT,
    n INTEGER,
    seconds INTEGER,
    status INTEGER NOT NULL,
    error_code TEXT,
    latency_ms DOUBLE PRECISION,
    upstream_ms DOUBLE PRECISION,
    cost_micros BIGINT NOT NULL DEFAULT 0,
    cost_state TEXT NOT NULL DEFAULT 'none',
    images INTEGER NOT NULL DEFAULT 0,
    video_seconds INTEGER NOT NULL DEFAULT 0,
    job_id TEXT,
    upstream_task_id TEXT,
    batch_id TEXT,
    custom_id TEXT,
    replayed INTEGER NOT NULL DEFAULT 0,
    trace_id TEXT,
    prompt TEXT
);
CREATE INDEX request_log_at ON request_log (at, request_id);
CREATE INDEX request_log_key_at ON request_log (key, at);
CREATE INDEX request_log_team_at ON request_log (team, at);
CREATE INDEX request_log_model_at ON request_log (model, at);
CREATE INDEX request_log_route_at ON request_log (route, at);
CREATE INDEX request_log_status_at ON request_log (status, at);
CREATE INDEX request_log_job ON request_log (job_id);
CREATE INDEX request_log_task ON request_log (upstream_task_id);
CREATE INDEX request_log_batch ON request_log (batch_id);

CREATE TABLE usage_rollups (
    grain TEXT NOT NULL,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    team TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL,
    route TEXT NOT NULL DEFAULT '',
    requests BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    reads BIGINT NOT NULL DEFAULT 0,
    images BIGINT NOT NULL DEFAULT 0,
    video_seconds BIGINT NOT NULL DEFAULT 0,
    cost_micros BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket, key, team, model, route)
);
CREATE INDEX usage_rollups_team ON usage_rollups (grain, team, bucket);
CREATE INDEX usage_rollups_bucket ON usage_rollups (grain, bucket);

-- One row per settled request or job, keyed by its id (the request id of an image request,
-- the job id of a video): the key that makes a settlement happen once. Written by the
-- ledger's settlement in the same transaction as its rollups and budget rows; the request
-- log's writer reads it to complete a row whose settlement came first.
CREATE TABLE settlements (
    id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    key TEXT NOT NULL,
    team TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL,
    route TEXT NOT NULL DEFAULT '',
    cost_micros BIGINT NOT NULL,
    images INTEGER NOT NULL DEFAULT 0,
    video_seconds INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX settlements_at ON settlements (at);

-- Video jobs (one column per field of mediagate.stores.jobs.VideoJob, the same names; `error`
-- is JSON text, `cost` USD as the Video object shows it), their webhook outbox and the job
-- store's leases. `seq` orders jobs created in the same second. This file and its PostgreSQL
-- twin differ only in how `seq` is made.
CREATE TABLE video_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    upstream_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    "group" TEXT NOT NULL,
    key_fp TEXT NOT NULL,
    prompt TEXT NOT NULL,
    size TEXT NOT NULL,
    seconds INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    completed_at BIGINT,
    expires_at BIGINT,
    error TEXT,
    cost DOUBLE PRECISION,
    remixed_from TEXT,
    reference TEXT,
    deleted_at BIGINT,
    result_url TEXT,
    asked TEXT,
    route_snapshot TEXT
);

-- The reconciler's work (jobs not yet final, oldest first), an owner's list (and the admin
-- API's, by owner and time), the admin API's list of every job (newest first, then by id) and
-- its filter by status.
CREATE INDEX video_jobs_unfinished ON video_jobs (created_at, seq) WHERE status IN ('queued', 'in_progress');
CREATE INDEX video_jobs_owner ON video_jobs (owner, created_at, seq);
CREATE INDEX video_jobs_created ON video_jobs (created_at, id);
CREATE INDEX video_jobs_status ON video_jobs (status, created_at);

-- Jobs by status, for the gauges (read every reconcile interval by every replica, so kept
-- rather than counted): changed in the transaction that inserts a job or moves its status.
CREATE TABLE video_job_counts (
    status TEXT PRIMARY KEY,
    jobs BIGINT NOT NULL
);

-- Webhook events waiting to be delivered: written in the same transaction as the job's
-- final state, deleted when delivered (or given up). `due` is when it is next tried (a
-- claimer pushes it forward while it holds the event).
CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (due);
CREATE INDEX webhook_outbox_created ON webhook_outbox (created_at);

-- Named leases (the reconciler's: one replica polls the upstream at a time).
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);

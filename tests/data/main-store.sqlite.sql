BEGIN TRANSACTION;
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE ledger_buckets (name TEXT PRIMARY KEY, tokens REAL, at REAL);
CREATE TABLE ledger_leases (id TEXT PRIMARY KEY, owner TEXT, expires REAL);
CREATE TABLE ledger_reservations (
    id TEXT PRIMARY KEY, owner TEXT, amount REAL, expires REAL);
INSERT INTO "ledger_reservations" VALUES('res_1','team-a',0.5,1.79668373014957356457e+09);
INSERT INTO "ledger_reservations" VALUES('res_2','team-b',0.25,1.79668373015037822724e+09);
CREATE TABLE ledger_settled (id TEXT PRIMARY KEY, at REAL);
INSERT INTO "ledger_settled" VALUES('req_1',1.79659733014681673047e+09);
INSERT INTO "ledger_settled" VALUES('req_2',1.79659733014748144151e+09);
INSERT INTO "ledger_settled" VALUES('video_c1',1.79659733014797711372e+09);
INSERT INTO "ledger_settled" VALUES('video_d1',1.7965973301485037804e+09);
INSERT INTO "ledger_settled" VALUES('req_3',1.79659733014904809001e+09);
CREATE TABLE ledger_spend (
    owner TEXT, period TEXT, amount REAL, PRIMARY KEY (owner, period));
INSERT INTO "ledger_spend" VALUES('team-a','2026-12-06',0.52);
INSERT INTO "ledger_spend" VALUES('team-a','2026-12',0.52);
INSERT INTO "ledger_spend" VALUES('team-b','2026-12-06',1.32345699999999988349e+00);
INSERT INTO "ledger_spend" VALUES('team-b','2026-12',1.32345699999999988349e+00);
CREATE TABLE ledger_usage (
    owner TEXT, day TEXT, model TEXT, requests INTEGER, images INTEGER,
    video_seconds INTEGER, cost REAL, PRIMARY KEY (owner, day, model));
INSERT INTO "ledger_usage" VALUES('team-a','2026-12-06','gpt-image-2',2,3,0,0.12);
INSERT INTO "ledger_usage" VALUES('team-a','2026-12-06','sora-2',1,0,8,0.4);
INSERT INTO "ledger_usage" VALUES('team-b','2026-12-06','veo-3',1,0,12,1.2);
INSERT INTO "ledger_usage" VALUES('team-b','2026-12-06','gpt-image-2',1,1,0,0.123457);
CREATE TABLE video_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    "id", "upstream_id", "owner", "model", "route", "group", "key_fp", "prompt", "size", "seconds", "status", "created_at", "updated_at", "progress", "completed_at", "expires_at", "error", "cost", "remixed_from", "reference", "deleted_at", "result_url", "asked", "route_snapshot",
    UNIQUE ("id")
);
INSERT INTO "video_jobs" VALUES(1,'video_q1','task_video_q1','team-a','sora-2','sora-2-official','Sora2Official','abababababababababababababababababababababababababababababababab','a prompt for video_q1','720x1280',8,'queued',1765000000,1765000000.25,0,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'sora-2','{"id":"sora-2-official","multiplier":1.0}');
INSERT INTO "video_jobs" VALUES(2,'video_p1','task_video_p1','team-a','sora-2','sora-2-official','Sora2Official','abababababababababababababababababababababababababababababababab','a prompt for video_p1','720x1280',8,'in_progress',1765000001,1765000001.25,40,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'sora-2','{"id":"sora-2-official","multiplier":1.0}');
INSERT INTO "video_jobs" VALUES(3,'video_c1','task_video_c1','team-a','sora-2','sora-2-official','Sora2Official','abababababababababababababababababababababababababababababababab','a prompt for video_c1','720x1280',8,'completed',1765000002,1765000002.25,100,1765000060,NULL,NULL,0.4,NULL,NULL,NULL,NULL,'sora-2','{"id":"sora-2-official","multiplier":1.0}');
INSERT INTO "video_jobs" VALUES(4,'video_f1','task_video_f1','team-b','veo-3','sora-2-official','Sora2Official','abababababababababababababababababababababababababababababababab','a prompt for video_f1','720x1280',8,'failed',1765000003,1765000003.25,0,NULL,NULL,'{"code": "moderation_blocked", "message": "no"}',0.0,NULL,NULL,NULL,NULL,'sora-2','{"id":"sora-2-official","multiplier":1.0}');
INSERT INTO "video_jobs" VALUES(5,'video_d1','task_video_d1','team-b','sora-2','sora-2-official','Sora2Official','abababababababababababababababababababababababababababababababab','a prompt for video_d1','720x1280',12,'completed',1765000004,1765000004.25,0,NULL,NULL,NULL,1.2,NULL,NULL,1765000090,NULL,'sora-2','{"id":"sora-2-official","multiplier":1.0}');
INSERT INTO "video_jobs" VALUES(6,'video_old','task_video_old','team-a','sora-2','sora-2-official','Sora2Official','abababababababababababababababababababababababababababababababab','a prompt for video_old','720x1280',8,'completed',1765000005,1765000005.25,0,NULL,NULL,NULL,0.8,NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "video_jobs" VALUES(7,'video_c2','task_video_c2','team-b','sora-2','sora-2-official','Sora2Official','abababababababababababababababababababababababababababababababab','a prompt for video_c2','720x1280',8,'completed',1765000006,1765000006.25,100,1765000060,NULL,NULL,0.4,NULL,NULL,NULL,NULL,'sora-2','{"id":"sora-2-official","multiplier":1.0}');
CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    due REAL NOT NULL
);
INSERT INTO "webhook_outbox" VALUES('evt_c1','https://hooks.example/video','{"id": "evt_c1", "object": "event", "type": "video.completed", "created_at": 1765000100, "data": {"id": "video_c1"}}',1765000100.0,0,1.79659733014085555083e+09);
INSERT INTO "webhook_outbox" VALUES('evt_f1','https://hooks.example/video','{"id": "evt_f1", "object": "event", "type": "video.failed", "created_at": 1765000100, "data": {"id": "video_f1"}}',1765000100.0,0,1.79659733014261698718e+09);
CREATE INDEX video_jobs_owner ON video_jobs ("owner", seq);
CREATE INDEX video_jobs_status ON video_jobs ("status", "created_at");
CREATE INDEX webhook_outbox_due ON webhook_outbox (due);
CREATE INDEX ledger_leases_owner ON ledger_leases (owner);
CREATE INDEX ledger_reservations_owner ON ledger_reservations (owner);
CREATE INDEX ledger_settled_at ON ledger_settled (at);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('video_jobs',7);
COMMIT;

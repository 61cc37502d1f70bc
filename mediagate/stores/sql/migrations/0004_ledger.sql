-- The ledger's money (mediagate/stores/sql/ledger.py). Money is integer micro-USD.
--
-- budgets: one row per owner (a key, or a team its keys share) and period (a UTC day
-- YYYY-MM-DD, or month YYYY-MM): what is settled, and what running requests hold. A
-- reservation is one conditional UPDATE per row it holds (room left, or nothing changes).
CREATE TABLE budgets (
    owner_kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    spent_micros BIGINT NOT NULL DEFAULT 0,
    reserved_micros BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_kind, owner, period)
);

-- A request's (or video job's) hold on the budgets until it settles, by its id: the periods
-- of each budget row it holds (NULL: that row is not held, having no limit).
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    team TEXT NOT NULL DEFAULT '',
    amount_micros BIGINT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    key_day TEXT,
    key_month TEXT,
    team_day TEXT,
    team_month TEXT
);
CREATE INDEX reservations_key ON reservations (key, expires);
CREATE INDEX reservations_team ON reservations (team, expires);

-- What `mediagate db import` moved from an old store, by an id of its own, so that running
-- it again moves nothing twice.
CREATE TABLE ledger_imports (
    id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
);

-- Settings the gateway keeps for itself, the same on every replica (the console's session
-- secret when MEDIAGATE_CONSOLE_SECRET is unset, say).
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);

"""Values the gateway keeps for itself in the records database (`meta`), the same on every
replica: the console's session secret when MEDIAGATE_CONSOLE_SECRET is unset."""

from __future__ import annotations

import secrets
import time

from mediagate.stores.sql.db import Database, Tx

CONSOLE_SECRET = "console_secret"  # noqa: S105 (the row's name, not a secret)


async def kept_secret(database: Database, name: str = CONSOLE_SECRET) -> bytes:
    """The secret kept under `name`, made on first use: the first replica to ask writes a
    random one (INSERT ... ON CONFLICT DO NOTHING), and every replica reads the one kept."""
    candidate = secrets.token_hex(32)

    def keep(tx: Tx) -> str:
        tx.execute(
            "INSERT INTO meta (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            (name, candidate, time.time()),
        )
        value: str = tx.scalar("SELECT value FROM meta WHERE name = ?", (name,))
        return value

    return bytes.fromhex(await database.transaction(keep))

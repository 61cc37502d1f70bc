"""Client keys: who is calling, what they may use, and what they may spend.

Keys come from three places, held as one index by the SHA-256 of each secret: MEDIAGATE_API_KEYS
(`name:key`, no limits), a YAML keys file (MEDIAGATE_KEYS_FILE) that holds only each key's
SHA-256 with the model scopes, rate and concurrency limits and budgets a platform team sets,
and the records' database (`client_keys` and `teams`, written by the admin API and `mediagate
keys`). The file is re-read when it changes, and both configured sources are synced into the
database (`source` `env`, `file`) so every key is listed in one place. The database's keys
reach every replica within about a second: each change bumps `keys_version` in the same
transaction, and `KeyRegistry` polls that row in the background. Keys are compared in constant
time; the request path never waits on the database.

`KeysFile` is how `mediagate keys create | revoke | rotate --file` edit that file: under a lock,
each change is validated as the gateway would read it, written to a temporary file in the same
directory and renamed over the old one, so a running gateway sees either the old file or the
new one, never half of one (its reload goes by the file's mtime). The new key itself is
returned once, to be shown once; only its digest is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import fnmatch
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from mediagate.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    StoreUnavailable,
)
from mediagate.stores.sql import keys as sql
from mediagate.stores.sql.db import Database, Tx

log = logging.getLogger("mediagate")

_RELOAD_CHECK_S = 1.0  # how often (at most) the keys file's mtime is looked at
# How often a replica asks the database whether keys changed: twice a second, so a change
# (read, then reloaded) is in force everywhere within the 1 s the admin API promises.
_DB_POLL_S = 0.5
_LAST_USED_EVERY_S = 60.0  # a key's last use is written at most this often


class KeyPolicy(BaseModel):
    """One client key's entry in the keys file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # The team the key belongs to (its budgets bound the sum of its keys); None: no team.
    team: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")
    models: list[str] = Field(default_factory=lambda: ["*"])  # names or globs
    requests_per_minute: int | None = Field(default=None, ge=1)
    images_per_minute: int | None = Field(default=None, ge=1)
    # Reads (video list, retrieve, content) have a budget of their own; unset: the gateway's
    # MEDIAGATE_READS_PER_MINUTE.
    reads_per_minute: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)
    budget_usd_per_day: float | None = Field(default=None, ge=0)
    budget_usd_per_month: float | None = Field(default=None, ge=0)
    # When the key (its current secret) was made: `mediagate keys create` and `rotate` set it.
    created: datetime | None = None
    # Where this key's video.completed / video.failed events go (else MEDIAGATE_WEBHOOK_URL).
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    # After this the key is refused (401 `api_key_expired`); None: it does not expire.
    expires_at: datetime | None = None
    # The key's team's model allow-list, when the team has one (set by the registry).
    _team_models: list[str] | None = PrivateAttr(default=None)

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def allows(self, model: str) -> bool:
        """The model is in the key's allow-list, and in its team's when the team has one."""
        if not any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models):
            return False
        team = self._team_models
        return team is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in team)

    def require(self, model: str) -> None:
        if not self.allows(model):
            raise PermissionDenied(
                f"The key '{self.name}' may not use the model '{model}'.",
                param="model",
                code="model_not_allowed",
            )


class TeamPolicy(BaseModel):
    """A team: the limits and budgets its keys share (a key's own limits apply too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    models: list[str] | None = None  # names or globs its keys may use (None: no team limit)
    requests_per_minute: int | None = Field(default=None, ge=1)
    images_per_minute: int | None = Field(default=None, ge=1)
    reads_per_minute: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)
    budget_usd_per_day: float | None = Field(default=None, ge=0)
    budget_usd_per_month: float | None = Field(default=None, ge=0)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeysFileError(ValueError):
    pass


def read_keys_file(path: Path) -> list[KeyPolicy]:
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KeysFileError(f"cannot read keys file {path}: {exc}") from None
    return _policies(data, path)


def _policies(data: Any, path: Path) -> list[KeyPolicy]:
    entries = data.get("keys", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise KeysFileError(f"{path}: expected a mapping with a 'keys' list")
    try:
        policies = [KeyPolicy.model_validate(entry) for entry in entries]
    except ValidationError as exc:
        raise KeysFileError(f"{path}: invalid key entry: {exc}") from None
    names = [p.name for p in policies]
    if len(names) != len(set(names)):
        raise KeysFileError(f"{path}: key names must be unique")
    return policies


@dataclass(frozen=True, slots=True)
class _Entry:
    """A secret the registry accepts: its key's policy, and when it stops being accepted."""

    policy: KeyPolicy
    sha256: str
    until: float | None = None  # a rotated-out secret's end of grace
    expires: float | None = None  # the key's expiry (Unix seconds)
    recorded: bool = True  # a row in the database (its last use is written there)


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _columns(policy: KeyPolicy) -> dict[str, Any]:
    """A configured key as the `client_keys` row its source is synced to."""
    return {
        "name": policy.name,
        "sha256": policy.sha256,
        "team": policy.team,
        "models": list(policy.models),
        "requests_per_minute": policy.requests_per_minute,
        "images_per_minute": policy.images_per_minute,
        "reads_per_minute": policy.reads_per_minute,
        "concurrent_requests": policy.concurrent_requests,
        "budget_usd_per_day": policy.budget_usd_per_day,
        "budget_usd_per_month": policy.budget_usd_per_month,
        "expires_at": _ts(policy.expires_at),
        "webhook_url": policy.webhook_url,
        "created_at": _ts(policy.created),
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A key's record without its digests (never answered, never logged)."""
    return {k: v for k, v in row.items() if k not in ("sha256", "previous_sha256")}


class KeyRegistry:
    """Every client key the gateway accepts, by the SHA-256 of its secret, in memory.

    Three sources: MEDIAGATE_API_KEYS (`env`), the keys file (`file`, re-read when it changes)
    and the database's `client_keys` (`api`: made by the admin API or `mediagate keys`). Once
    `open` is given the database, the first two are synced into it (so they are listed, and
    their last use recorded, beside the rest), and a background task polls the `keys_version`
    row once a second and reloads keys and teams when it moved: a change made on any replica
    is in force everywhere within about a second, and `identify` never waits on the database.
    """

    def __init__(
        self,
        env_keys: dict[str, str],
        keys_file: Path | None,
        *,
        required: bool = False,
        clock: Callable[[], float] = time.time,
        poll_s: float = _DB_POLL_S,
    ) -> None:
        self._env = [KeyPolicy(name=name, sha256=digest(key)) for name, key in env_keys.items()]
        self._file = keys_file
        self._file_policies: list[KeyPolicy] = []
        self._required = required  # outside simulator mode a key is always required
        self._clock = clock
        self._poll_s = poll_s
        self._teams: dict[str, TeamPolicy] = {}
        self._db_rows: list[dict[str, Any]] = []  # the database's own keys (source 'api')
        self._db: Database | None = None
        self._version: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._file_generation = 0  # moved by each successful re-read of the keys file
        self._synced_generation = -1
        self._used: dict[str, float] = {}  # last uses not yet written
        self._noted: dict[str, float] = {}  # when each key's last use was last queued
        self._failing = False
        self._refreshing = asyncio.Lock()  # one reload at a time: never an older over a newer
        self._mtime: float | None = None
        self._checked = 0.0
        if keys_file is not None:
            self._file_policies = self._read(keys_file)  # a bad file stops the start
            self._mtime = os.stat(keys_file).st_mtime
        self._index()

    # --- the index --------------------------------------------------------------------------

    def _index(self) -> None:
        """Every accepted secret by its digest (names are unique; two entries with one digest
        would be one key with two names: the later wins, as a scan would have found it)."""
        recorded = self._db is not None
        entries: list[_Entry] = [_Entry(p, p.sha256, recorded=recorded) for p in self._env]
        policies = list(self._env)
        for row in self._db_rows:
            try:
                policy = KeyPolicy(
                    name=row["name"],
                    sha256=row["sha256"],
                    team=row["team"],
                    models=row["models"] or ["*"],
                    requests_per_minute=row["requests_per_minute"],
                    images_per_minute=row["images_per_minute"],
                    reads_per_minute=row["reads_per_minute"],
                    concurrent_requests=row["concurrent_requests"],
                    budget_usd_per_day=row["budget_usd_per_day"],
                    budget_usd_per_month=row["budget_usd_per_month"],
                    created=_dt(row["created_at"]),
                    expires_at=_dt(row["expires_at"]),
                    webhook_url=row["webhook_url"],
                )
            except ValidationError:
                log.error("skipping the client key '%s': its record is invalid", row["name"])
                continue
            policy = self._with_team(policy)
            policies.append(policy)
            entries.append(_Entry(policy, policy.sha256, expires=row["expires_at"]))
            if row["previous_sha256"] and row["previous_until"]:
                entries.append(
                    _Entry(
                        policy,
                        row["previous_sha256"],
                        until=row["previous_until"],
                        expires=row["expires_at"],
                    )
                )
        for policy in self._file_policies:
            policy = self._with_team(policy)
            policies.append(policy)
            expires = _ts(policy.expires_at)
            entries.append(_Entry(policy, policy.sha256, expires=expires, recorded=recorded))
        self._all = policies
        self._by_digest = {entry.sha256: entry for entry in entries}
        self._by_name = {policy.name: policy for policy in reversed(policies)}

    def _with_team(self, policy: KeyPolicy) -> KeyPolicy:
        """The policy with its team's model allow-list (when the team has one) applied too."""
        team = self._teams.get(policy.team) if policy.team else None
        if team is None or team.models is None:
            return policy
        scoped = policy.model_copy()
        scoped._team_models = list(team.models)
        return scoped

    def _read(self, path: Path) -> list[KeyPolicy]:
        """The keys file's policies; a name MEDIAGATE_API_KEYS has too is refused, since the two
        tenants would share one name's budgets, limits and usage."""
        policies = read_keys_file(path)
        clash = sorted({p.name for p in policies} & {p.name for p in self._env})
        if clash:
            raise KeysFileError(
                f"{path}: the key name '{clash[0]}' is also in MEDIAGATE_API_KEYS; "
                "names must be unique across both"
            )
        return policies

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self._file is None or now - self._checked < _RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            mtime = os.stat(self._file).st_mtime
            if mtime == self._mtime:
                return
            self._file_policies = self._read(self._file)
            self._mtime = mtime
            self._file_generation += 1
            self._index()
            log.info("reloaded the keys file: %d keys", len(self._file_policies))
        except (OSError, KeysFileError) as exc:
            # Keep serving with the keys we had rather than locking every team out.
            log.error("keeping the previous keys: %s", exc)

    # --- the database -----------------------------------------------------------------------

    async def open(self, database: Database, *, serve: bool = True) -> None:
        """Keys and teams from `database` too. `serve`: the gateway's registry, which syncs
        MEDIAGATE_API_KEYS and the keys file into it and keeps its index fresh in the
        background (`mediagate keys` only reads and writes records)."""
        self._db = database
        if not serve:
            return
        await self._sync()
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._poll_forever(), name="mediagate-keys")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            with contextlib.suppress(StoreUnavailable):
                await self._flush_used()

    def _database(self) -> Database:
        if self._db is None:
            raise StoreUnavailable("Client keys are not kept in a database here.")
        return self._db

    async def _sync(self) -> None:
        """MEDIAGATE_API_KEYS and the keys file made their rows of `client_keys`."""
        generation = self._file_generation
        env = [_columns(p) for p in self._env]
        file = [_columns(p) for p in self._file_policies]
        now = self._clock()

        def work(tx: Tx) -> list[str]:
            return sql.sync_configured(tx, {"env": env, "file": file}, now)

        for name in await self._database().transaction(work):
            log.error(
                "the configured key '%s' is not recorded in the database: a key made through "
                "the admin API has its name, or another configured name has its secret",
                name,
            )
        self._synced_generation = generation

    async def refresh(self, *, force: bool = False) -> bool:
        """Keys and teams read again if they changed anywhere (one small read when not);
        True when the index was rebuilt."""
        async with self._refreshing:
            return await self._refresh(force)

    async def _refresh(self, force: bool) -> bool:
        db = self._database()
        seen = self._version

        def load(tx: Tx) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]]] | None:
            current = sql.version(tx)
            if current == seen and not force:
                return None
            return current, sql.active_keys(tx), sql.teams(tx)

        loaded = await db.run(load)
        if loaded is None:
            return False
        self._version, rows, teams = loaded
        self._db_rows = [row for row in rows if row["source"] == "api"]
        built: dict[str, TeamPolicy] = {}
        for row in teams:
            try:
                built[row["name"]] = TeamPolicy.model_validate(
                    {f: row[f] for f in ("name", *sql.TEAM_FIELDS)}
                )
            except ValidationError:
                log.error("skipping the team '%s': its record is invalid", row["name"])
        self._teams = built
        self._index()
        return True

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                self._maybe_reload()
                if self._synced_generation != self._file_generation:
                    await self._sync()
                await self.refresh()
                await self._flush_used()
                if self._failing:
                    log.info("client keys: the database answers again")
                self._failing = False
            except StoreUnavailable as exc:
                if not self._failing:  # said once per outage; the keys in force are kept
                    log.warning("client keys: keeping the keys in force: %s", exc.message)
                self._failing = True
            except Exception as exc:  # the next round may work; this task must not end
                log.error("client keys: refresh failed: %s", type(exc).__name__)

    async def _flush_used(self) -> None:
        if not self._used:
            return
        used, self._used = self._used, {}
        await self._database().transaction(lambda tx: sql.touch(tx, used.items()))

    # --- the request path -------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._required or bool(self._env) or self._file is not None or bool(self._db_rows)

    def enabled_by_config(self) -> bool:
        """MEDIAGATE_API_KEYS or a keys file give keys (the database's are not known yet)."""
        return bool(self._env) or self._file is not None

    def policies(self) -> list[KeyPolicy]:
        self._maybe_reload()
        return list(self._all)

    def policy(self, name: str) -> KeyPolicy | None:
        self._maybe_reload()
        return self._by_name.get(name)

    def team(self, name: str | None) -> TeamPolicy | None:
        """The team a key belongs to (None: no team, or one with no record)."""
        return self._teams.get(name) if name else None

    def identify(self, authorization: str | None) -> KeyPolicy:
        """The policy of the key in an `Authorization: Bearer …` header, or 401."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
            )
        presented = digest(token.strip())
        self._maybe_reload()
        # O(1) by digest: the lookup's timing can only tell about the SHA-256 of what was
        # presented, never about a stored key. The match is still confirmed in constant time.
        found = self._by_digest.get(presented)
        expected = found.sha256 if found is not None else _NO_DIGEST
        if not hmac.compare_digest(presented.encode(), expected.encode()) or found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return self._admitted(found)

    def usable(self, name: str) -> KeyPolicy:
        """The policy of the key named `name`, as `identify` would admit its current secret:
        for a caller already authenticated otherwise (the console's signed-in user acting with
        one of its team's keys). 401 as `identify` says when the key is gone or expired."""
        self._maybe_reload()
        current = [
            entry
            for entry in self._by_digest.values()
            if entry.policy.name == name and entry.until is None
        ]
        if not current:
            raise AuthenticationFailed(f"There is no key named '{name[:64]}' to act with.")
        return self._admitted(current[0])

    def _admitted(self, found: _Entry) -> KeyPolicy:
        now = self._clock()
        if found.until is not None and now >= found.until:
            raise AuthenticationFailed("Incorrect API key provided.")  # rotated out
        if found.expires is not None and now >= found.expires:
            when = datetime.fromtimestamp(found.expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise AuthenticationFailed(
                f"This API key expired at {when}: ask for a new one.", code="api_key_expired"
            )
        policy = found.policy
        if found.recorded and now - self._noted.get(policy.name, 0.0) >= _LAST_USED_EVERY_S:
            self._noted[policy.name] = now
            self._used[policy.name] = now  # written by the background task
        return policy

    # --- records: the admin API and `mediagate keys` ---------------------------------------

    def _read_only(self, row: dict[str, Any]) -> None:
        if row["source"] == "file":
            where = str(self._file) if self._file is not None else "MEDIAGATE_KEYS_FILE"
            raise Conflict(
                f"The key '{row['name']}' is defined in the keys file {where}: change it "
                "there (mediagate keys ... --file).",
                code="key_read_only",
            )
        if row["source"] == "env":
            raise Conflict(
                f"The key '{row['name']}' is defined in MEDIAGATE_API_KEYS: change it there.",
                code="key_read_only",
            )

    async def _changed(self) -> None:
        """This replica's index at once after its own change (the others within a second)."""
        if self._task is not None:
            with contextlib.suppress(StoreUnavailable):
                await self.refresh()

    async def keys(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        team: str | None = None,
        name: str | None = None,
    ) -> list[dict[str, Any]]:
        rows = await self._database().run(
            lambda tx: sql.list_keys(tx, after=after, limit=limit, team=team, name=name)
        )
        return [_public(row) for row in rows]

    async def key(self, name: str) -> dict[str, Any] | None:
        row = await self._database().run(lambda tx: sql.get_key(tx, name))
        return None if row is None else _public(row)

    def _check_team(self, tx: Tx, fields: dict[str, Any]) -> None:
        team = fields.get("team")
        if team is not None and sql.get_team(tx, team) is None:
            raise InvalidRequest(
                f"No team named '{team}': create it first (POST /admin/v1/teams).",
                param="team",
                code="team_not_found",
            )

    async def create_key(self, name: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A new key: its secret (to be shown once) and its record."""
        secret = new_key()
        now = self._clock()

        def work(tx: Tx) -> dict[str, Any] | None:
            self._check_team(tx, fields)
            if not sql.insert_key(tx, name, digest(secret), fields, now):
                return None
            return sql.get_key(tx, name)

        row = await self._database().transaction(work)
        if row is None:
            raise Conflict(f"A key named '{name}' exists already.", code="key_exists")
        await self._changed()
        return secret, _public(row)

    async def _change(
        self, name: str, change: Callable[[Tx, dict[str, Any], float], None]
    ) -> dict[str, Any]:
        now = self._clock()

        def work(tx: Tx) -> dict[str, Any]:
            row = sql.get_key(tx, name)
            if row is None:
                raise NotFound(f"No key named '{name}'.", code="key_not_found")
            self._read_only(row)
            if row["revoked_at"] is not None:
                raise Conflict(f"The key '{name}' is revoked.", code="key_revoked")
            change(tx, row, now)
            changed = sql.get_key(tx, name)
            assert changed is not None
            return changed

        row = await self._database().transaction(work)
        await self._changed()
        return _public(row)

    async def update_key(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        def change(tx: Tx, row: dict[str, Any], now: float) -> None:
            self._check_team(tx, fields)
            sql.update_key(tx, name, fields, now)

        return await self._change(name, change)

    async def revoke_key(self, name: str) -> dict[str, Any]:
        return await self._change(name, lambda tx, row, now: sql.revoke_key(tx, name, now))

    async def rotate_key(self, name: str, grace_s: float = 0.0) -> tuple[str, dict[str, Any]]:
        """A new secret for the key; the old one stays valid `grace_s` seconds (0: not)."""
        secret = new_key()

        def change(tx: Tx, row: dict[str, Any], now: float) -> None:
            sql.rotate_key(tx, name, digest(secret), now, grace_s)

        return secret, await self._change(name, change)

    async def teams(
        self, *, after: str | None = None, limit: int = 100, name: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._database().run(
            lambda tx: sql.list_teams(tx, after=after, limit=limit, name=name)
        )

    async def team_record(self, name: str) -> dict[str, Any] | None:
        return await self._database().run(lambda tx: sql.get_team(tx, name))

    async def create_team(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()

        def work(tx: Tx) -> dict[str, Any] | None:
            return sql.get_team(tx, name) if sql.insert_team(tx, name, fields, now) else None

        row = await self._database().transaction(work)
        if row is None:
            raise Conflict(f"A team named '{name}' exists already.", code="team_exists")
        await self._changed()
        return row

    async def update_team(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()

        def work(tx: Tx) -> dict[str, Any] | None:
            return sql.get_team(tx, name) if sql.update_team(tx, name, fields, now) else None

        row = await self._database().transaction(work)
        if row is None:
            raise NotFound(f"No team named '{name}'.", code="team_not_found")
        await self._changed()
        return row

    async def delete_team(self, name: str) -> None:
        now = self._clock()
        outcome = await self._database().transaction(lambda tx: sql.delete_team(tx, name, now))
        if outcome == "missing":
            raise NotFound(f"No team named '{name}'.", code="team_not_found")
        if outcome == "has_keys":
            raise Conflict(
                f"The team '{name}' still has keys: revoke them or move them first.",
                code="team_has_keys",
            )
        await self._changed()


@dataclass(frozen=True)
class AdminKey:
    name: str
    role: Literal["admin", "viewer"]
    sha256: str


def admin_keys(raw: str | None, legacy: str | None) -> list[AdminKey]:
    """The admin API's keys: MEDIAGATE_ADMIN_KEYS (`name:role:sha256`, comma-separated), and
    MEDIAGATE_ADMIN_KEY as one admin named "admin" (its digest: the key itself is not kept)."""
    keys = [AdminKey("admin", "admin", digest(legacy))] if legacy else []
    for entry in (part.strip() for part in (raw or "").split(",")):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role, _, sha = rest.partition(":")
        sha = sha.strip().lower()
        if (
            not name
            or role not in ("admin", "viewer")
            or len(sha) != 64
            or any(c not in "0123456789abcdef" for c in sha)
        ):
            raise ValueError(
                "MEDIAGATE_ADMIN_KEYS entries are name:role:sha256 with role admin or viewer "
                f"and a hex SHA-256; got one starting {name[:20]!r}"
            )
        keys.append(AdminKey(name, role, sha))  # type: ignore[arg-type]
    return keys


ANONYMOUS = KeyPolicy(name="anonymous", sha256="0" * 64)
_NO_DIGEST = "-" * 64  # compared when no key matched: never equal to a hex digest


def new_key() -> str:
    return f"mg-{secrets.token_urlsafe(32)}"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _entry(policy: KeyPolicy) -> dict[str, Any]:
    """A policy as the keys file holds it (mode="json": the date as an ISO 8601 string)."""
    fields: dict[str, Any] = policy.model_dump(mode="json", exclude_none=True)
    return fields


def create_key(name: str, **limits: Any) -> tuple[str, str]:
    """A new random key and the keys-file entry for it (which holds only its SHA-256)."""
    key = new_key()
    entry = KeyPolicy(name=name, sha256=digest(key), created=_now(), **limits)
    return key, yaml.safe_dump([_entry(entry)], sort_keys=False)


_NEW_FILE_HEADER = """\
# mediagate client keys (MEDIAGATE_KEYS_FILE): one entry per team or application, holding the
# SHA-256 of its key, never the key. Edit with `mediagate keys create|revoke|rotate|list`; the
# gateway re-reads this file when it changes.
"""


class KeysFile:
    """The keys file, edited in place atomically (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def policies(self) -> list[KeyPolicy]:
        return read_keys_file(self.path) if self.path.exists() else []

    def create(self, name: str, **limits: Any) -> str:
        """Add a key named `name`; the new key (to be shown once) is returned."""
        key = new_key()
        try:
            policy = KeyPolicy(name=name, sha256=digest(key), created=_now(), **limits)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise KeysFileError(f"invalid key entry: {problems}") from None
        with self._editing() as entries:
            if any(e.get("name") == name for e in entries):
                raise KeysFileError(f"{self.path}: a key named '{name}' exists already")
            entries.append(_entry(policy))
        return key

    def revoke(self, name: str) -> None:
        """Remove the key named `name`: from the gateway's next look at the file (within a
        second or two), that key is refused."""
        with self._editing() as entries:
            kept = [e for e in entries if e.get("name") != name]
            if len(kept) == len(entries):
                raise KeysFileError(f"{self.path}: no key named '{name}'")
            entries[:] = kept

    def rotate(self, name: str) -> str:
        """A new secret for the key named `name`, keeping its scopes, limits and budgets (and
        its usage, which is booked by name); the old secret is refused from then on."""
        key = new_key()
        with self._editing() as entries:
            entry = next((e for e in entries if e.get("name") == name), None)
            if entry is None:
                raise KeysFileError(f"{self.path}: no key named '{name}'")
            entry["sha256"] = digest(key)
            entry["created"] = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        return key

    @contextlib.contextmanager
    def _editing(self) -> Iterator[list[dict[str, Any]]]:
        """The file's entries to change in place; written back (validated, atomically) when
        the block ends without an error. One edit at a time: a lock on the directory."""
        directory = self.path.parent
        lock = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            header, data = self._read()
            entries = data.setdefault("keys", [])
            if not isinstance(entries, list):
                raise KeysFileError(f"{self.path}: expected a mapping with a 'keys' list")
            yield entries
            _policies(data, self.path)  # refuse to write what the gateway would not load
            self._write(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        finally:
            os.close(lock)  # releases the lock

    def _read(self) -> tuple[str, dict[str, Any]]:
        """The file's leading comment lines (kept; YAML loses the others) and its data."""
        if not self.path.exists():
            return _NEW_FILE_HEADER, {"keys": []}
        try:
            text = self.path.read_text("utf-8")
            data = yaml.safe_load(text) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise KeysFileError(f"cannot read keys file {self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise KeysFileError(f"{self.path}: expected a mapping with a 'keys' list")
        header = ""
        for line in text.splitlines(keepends=True):
            if not line.startswith("#"):
                break
            header += line
        return header, data

    def _write(self, text: str) -> None:
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        # The rename itself is durable once the directory is.
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

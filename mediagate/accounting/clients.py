"""Client keys: who is calling, what they may use, and what they may spend.

Keys come from MEDIAGATE_API_KEYS (`name:key`, no limits) and from a YAML keys file
(MEDIAGATE_KEYS_FILE) that holds only each key's SHA-256, with the model scopes, rate and
concurrency limits and budgets a platform team sets per team, and when the key was made. The
file is re-read when it changes, so adding or revoking a key needs no restart. Keys are compared
in constant time.

`KeysFile` is how `mediagate keys create | revoke | rotate` edit that file: under a lock, each
change is validated as the gateway would read it, written to a temporary file in the same
directory and renamed over the old one, so a running gateway sees either the old file or the
new one, never half of one (its reload goes by the file's mtime). The new key itself is
returned once, to be shown once; only its digest is kept.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mediagate.errors import AuthenticationFailed, PermissionDenied

log = logging.getLogger("mediagate")

_RELOAD_CHECK_S = 1.0  # how often (at most) the keys file's mtime is looked at


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

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

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


class KeyRegistry:
    def __init__(self, env_keys: dict[str, str], keys_file: Path | None) -> None:
        self._env = [KeyPolicy(name=name, sha256=digest(key)) for name, key in env_keys.items()]
        self._file = keys_file
        self._file_policies: list[KeyPolicy] = []
        self._teams: dict[str, TeamPolicy] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        if keys_file is not None:
            self._file_policies = self._read(keys_file)  # a bad file stops the start
            self._mtime = os.stat(keys_file).st_mtime
        self._index()

    def _index(self) -> None:
        """Every policy by its key's digest (names are unique; two entries with one digest
        would be one key with two names: the later wins, as a scan would have found it)."""
        self._all = [*self._env, *self._file_policies]
        self._by_digest = {policy.sha256: policy for policy in self._all}

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
            self._index()
            log.info("reloaded the keys file: %d keys", len(self._file_policies))
        except (OSError, KeysFileError) as exc:
            # Keep serving with the keys we had rather than locking every team out.
            log.error("keeping the previous keys: %s", exc)

    @property
    def enabled(self) -> bool:
        return bool(self._env) or self._file is not None

    def policies(self) -> list[KeyPolicy]:
        self._maybe_reload()
        return list(self._all)

    def policy(self, name: str) -> KeyPolicy | None:
        return next((p for p in self.policies() if p.name == name), None)

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
        return found


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

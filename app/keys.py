"""Client keys: who is calling, what they may use, and what they may spend.

Keys come from MEDIAGATE_API_KEYS (`name:key`, no limits) and from a YAML keys file
(MEDIAGATE_KEYS_FILE) that holds only each key's SHA-256, with the model scopes, rate and
concurrency limits and budgets a platform team sets per team. The file is re-read when it
changes, so adding or revoking a key needs no restart. Keys are compared in constant time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import AuthenticationFailed, PermissionDenied

log = logging.getLogger("mediagate")

_RELOAD_CHECK_S = 1.0  # how often (at most) the keys file's mtime is looked at


class KeyPolicy(BaseModel):
    """One client key's entry in the keys file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    models: list[str] = Field(default_factory=lambda: ["*"])  # names or globs
    requests_per_minute: int | None = Field(default=None, ge=1)
    images_per_minute: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)
    budget_usd_per_day: float | None = Field(default=None, ge=0)
    budget_usd_per_month: float | None = Field(default=None, ge=0)

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


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeysFileError(ValueError):
    pass


def read_keys_file(path: Path) -> list[KeyPolicy]:
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KeysFileError(f"cannot read keys file {path}: {exc}") from None
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
        self._mtime: float | None = None
        self._checked = 0.0
        if keys_file is not None:
            self._file_policies = read_keys_file(keys_file)  # a bad file stops the start
            self._mtime = os.stat(keys_file).st_mtime

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self._file is None or now - self._checked < _RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            mtime = os.stat(self._file).st_mtime
            if mtime == self._mtime:
                return
            self._file_policies = read_keys_file(self._file)
            self._mtime = mtime
            log.info("reloaded the keys file: %d keys", len(self._file_policies))
        except (OSError, KeysFileError) as exc:
            # Keep serving with the keys we had rather than locking every team out.
            log.error("keeping the previous keys: %s", exc)

    @property
    def enabled(self) -> bool:
        return bool(self._env) or self._file is not None

    def policies(self) -> list[KeyPolicy]:
        self._maybe_reload()
        return [*self._env, *self._file_policies]

    def policy(self, name: str) -> KeyPolicy | None:
        return next((p for p in self.policies() if p.name == name), None)

    def identify(self, authorization: str | None) -> KeyPolicy:
        """The policy of the key in an `Authorization: Bearer …` header, or 401."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
            )
        presented = digest(token.strip()).encode()
        found = None
        # Compare against every key so timing does not tell which one (or how many) matched.
        for policy in self.policies():
            if hmac.compare_digest(presented, policy.sha256.encode()):
                found = policy
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return found


ANONYMOUS = KeyPolicy(name="anonymous", sha256="0" * 64)


def create_key(name: str, **limits: Any) -> tuple[str, str]:
    """A new random key and the keys-file entry for it (which holds only its SHA-256)."""
    key = f"mg-{secrets.token_urlsafe(32)}"
    entry = KeyPolicy(name=name, sha256=digest(key), **limits)
    fields = entry.model_dump(exclude_none=True)
    return key, yaml.safe_dump([fields], sort_keys=False)

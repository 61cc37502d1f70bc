"""Configuration from `MEDIAGATE_*` environment variables.

Settings are built once by the CLI (or by a test) and passed into `create_app`; nothing in the
package reads the environment behind their back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KEY_PREFIX = "MEDIAGATE_KEY_"


def group_env_name(group: str) -> str:
    """The env var of a group's keys: "GPTImage2 Enterprise" -> MEDIAGATE_KEY_GPTIMAGE2ENTERPRISE.

    Deriving the name from the group means a group added in the catalog YAML needs no code.
    """
    return KEY_PREFIX + re.sub(r"[^A-Za-z0-9]", "", group).upper()


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAGATE_", extra="ignore")

    upstream_url: str | None = None
    key_default: SecretStr | None = None
    key_sora2official: SecretStr | None = None
    key_gptimage2enterprise: SecretStr | None = None
    # Keys of groups that only a catalog override knows about, keyed by env var name. Filled
    # from the environment by `_collect_group_keys`, or passed directly by tests.
    extra_group_keys: dict[str, SecretStr] = Field(default_factory=dict)

    api_keys: SecretStr | None = None
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    data_dir: Path = Path("./data")
    config: Path | None = None

    # Downloads of images an upstream model linked to.
    fetch_max_bytes: int = 50 * 1024 * 1024
    fetch_timeout_s: float = 60.0
    # Upstream timeouts: connecting should be quick, a generation may take minutes.
    upstream_connect_timeout_s: float = 10.0
    upstream_timeout_s: float = 360.0
    max_connections: int = 200
    log_level: str = "info"
    log_prompts: bool = False

    # Filled in by the CLI when it starts the embedded simulator (offline mode).
    simulator: bool = False

    @field_validator("fetch_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="before")
    @classmethod
    def _collect_group_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "extra_group_keys" not in data:
            declared = {
                group_env_name(g) for g in ("default", "sora2official", "gptimage2enterprise")
            }
            extra = {
                name: value
                for name, value in os.environ.items()
                if name.startswith(KEY_PREFIX) and name not in declared and value
            }
            if extra:
                data = {**data, "extra_group_keys": extra}
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

    def all_upstream_keys(self) -> list[str]:
        """Every configured upstream key, so error text can be scrubbed of them."""
        secrets = [self.key_default, self.key_sora2official, self.key_gptimage2enterprise]
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

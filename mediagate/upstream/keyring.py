"""Upstream key pools: each token group's keys, handed out in turn, with cool-downs.

Any MEDIAGATE_KEY_<GROUP> may hold several comma-separated keys. New work is spread over them
round-robin. A key the upstream refuses (401/403) is benched for `auth_cooldown_s` (it was
probably revoked); a key that is rate limited `rate_strikes` times in a row is benched for
`rate_cooldown_s` (or its Retry-After, if longer). A benched key serves again when its
cool-down ends. If every key of a group is benched, the one whose cool-down ends first is used
rather than failing outright: the upstream's answer is then the truth, and a key that works
again clears its bench. A video job stays bound to the key that created it (`by_fingerprint`),
benched or not: the upstream shows a job only to its creator.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Collection

from mediagate.errors import UpstreamError

log = logging.getLogger("mediagate")


def key_fingerprint(key: str) -> str:
    """How a job remembers its upstream key: a SHA-256 digest, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(
        self,
        keys: dict[str, list[str]],
        *,
        auth_cooldown_s: float = 600.0,
        rate_cooldown_s: float = 30.0,
        rate_strikes: int = 2,
        on_bench: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = {group: list(group_keys) for group, group_keys in keys.items() if group_keys}
        self._turn = dict.fromkeys(self._keys, 0)
        self._auth_cooldown_s = auth_cooldown_s
        self._rate_cooldown_s = rate_cooldown_s
        self._rate_strikes = rate_strikes
        self._on_bench = on_bench  # (group, reason): for the metric
        self._clock = clock
        self._benched: dict[str, float] = {}  # key -> monotonic time its cool-down ends
        self._strikes: dict[str, int] = {}
        self._refused: set[str] = set()  # benched because the upstream refused them (401/403)

    def has(self, group: str) -> bool:
        return group in self._keys

    def add_groups(self, keys: dict[str, list[str]]) -> list[str]:
        """The keys of groups the ring does not hold yet (a reloaded catalog's new groups),
        taken in; a group it holds keeps its keys, turns and cool-downs. The groups added."""
        added = sorted(g for g, group_keys in keys.items() if group_keys and g not in self._keys)
        for group in added:
            self._keys[group] = list(keys[group])
            self._turn[group] = 0
        return added

    def _group(self, group: str) -> list[str]:
        try:
            return self._keys[group]
        except KeyError:
            raise UpstreamError(
                f"No upstream key is configured for token group '{group}'.", code="no_upstream_key"
            ) from None

    def _resting(self, key: str, now: float) -> bool:
        return self._benched.get(key, 0.0) > now

    def next(self, group: str, avoid: Collection[str] = ()) -> str:
        """The group's next key in turn that is not cooling down and not in `avoid` (the keys
        this call already tried); failing that, the key whose cool-down ends first."""
        keys = self._group(group)
        now = self._clock()
        start = self._turn[group]
        for offset in range(len(keys)):
            index = (start + offset) % len(keys)
            key = keys[index]
            if key not in avoid and not self._resting(key, now):
                self._turn[group] = index + 1
                return key
        untried = [k for k in keys if k not in avoid] or keys
        # Every key rests: a rate-limited key before a refused one (its answer is the more
        # actionable: wait and retry), then the one whose cool-down ends first.
        return min(untried, key=lambda k: (k in self._refused, self._benched.get(k, 0.0)))

    def pick(self, group: str) -> tuple[str, str]:
        """The next key of a group and its fingerprint, for a job that must keep using it."""
        key = self.next(group)
        return key, key_fingerprint(key)

    def available(self, group: str, avoid: Collection[str] = ()) -> bool:
        """Whether the group has a key that is neither cooling down nor in `avoid`."""
        now = self._clock()
        return any(k not in avoid and not self._resting(k, now) for k in self._keys.get(group, ()))

    def by_fingerprint(self, group: str, fingerprint: str) -> str:
        """The key that created a job. Upstream jobs are visible only to their creator, so no
        other key will do."""
        for key in self._keys.get(group, ()):
            if hmac.compare_digest(key_fingerprint(key), fingerprint):
                return key
        raise UpstreamError(
            f"The upstream key of token group '{group}' that created this job is no longer "
            "configured; the upstream shows a job only to the key that created it.",
            code="upstream_key_unavailable",
        )

    def succeeded(self, key: str) -> None:
        self._strikes.pop(key, None)
        self._benched.pop(key, None)
        self._refused.discard(key)

    def failed(self, group: str, key: str, status: int, retry_after_s: float | None) -> None:
        """Learn from an error status the upstream gave this key."""
        if status in (401, 403):
            self._refused.add(key)
            self._bench(group, key, self._auth_cooldown_s, "auth")
        elif status == 429:
            self._refused.discard(key)
            strikes = self._strikes.get(key, 0) + 1
            self._strikes[key] = strikes
            if strikes >= self._rate_strikes:
                wait = max(self._rate_cooldown_s, min(retry_after_s or 0.0, self._auth_cooldown_s))
                self._bench(group, key, wait, "rate_limited")

    def _bench(self, group: str, key: str, seconds: float, reason: str) -> None:
        self._benched[key] = self._clock() + seconds
        self._strikes.pop(key, None)
        log.warning(
            "upstream key cooling down",
            extra={
                "fields": {
                    "group": group,
                    "key_sha256": key_fingerprint(key)[:12],  # which one, never the key
                    "reason": reason,
                    "seconds": round(seconds, 1),
                }
            },
        )
        if self._on_bench is not None:
            self._on_bench(group, reason)

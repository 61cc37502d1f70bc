"""Retry policy: which failed upstream attempts may be tried again, and after how long. Pure.

A generation is paid for and may take minutes, so a paid call (a POST that makes something) is
retried only where the upstream surely did no work: it could not be reached at all (connect
error, connect timeout; a pool timeout, which the sender no longer sets, counts the same), it
said 429 or 503, or it answered a status the route's policy names. A timeout, or a connection
that broke after the request went out, may have been paid for: never retried. Free calls (a
job's status, a list, a download, a delete) may be retried on any transport failure and any
5xx. The policy is catalog data per route (`retry:` and `timeouts:` in catalog.yaml);
`mediagate.upstream.sender` runs the loop.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx2

from mediagate.catalog import RetryPolicy

# What went wrong on an attempt that got no usable HTTP answer.
CONNECT = "connect"  # never reached the upstream: safe to retry even a paid call
TIMEOUT = "timeout"  # sent, no (complete) answer in time: the upstream may be working
RESET = "reset"  # the connection broke after the request went out
GARBAGE = "garbage"  # an answer that cannot be used (not JSON, too large)

_FREE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Retry:
    delay_s: float
    reason: str  # a bounded metric label: connect, timeout, reset, garbage, rate_limited, ...


def failure_kind(exc: BaseException) -> str:
    """CONNECT, TIMEOUT or RESET for an exception raised while sending or reading."""
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return CONNECT
    if isinstance(exc, TimeoutError | httpx2.TimeoutException):
        return TIMEOUT
    return RESET


def _reason(
    policy: RetryPolicy, *, paid: bool, status: int | None, failure: str | None
) -> str | None:
    if failure == CONNECT:
        return CONNECT
    if failure is not None:
        return None if paid else failure
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "unavailable"
    if status in policy.on_status:
        return "policy"
    if not paid and status in _FREE_STATUSES:
        return "server_error"
    return None


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform between 0 and the exponential bound, so clients that failed
    together do not all come back together."""
    bound = min(policy.max_backoff_s, policy.backoff_s * 2 ** min(attempt - 1, 30))
    return (rng or random).uniform(0, bound)


def decide(
    policy: RetryPolicy,
    attempt: int,
    *,
    paid: bool,
    status: int | None = None,
    failure: str | None = None,
    retry_after_s: float | None = None,
    other_key: bool = False,
    rng: random.Random | None = None,
) -> Retry | None:
    """Whether attempt number `attempt` (1-based), which failed with `status` or `failure`, is
    followed by another, and after how long. `other_key`: the group has a key that is neither
    cooling down nor already tried for this call."""
    if status in (401, 403):
        # The key was refused before any work; another key of the group may be fine. Bounded
        # by the group's keys, not by max_attempts: each refused key is benched.
        return Retry(0.0, "auth") if other_key else None
    if attempt >= (policy.max_attempts if paid else policy.status_max_attempts):
        return None
    reason = _reason(policy, paid=paid, status=status, failure=failure)
    if reason is None:
        return None
    if status == 429 and other_key:
        return Retry(0.0, reason)  # another key has a quota of its own
    if retry_after_s is not None:
        if retry_after_s > policy.max_retry_after_s:
            return None
        return Retry(retry_after_s, reason)
    return Retry(backoff(policy, attempt, rng), reason)


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait an answer asks for: `retry-after-ms`, else `Retry-After` in seconds (decimals
    accepted, as the OpenAI SDK does) or as an HTTP date. None when absent or unreadable."""
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None

"""Every error the gateway answers with, and the one rule about money that errors carry.

Everything the gateway refuses or fails at raises a `GatewayError` subclass defined here;
`mediagate.http.errors` is the only place that turns exceptions into HTTP responses, so a client
never sees a traceback, FastAPI's 422 or an upstream key.

The paid rule. An upstream failure is either *unserved* (it surely cost nothing: no answer
before any work, a 429, a 5xx, a refused key, an open breaker) or *maybe paid* (the upstream may
have done, and charged for, the work: a timeout or a broken connection after sending, an
unusable answer to a paid call). `maybe_paid` marks the second kind and `unserved` tells them
apart; nothing else decides it. A maybe-paid failure is never retried, never handed to a
fallback route, is kept as the final answer of an Idempotency-Key, and tells the client's SDK not
to retry (`x-should-retry: false`, rendered by `mediagate.http.headers`, like every header).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Iterable
from typing import Any


class GatewayError(Exception):
    status = 500
    type = "server_error"
    # Every error has a stable code (docs/api.md lists them): each class has a default.
    code: str = "internal_error"
    # False: a retry cannot help (a budget, a refused prompt), so the SDK is told not to.
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
        paid: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code:
            self.code = code
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable
        self.headers = headers or {}
        # The upstream may have done (and charged for) the work: see the paid rule above.
        self.paid = paid

    @property
    def final(self) -> bool:
        """A retry cannot help, or could pay twice: the SDK is told not to retry, and an
        Idempotency-Key keeps this answer for its repeats."""
        return self.paid or not self.retryable

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# The hierarchy: each class names only its status, type and code, so their shapes repeat on
# purpose (a duplicates report pairs them).


class InvalidRequest(GatewayError):
    """The client's request is wrong; nothing was sent upstream."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


def missing_parameter(name: str, hint: str = "") -> InvalidRequest:
    """The 400 for a required parameter the request left out (`hint`: what to send)."""
    detail = f" ({hint})" if hint else ""
    return InvalidRequest(
        f"Missing required parameter: '{name}'{detail}.",
        param=name,
        code="missing_required_parameter",
    )


class RequestTooLarge(GatewayError):
    """The request's body passed a size limit; it was refused as the bytes arrived."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    retryable = False


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """The upstream failed or answered something unusable."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class Scrubber:
    """Removes upstream keys from text that may reach a client or a log line, and internal
    addresses from the upstream's own text.

    Some resellers echo the token in their error messages; ours must never pass one on. `__call__`
    removes the keys (from any text: log lines, tracebacks, a relayed link); `upstream` is for
    text the upstream wrote (an error's message, code and param, a video's failure reason, a
    relayed header) and also removes the addresses of the upstream's own network: every IP
    literal (IPv4 in any inet_aton spelling, IPv6 with or without brackets) and every URL whose
    host is not the upstream's public host name (docs/api.md, "Upstream text").
    """

    def __init__(self, secrets: Iterable[str] = (), *, upstream_host: str | None = None) -> None:
        self._secrets: list[str] = []
        self._upstream_host: str | None = None
        self.add(secrets)
        self.trust_host(upstream_host)

    def add(self, secrets: Iterable[str]) -> None:
        known = set(self._secrets) | {s for s in secrets if s}
        self._secrets = sorted(known, key=len, reverse=True)  # longest first: no partial leaks

    def trust_host(self, host: str | None) -> None:
        """The upstream's host: its links stay in upstream text if it is a public DNS name."""
        host = (host or "").strip().lower().rstrip(".")
        self._upstream_host = host if host and _public_name(host) else None

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def upstream(self, text: str) -> str:
        """Upstream text made fit for a client, a log line, a trace or the store."""
        text = self(text)
        if "://" in text:
            text = _URL.sub(self._url, text)
        if ":" in text:
            text = _IPV6.sub(_ipv6, text)
        text = _IPV4.sub(_ipv4, text)
        if "." in text:
            text = _INTERNAL_NAME.sub(INTERNAL_ADDRESS, text)
        return text

    def upstream_code(self, code: object, default: str) -> str:
        """An upstream error code passed on only if it is a plain token, else `default`."""
        if not isinstance(code, str) or not code:
            return default
        return code if _TOKEN.fullmatch(code) and self(code) == code else default

    def upstream_param(self, param: object) -> str | None:
        """An upstream error's param passed on only if it names a field, else None."""
        if not isinstance(param, str) or not param:
            return None
        return param if _PARAM.fullmatch(param) and self(param) == param else None

    def _url(self, match: re.Match[str]) -> str:
        whole = match.group(0)
        url = whole.rstrip(".,;:!?)]}")  # the sentence's punctuation, not the link's
        rest = whole[len(url) :]
        try:
            host = (urllib.parse.urlsplit(url).hostname or "").rstrip(".")
        except ValueError:
            return INTERNAL_ADDRESS + rest
        if self._upstream_host is not None and host == self._upstream_host:
            return whole
        return INTERNAL_ADDRESS + rest


REDACTED = "[redacted]"
INTERNAL_ADDRESS = "[internal address]"
# What a relayed upstream error code and param may look like (anything else is not passed on).
_TOKEN = re.compile(r"[a-z0-9_.-]{1,64}")
_PARAM = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s\"'<>`]*")
# Four parts of decimal, 0x-hex or 0-octal digits (inet_aton's spellings of one IPv4 address).
_IPV4 = re.compile(
    r"(?<![\w.])(?:0[xX][0-9A-Fa-f]+|[0-9]+)(?:\.(?:0[xX][0-9A-Fa-f]+|[0-9]+)){3}(?!\w|\.\w)"
)
_IPV6 = re.compile(r"\[?(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f.]{0,15}){2,8}(?:%\w+)?\]?")
_INTERNAL_NAME = re.compile(
    r"(?<![\w.-])(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\."
    r"(?:internal|local|localdomain|lan|corp|intranet|home|svc|cluster\.local))(?::[0-9]+)?(?![\w-])",
    re.I,
)


def _public_name(host: str) -> bool:
    """A DNS name of the public internet: not an IP literal, not a name of a private network."""
    if ":" in host or _IPV4.fullmatch(host) or host.replace(".", "").isdigit():
        return False
    return "." in host and not _INTERNAL_NAME.fullmatch(host)


def _ipv4(match: re.Match[str]) -> str:
    try:
        socket.inet_aton(match.group(0))
    except OSError:
        return match.group(0)  # a version number such as 1.2.3.400000000000
    return INTERNAL_ADDRESS


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    address = text.rstrip(".")  # a sentence's full stop
    try:
        ipaddress.IPv6Address(address.strip("[]").split("%")[0])
    except ValueError:
        return text  # a time of day, a ratio: not an address
    return INTERNAL_ADDRESS + text[len(address) :]


class QuotaExceeded(GatewayError):
    """A client key's budget would be passed. Waiting does not make it fit: no SDK retry."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    retryable = False


class UpstreamUnavailable(UpstreamError):
    """A route's circuit breaker is open: nothing was sent."""

    status = 503
    code = "route_unavailable"


class FetchRefused(UpstreamError):
    """A link (written by an upstream model or a client) the gateway will not fetch."""

    code = "unsafe_image_url"


class AddressRefused(FetchRefused):
    """A host that is not a public address, nor allowed by the operator: asking again is
    refused again (a webhook delivery to it fails for good, not for 24 h of retries)."""


class StoreUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "job_store_unavailable"


class Conflict(GatewayError):
    """The change cannot be made to the record as it is (a name taken, a read-only key)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"
    retryable = False


class IdempotencyKeyReused(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "idempotency_key_in_use"


class IdempotencyOutcomeUnknown(GatewayError):
    """The key's first request may have been served (its replica stopped after sending it)."""

    status = 409
    type = "invalid_request_error"
    code = "idempotency_outcome_unknown"


class ServerOverloaded(GatewayError):
    """The gateway holds as many request bodies as it may (MEDIAGATE_MAX_INFLIGHT_BODY_BYTES):
    nothing of this request was read or sent; a retry after Retry-After may fit."""

    status = 503
    type = "server_error"
    code = "server_overloaded"


class RequestTimeout(GatewayError):
    """The client took longer to send its body than MEDIAGATE_BODY_TIMEOUT_S (plus the time
    its size earns at MEDIAGATE_BODY_MIN_BYTES_PER_S): cut, nothing sent upstream."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class ClientGone(GatewayError):
    """Never seen by anyone: there is no client left to read it. 499, as nginx logs it."""

    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"


def maybe_paid(error: GatewayError) -> GatewayError:
    """Mark a failure after which the upstream may have done (and charged for) the work."""
    error.paid = True
    return error


def unserved(error: GatewayError) -> bool:
    """Whether an upstream failure surely cost nothing, so another route or another try cannot
    pay twice."""
    return not error.paid and (error.status == 429 or error.status >= 500)

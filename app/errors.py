"""One error hierarchy, turned into the OpenAI error body at a single boundary.

Everything the gateway refuses or fails at raises a `GatewayError`; `install_handlers` is the only
place that turns exceptions into HTTP responses, so a client never sees a traceback, FastAPI's
422 or an upstream key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("mediagate")


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    """The client's request is wrong; nothing was sent upstream."""

    status = 400
    type = "invalid_request_error"


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
    """Removes upstream keys from text that may reach a client or a log line.

    Some resellers echo the token in their error messages; ours must never pass one on.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        known = set(self._secrets) | {s for s in secrets if s}
        self._secrets = sorted(known, key=len, reverse=True)  # longest first: no partial leaks

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


def error_response(exc: GatewayError, request_id: str | None = None) -> JSONResponse:
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _first_error_param(exc: RequestValidationError) -> str | None:
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        if loc:
            return ".".join(loc)
    return None


def install_handlers(app: FastAPI, scrub: Scrubber) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        exc.message = scrub(exc.message)
        request.state.error = exc
        return error_response(exc, _request_id(request))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI would answer 422; the OpenAI API and its SDKs expect 400 for bad input.
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        param = _first_error_param(exc)
        message = str(first.get("msg", "Invalid request"))
        if param:
            message = f"Invalid value for '{param}': {message}"
        return await on_gateway_error(request, InvalidRequest(message, param=param))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind: type[GatewayError] = GatewayError
        if exc.status_code == 404:
            kind = NotFound
        elif exc.status_code < 500:
            kind = InvalidRequest
        err = kind(str(exc.detail), status=exc.status_code)
        return await on_gateway_error(request, err)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", scrub(repr(exc)), exc_info=False)
        err = GatewayError("The gateway hit an internal error.", code="internal_error")
        return await on_gateway_error(request, err)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)

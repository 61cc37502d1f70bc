"""The one boundary where exceptions become HTTP answers: the OpenAI error body, always.

What mediagate does not offer is said plainly, in that body too: a path it does not serve (an
OpenAI endpoint such as `POST /v1/images/variations`, or any other) is a 404 with the code
`unsupported_endpoint`, a path it serves asked with another method a 405 with the code
`method_not_allowed` and an `Allow` header; both messages name the method and the path. The
OpenAI endpoints under /v1/videos and /v1/images that mediagate does not serve are a 404 even
where their path looks like one it serves (`POST /v1/videos/edits` is not a video id's 405), and
their message says what to use instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mediagate import context
from mediagate.errors import ClientGone, GatewayError, InvalidRequest, NotFound, Scrubber
from mediagate.http.headers import REQUEST_ID, for_error
from mediagate.observability.logs import format_traceback, mark_logged

log = logging.getLogger("mediagate")


def error_response(exc: GatewayError, request_id: str | None = None) -> JSONResponse:
    headers = for_error(exc)
    if request_id:
        headers[REQUEST_ID] = request_id
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


_MAX_PATH_QUOTED = 200
_REMIX = "POST /v1/videos/{video_id}/remix"
_CHARACTERS = (
    "no upstream of mediagate keeps characters: give the character's image as a create's "
    "input_reference (POST /v1/videos)."
)
# The OpenAI API's endpoints under /v1/videos and /v1/images (its OpenAPI document) that
# mediagate does not serve, and what to use instead.
NOT_SERVED: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "POST",
        re.compile(r"/v1/videos/edits/?"),
        f"to make a new clip from a completed video, remix it: {_REMIX} (a Seedance edit of "
        "the same length, a Muse continuation).",
    ),
    (
        "POST",
        re.compile(r"/v1/videos/extensions/?"),
        f"to extend a completed Muse video, remix it: {_REMIX} continues it to the next "
        "longer Muse model (muse-video-20s ... -60s).",
    ),
    ("POST", re.compile(r"/v1/videos/characters/?"), _CHARACTERS),
    ("GET", re.compile(r"/v1/videos/characters/[^/]+/?"), _CHARACTERS),
    (
        "POST",
        re.compile(r"/v1/images/variations/?"),
        "for a variation of an image, send it with a prompt to POST /v1/images/edits.",
    ),
)


def _not_served(request: Request, headers: dict[str, str]) -> GatewayError | None:
    """The 404 of an OpenAI endpoint mediagate does not serve, naming what to use instead."""
    path = request.url.path
    for method, pattern, instead in NOT_SERVED:
        if request.method == method and pattern.fullmatch(path):
            return NotFound(
                f"mediagate does not offer {method} {path[:_MAX_PATH_QUOTED]}: {instead}",
                code="unsupported_endpoint",
                headers=headers,
            )
    return None


def _unsupported(request: Request, status: int, headers: dict[str, str]) -> GatewayError:
    """The answer to a request no route serves (`headers`: the router's, in lower case): 404,
    or 405 when only the method is wrong, with every method the path takes in `Allow`."""
    allow = headers.pop("allow", "")
    not_served = _not_served(request, headers)
    if not_served is not None:
        return not_served
    where = f"{request.method} {request.url.path[:_MAX_PATH_QUOTED]}"
    if status == 405:
        allowed = _allowed_methods(request) or allow
        if allowed:
            headers["allow"] = allowed
        message = f"mediagate does not serve {where}"
        message += f"; this path takes {allowed}." if allowed else "."
        return InvalidRequest(message, code="method_not_allowed", status=405, headers=headers)
    return NotFound(
        f"mediagate does not offer {where}: it serves image generations and edits, videos "
        "and models of the OpenAI API.",
        code="unsupported_endpoint",
        headers=headers,
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method the app serves at the request's path, as an `Allow` value. Several routes
    may share a path (a list and a create, a retrieve and a delete), while the router's own 405
    names the methods of the first of them it tried."""
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    methods: set[str] = set()
    for route in request.app.routes:  # declared on the app itself (mediagate.app)
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods)) or None


def _first_error_param(exc: RequestValidationError) -> str | None:
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        if loc:
            return ".".join(loc)
    return None


def gateway_error_response(exc: GatewayError, scrub: Scrubber) -> JSONResponse:
    """The answer to a GatewayError a request raised, recorded as the request's error."""
    exc.message = scrub(exc.message)
    ctx = context.current()
    ctx.error = exc
    return error_response(exc, ctx.request_id)


def install_handlers(
    app: FastAPI,
    scrub: Scrubber,
    pages: Callable[[Request, GatewayError], Response | None] | None = None,
) -> None:
    """The app's exception handlers. `pages` renders an error as a page where it answers one
    (the console's paths); the answer is the OpenAI error body everywhere else."""

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        if pages is not None:
            exc.message = scrub(exc.message)
            page = pages(request, exc)
            if page is not None:
                context.current().error = exc
                return page
        return gateway_error_response(exc, scrub)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        # FastAPI would answer 422; the OpenAI API and its SDKs expect 400 for bad input.
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        param = _first_error_param(exc)
        message = str(first.get("msg", "Invalid request"))
        if param:
            message = f"Invalid value for '{param}': {message}"
        return await on_gateway_error(request, InvalidRequest(message, param=param))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in (404, 405):
            # The router's: no route has this path (or takes this method).
            headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
            return await on_gateway_error(request, _unsupported(request, exc.status_code, headers))
        kind: type[GatewayError] = GatewayError
        if exc.status_code == 404:
            kind = NotFound
        elif exc.status_code < 500:
            kind = InvalidRequest
        err = kind(str(exc.detail), status=exc.status_code, headers=dict(exc.headers or {}))
        return await on_gateway_error(request, err)

    async def on_client_disconnect(request: Request, exc: Exception) -> Response:
        # A body read anywhere but through `bodies.bounded` (which raises ClientGone itself):
        # the client hung up, a 499 in the request's log line and metrics, not a 500.
        gone = ClientGone("The client closed the connection before its request was complete.")
        return await on_gateway_error(request, gone)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Only what escapes the request bookkeeping (which logs its own) reaches here.
        fields = {"error": scrub(repr(exc)), "traceback": format_traceback(exc, scrub)}
        log.error("unhandled error", extra={"fields": fields})
        mark_logged(exc)
        err = GatewayError("The gateway hit an internal error.", code="internal_error")
        return await on_gateway_error(request, err)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnect, on_client_disconnect)
    app.add_exception_handler(Exception, on_unexpected)

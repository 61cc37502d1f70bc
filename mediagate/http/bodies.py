"""Request bodies read bounded: every byte counted as it arrives, chunked or not.

A Content-Length over the limit is refused before a byte is read; a body without one (chunked)
or one that lies is refused as soon as the count passes the limit, with the OpenAI-shaped 413
`request_too_large`. JSON is parsed only once whole and within MEDIAGATE_MAX_JSON_BYTES, and a
structure nested deeper than any OpenAI request is a 400, never a RecursionError. Multipart
forms are parsed from a request whose receive channel does the counting (`bounded`), so the
parser never spools more than the limit to disk.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import Message

from mediagate.errors import ClientGone, InvalidRequest, RequestTooLarge

# No OpenAI request nests deeper than a handful of levels; this leaves plenty of room.
MAX_JSON_DEPTH = 32


def too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is larger than the {limit} bytes the gateway accepts."
    )


def client_gone() -> ClientGone:
    return ClientGone("The client closed the connection before its request body was complete.")


def bounded(request: Request, limit: int) -> Request:
    """The request, its body counted as the server hands it over: past `limit` bytes, reading
    it raises a 413; a client that hangs up mid-body is a 499 `client_disconnected` (logged as
    a request, never as an unhandled error)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    receive = request.receive
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit)
        elif message["type"] == "http.disconnect":
            raise client_gone()
        return message

    return Request(request.scope, counted)


async def read_body(request: Request, limit: int) -> bytes:
    raw = bytearray()
    async for chunk in bounded(request, limit).stream():
        raw += chunk
    return bytes(raw)


def _depth_within(value: Any, limit: int) -> bool:
    """Whether no container in `value` is nested more than `limit` deep (iteratively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return True


def parse_json(raw: bytes) -> Any:
    try:
        value = json.loads(raw)
    except RecursionError:
        value = None
        deep = True
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object.",
            code="invalid_json",
        ) from None
    else:
        deep = not _depth_within(value, MAX_JSON_DEPTH)
    if deep:
        raise InvalidRequest(
            f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.",
            code="json_too_deep",
        )
    return value

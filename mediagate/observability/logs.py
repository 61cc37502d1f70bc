"""Structured logs: one JSON object per line, for log pipelines to parse.

Every line written while a request is being served carries its `request_id` (the request's
record, mediagate.context, is read when the line is formatted), and, when tracing is on, the
`trace_id` and `span_id` of the span it was written in, so a log search and a trace view find
each other. uvicorn's own lines go through the same formatter (`configure_logging`). A line's
text and traceback are scrubbed of the configured secrets before they are written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import orjson

from mediagate import context
from mediagate.errors import Scrubber
from mediagate.observability.tracing import current_ids

_LOGGED = "_mediagate_logged"


def mark_logged(exc: BaseException) -> None:
    """This exception's traceback was logged already (scrubbed, with its request id): the
    server's own "Exception in ASGI application" line for it is left out."""
    with contextlib.suppress(AttributeError):  # an exception type that takes no attributes
        setattr(exc, _LOGGED, True)


def format_traceback(exc: BaseException, scrub: Callable[[str], str]) -> str:
    return scrub("".join(traceback.format_exception(exc)).rstrip())


class RequestFields(logging.Filter):
    """Stamps a record with the request and trace it was written in, when it is written (a
    handler may format it later, or elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            ctx = context.active()
            record.request_id = ctx.request_id if ctx is not None else None
            record.client_request_id = ctx.client_request_id if ctx is not None else None
            ids = current_ids()
            record.trace_id, record.span_id = ids if ids is not None else (None, None)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, scrub: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.scrub = scrub or (lambda text: text)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": f"{_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.scrub(record.getMessage()),
        }
        if not hasattr(record, "request_id"):  # a handler without RequestFields
            RequestFields().filter(record)
        for name in ("request_id", "client_request_id", "trace_id", "span_id"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            entry["traceback"] = format_traceback(record.exc_info[1], self.scrub)
        if record.stack_info:
            entry["stack"] = self.scrub(record.stack_info)
        try:
            # orjson: a line per request, written in a microsecond rather than several.
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson refuses (an integer beyond 64 bits, say)
            return json.dumps(entry, ensure_ascii=False, default=str)


@lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """A log line's time to the second, UTC: worked out once per second, not per line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class _NotLoggedTwice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, _LOGGED, False)


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """JSON lines on stderr for the gateway's loggers, uvicorn's and any library's warnings.

    `secrets` (the configured upstream and client keys) never appear in a line: the gateway's
    messages are scrubbed where they are made, this is the net under every other logger (a
    traceback's text, a library's message)."""
    # What a line here never shows, so no record works it out: the caller's file and line
    # (a walk up the stack per record), the thread and process (the logging HOWTO's
    # "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(Scrubber(secrets)))
    handler.addFilter(_NotLoggedTwice())
    handler.addFilter(RequestFields())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # other libraries: warnings and errors only
    for name in ("mediagate", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(level.upper())
        logger.propagate = True
    # uvicorn's access lines are off (the gateway writes its own, with more in them).
    logging.getLogger("uvicorn.access").handlers.clear()
    logging.getLogger("uvicorn.access").propagate = False

"""A batch's lines, in and out: pure, no I/O.

An input line is OpenAI's batch request line, `{"custom_id", "method", "url", "body"}`; an
output line is OpenAI's batch output line, `{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}`. Successful lines go to the batch's output file, the rest to
its error file (a line that got an answer carries it in `response`; one that got none, an
`error` with a code: `outcome_unknown`, `batch_expired`, `batch_cancelled`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mediagate.errors import GatewayError
from mediagate.jsonio import spliced

# The endpoints a batch may run (OpenAI's CreateBatchRequest lists these three among its own).
IMAGE_GENERATIONS = "/v1/images/generations"
IMAGE_EDITS = "/v1/images/edits"
VIDEOS = "/v1/videos"
ENDPOINTS = (IMAGE_GENERATIONS, IMAGE_EDITS, VIDEOS)
# Each endpoint's label, as its own route is named (the request log's `endpoint`).
ENDPOINT_LABELS = {
    IMAGE_GENERATIONS: "images.generations",
    IMAGE_EDITS: "images.edits",
    VIDEOS: "videos.create",
}
MAX_CUSTOM_ID = 512


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(16)}"


def new_line_id() -> str:
    return f"batch_req_{secrets.token_hex(16)}"


@dataclass(frozen=True)
class InputLine:
    number: int  # 1-based, as an editor shows it
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    """Why an input line is not valid: OpenAI's BatchError (`line` is 1-based)."""

    code: str
    message: str
    line: int
    param: str | None = None

    def shown(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


def parse_line(raw: bytes, number: int, endpoint: str) -> InputLine | LineError:
    """One line of the input file, its shape checked (the body is the endpoint's to judge)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return LineError("invalid_json_line", "This line is not valid JSON.", number)
    if not isinstance(value, dict):
        return LineError("invalid_json_line", "This line is not a JSON object.", number)
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            "missing_required_parameter",
            "'custom_id' must be a non-empty string.",
            number,
            "custom_id",
        )
    if len(custom_id) > MAX_CUSTOM_ID:
        return LineError(
            "invalid_value",
            f"'custom_id' is longer than {MAX_CUSTOM_ID} characters.",
            number,
            "custom_id",
        )
    if value.get("method") != "POST":
        return LineError("invalid_method", "'method' must be POST.", number, "method")
    if value.get("url") != endpoint:
        return LineError(
            "mismatched_url",
            f"'url' must be the batch's endpoint, {endpoint}.",
            number,
            "url",
        )
    body = value.get("body")
    if not isinstance(body, dict):
        return LineError("invalid_body", "'body' must be a JSON object.", number, "body")
    unknown = set(value) - {"custom_id", "method", "url", "body"}
    if unknown:
        name = sorted(unknown)[0]
        return LineError("unknown_parameter", f"Unknown field '{name}'.", number, name)
    return InputLine(number, custom_id, body)


def invalid(error: GatewayError, number: int) -> LineError:
    """An endpoint's refusal of a line's body, as the batch's error for that line."""
    return LineError(error.code or "invalid_request", error.message, number, error.param)


def output_line(custom_id: str, request_id: str, status: int, body: Any) -> bytes:
    """An output line with the endpoint's answer (`body`: a dict, base64 images spliced in as
    the bytes they came as), newline-terminated."""
    head = orjson.dumps({"id": new_line_id(), "custom_id": custom_id})
    response = orjson.dumps({"status_code": status, "request_id": request_id})
    pieces: Sequence[bytes | memoryview] = spliced(body)
    return b"".join(
        [head[:-1], b',"response":', response[:-1], b',"body":', *pieces, b'},"error":null}\n']
    )


def no_answer(custom_id: str, code: str, message: str) -> bytes:
    """An error-file line for a line that got no answer (expired, cancelled, outcome unknown)."""
    line = {
        "id": new_line_id(),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
    return orjson.dumps(line) + b"\n"

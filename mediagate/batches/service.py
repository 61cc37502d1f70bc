"""Batches: OpenAI's Batch API, run by the gateway (the upstream has none).

`BatchService.create` reads the input file from the store as it streams, judges every line as
its endpoint would (mediagate.batches.endpoints), and prices the whole: a file with an invalid
line makes a `failed` batch whose `errors` name the lines (nothing sent, nothing charged); an
estimate past the key's or team's budget left is a 400 naming both; otherwise the lines are
recorded (`batch_lines`) and the batch is `in_progress`. The runner (mediagate.batches.runner)
takes it from there. `retrieve`, `list` and `cancel` are the rest of the API; a batch is its
key's, as a video job is (another key gets 404).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediagate import context
from mediagate.accounting.clients import KeyPolicy
from mediagate.accounting.metering import Metering
from mediagate.accounting.requestlog import micros
from mediagate.batches.endpoints import Endpoints
from mediagate.batches.files import FileService, expiry_seconds
from mediagate.batches.lines import (
    ENDPOINTS,
    InputLine,
    LineError,
    invalid,
    new_batch_id,
    parse_line,
)
from mediagate.errors import Conflict, GatewayError, InvalidRequest, NotFound, missing_parameter
from mediagate.stores.sql import batches as sql
from mediagate.stores.sql.db import Database

WINDOWS = {"24h": 86400}
# The errors a failed batch lists (the count says how many more there were).
MAX_SHOWN_ERRORS = 100
_INSERT_CHUNK = 500
_MAX_METADATA = 16


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound(
        f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found"
    )


def openai_batch(row: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's Batch object, with what the gateway adds: `cost_usd`, what its lines booked, and
    `estimate_usd`, what the create checked against the budget. A field without a value yet
    (`output_file_id`, `completed_at`, `errors`...) is left out: OpenAI's document types them
    string, integer or object, not nullable (the SDKs read a missing one as None)."""
    errors = json.loads(row["errors"]) if row["errors"] else None
    answer = {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": errors,
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
        "in_progress_at": row["in_progress_at"],
        "expires_at": row["expires_at"],
        "finalizing_at": row["finalizing_at"],
        "completed_at": row["completed_at"],
        "failed_at": row["failed_at"],
        "expired_at": row["expired_at"] if row["status"] == "expired" else None,
        "cancelling_at": row["cancelling_at"],
        "cancelled_at": row["cancelled_at"],
        "request_counts": {
            "total": row["total"],
            "completed": row["completed"],
            "failed": row["failed"],
        },
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        "cost_usd": row["cost_micros"] / 1_000_000,
        "estimate_usd": row["estimate_micros"] / 1_000_000,
    }
    # `metadata` is the one the document lets be null (Metadata: an object or null).
    return {k: v for k, v in answer.items() if v is not None or k == "metadata"}


def _metadata(value: Any) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > _MAX_METADATA
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            "Invalid 'metadata': at most 16 string keys (64 characters) with string values "
            "(512 characters).",
            param="metadata",
        )
    return json.dumps(value)


@dataclass
class Judged:
    """An input file read through: its valid lines' count and estimate, or its errors."""

    lines: int = 0
    estimate: float = 0.0
    # Each valid line's estimate in micro-USD, in order: recorded with the line, not judged again.
    estimates: list[int] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0

    def refuse(self, error: LineError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_SHOWN_ERRORS:
            self.errors.append(error)


@dataclass
class BatchService:
    files: FileService
    endpoints: Endpoints
    database: Database
    metering: Metering
    clock: Callable[[], float] = time.time

    async def create(
        self, policy: KeyPolicy, body: Any, base_url: str, principal: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        unknown = set(body) - {
            "input_file_id",
            "endpoint",
            "completion_window",
            "metadata",
            "output_expires_after",
        }
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidRequest(
                f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
            )
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"Invalid 'endpoint': this gateway runs batches of {', '.join(ENDPOINTS)}.",
                param="endpoint",
            )
        window = body.get("completion_window")
        if window not in WINDOWS:
            raise InvalidRequest(
                "Invalid 'completion_window': only '24h'.", param="completion_window"
            )
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise missing_parameter("input_file_id")
        metadata = _metadata(body.get("metadata"))
        output_expiry = expiry_seconds(body.get("output_expires_after"), "output_expires_after")
        source = await self.files.get(policy.name, file_id)
        if source["purpose"] != "batch":
            raise InvalidRequest(
                f"The file {file_id} was not uploaded with purpose 'batch'.", param="input_file_id"
            )
        judged = await self._judge(policy, endpoint, source, base_url)
        now = int(self.clock())
        row: dict[str, Any] = {
            "id": new_batch_id(),
            "owner": policy.name,
            "team": policy.team,
            "principal": principal,
            "endpoint": endpoint,
            "input_file_id": file_id,
            "completion_window": window,
            "created_at": now,
            "expires_at": now + WINDOWS[window],
            "metadata": metadata,
            "output_expires_s": output_expiry,
            "base_url": base_url,
            "updated_at": self.clock(),
        }
        if judged.errors or judged.lines == 0:
            errors = judged.errors or [LineError("empty_file", "The input file has no lines.", 0)]
            shown = [e.shown() for e in errors]
            row |= {
                "status": "failed",
                "failed_at": now,
                "errors": json.dumps({"object": "list", "data": shown}),
            }
            await self.database.transaction(lambda tx: sql.insert_batch(tx, row))
            return await self.retrieve(None, row["id"])
        await self._fits(policy, judged.estimate)
        row |= {
            "status": "validating",
            "total": judged.lines,
            "estimate_micros": micros(judged.estimate),
        }
        await self.database.transaction(lambda tx: sql.insert_batch(tx, row))
        await self._record_lines(row["id"], endpoint, source, judged.estimates)
        started = await self.database.transaction(
            lambda tx: sql.move_batch(
                tx, row["id"], ("validating",), {"status": "in_progress", "in_progress_at": now}
            )
        )
        assert started is not None
        return started

    async def _judge(
        self, policy: KeyPolicy, endpoint: str, source: dict[str, Any], base_url: str
    ) -> Judged:
        judged = Judged()
        seen: set[str] = set()
        async for number, raw in self.files.lines(source):
            parsed = parse_line(raw, number, endpoint)
            if isinstance(parsed, LineError):
                judged.refuse(parsed)
                continue
            if parsed.custom_id in seen:
                judged.refuse(
                    LineError(
                        "duplicate_custom_id",
                        f"The custom_id '{parsed.custom_id[:64]}' appears more than once.",
                        number,
                        "custom_id",
                    )
                )
                continue
            seen.add(parsed.custom_id)
            try:
                estimate = self._estimate(endpoint, policy, parsed, base_url)
            except GatewayError as exc:
                judged.refuse(invalid(exc, number))
                continue
            judged.estimate += estimate
            judged.estimates.append(micros(estimate))
            judged.lines += 1
        return judged

    def _estimate(self, endpoint: str, policy: KeyPolicy, line: InputLine, base_url: str) -> float:
        # Judged in a record of its own: the create's request is not the line's.
        token = context.begin(context.RequestContext())
        try:
            return self.endpoints.judge(endpoint, policy, line.body, base_url)
        finally:
            context.end(token)

    async def _fits(self, policy: KeyPolicy, estimate: float) -> None:
        left = await self.metering.budget_left(policy)
        if left is not None and estimate > left[0]:
            amount, whose = left
            raise InvalidRequest(
                f"This batch could cost up to ${estimate:.4f}; {whose} has ${amount:.4f} of "
                "budget left. Split the batch, or raise the budget.",
                param="input_file_id",
                code="batch_over_budget",
            )

    async def _record_lines(
        self, batch_id: str, endpoint: str, source: dict[str, Any], estimates: list[int]
    ) -> None:
        """The file read again, its lines recorded in chunks (never the whole file at once),
        each with the estimate its judging gave."""
        chunk: list[dict[str, Any]] = []

        async def write() -> None:
            rows = list(chunk)
            chunk.clear()
            await self.database.transaction(lambda tx: sql.insert_lines(tx, rows))

        index = 0
        async for number, raw in self.files.lines(source):
            parsed = parse_line(raw, number, endpoint)
            assert isinstance(parsed, InputLine)  # judged valid a moment ago
            chunk.append(
                {
                    "batch_id": batch_id,
                    "line": index + 1,
                    "custom_id": parsed.custom_id,
                    "body": json.dumps(parsed.body, separators=(",", ":")),
                    "estimate_micros": estimates[index],
                    "state": "pending",
                }
            )
            index += 1
            if len(chunk) >= _INSERT_CHUNK:
                await write()
        if chunk:
            await write()

    async def retrieve(self, owner: str | None, batch_id: str) -> dict[str, Any]:
        row = await self.database.run(lambda tx: sql.get_batch(tx, batch_id))
        if row is None or (owner is not None and row["owner"] != owner):
            raise batch_not_found(batch_id)
        return row

    async def list(
        self, owner: str, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        page = await self.database.run(
            lambda tx: sql.list_batches(tx, owner, after=after, limit=limit)
        )
        if page is None:
            raise InvalidRequest(f"Invalid 'after': no batch {after!r}.", param="after")
        return page

    async def cancel(self, owner: str | None, batch_id: str) -> dict[str, Any]:
        """No new line is sent from now on; what is in flight finishes (and is billed); the
        runner then writes the files and the batch is `cancelled`."""
        row = await self.retrieve(owner, batch_id)
        if row["status"] in ("cancelling", "cancelled"):
            return row
        now = int(self.clock())
        moved = await self.database.transaction(
            lambda tx: sql.move_batch(
                tx,
                batch_id,
                ("validating", "in_progress"),
                {"status": "cancelling", "cancelling_at": now, "updated_at": self.clock()},
            )
        )
        if moved is None:
            current = await self.retrieve(owner, batch_id)
            raise Conflict(
                f"The batch is {current['status']}: only a batch in progress can be cancelled.",
                code="batch_not_cancellable",
            )
        return moved

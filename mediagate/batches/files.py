"""The Files API's files: uploaded batch inputs (and images an edit line names), and the output
and error files batches write.

A file's bytes go to the hosted-object store (a directory, or an S3-compatible bucket for
replicas; its "files" folder) as they arrive, never whole in memory; its row in the records'
database (`files`, mediagate.stores.sql.batches) says whose it is, what it is for and when it
expires. A file is its owner's (the client key that uploaded it, or whose batch wrote it):
another key gets 404, as with video jobs. Each key may keep MEDIAGATE_FILES_QUOTA_BYTES in
files at once, checked by one conditional write when the file is recorded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from mediagate.batches.lines import new_file_id
from mediagate.errors import InvalidRequest, NotFound, QuotaExceeded, RequestTooLarge
from mediagate.stores.hosted import HostedImage, HostedImages, TooLarge
from mediagate.stores.sql import batches as sql
from mediagate.stores.sql.db import Database

# What an upload may be for: batch inputs, and images an edit line names by file id.
UPLOAD_PURPOSES = ("batch", "vision", "user_data")
PURPOSES = (*UPLOAD_PURPOSES, "batch_output")
STORED_AS = "application/octet-stream"
# expires_after's bounds (OpenAI's: an hour to 30 days).
MIN_EXPIRY_S = 3600
MAX_EXPIRY_S = 30 * 86400


def file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")


def openai_file(row: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's FileObject (OpenAIFile in its document). A file that never expires has no
    `expires_at`: the document types it an integer, not nullable (the SDKs read it as None)."""
    answer = {
        "id": row["id"],
        "object": "file",
        "bytes": int(row["bytes"]),
        "created_at": int(row["created_at"]),
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
    }
    if row["expires_at"] is not None:
        answer["expires_at"] = int(row["expires_at"])
    return answer


def expiry_seconds(value: Any, param: str) -> int | None:
    """An `expires_after` ({"anchor": "created_at", "seconds": N}) checked: N, or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise InvalidRequest(
            f'Invalid \'{param}\': expected {{"anchor": "created_at", "seconds": N}}.',
            param=param,
        )
    seconds = value.get("seconds")
    if isinstance(seconds, str) and seconds.isdigit():
        seconds = int(seconds)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise InvalidRequest(f"Invalid '{param}.seconds': expected an integer.", param=param)
    if not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S:
        raise InvalidRequest(
            f"Invalid '{param}.seconds': must be between {MIN_EXPIRY_S} and {MAX_EXPIRY_S}.",
            param=param,
        )
    return seconds


@dataclass
class Counted:
    """Chunks passed through, counted: bytes, and lines (newline-terminated or last)."""

    chunks: AsyncIterator[bytes]
    size: int = 0
    lines: int = 0
    _open_line: bool = False

    async def each(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            self.lines += chunk.count(b"\n")
            self._open_line = not chunk.endswith(b"\n")
            yield chunk

    @property
    def total_lines(self) -> int:
        return self.lines + (1 if self._open_line else 0)


@dataclass
class FileService:
    store: HostedImages  # the hosted-object store's "files" folder
    database: Database
    max_bytes: int  # MEDIAGATE_FILES_MAX_BYTES
    quota_bytes: int  # MEDIAGATE_FILES_QUOTA_BYTES (0: none)
    max_lines: int  # MEDIAGATE_BATCH_MAX_LINES
    clock: Any = time.time

    async def upload(
        self,
        owner: str,
        team: str | None,
        purpose: str,
        filename: str,
        chunks: AsyncIterator[bytes],
        expires_after_s: int | None,
    ) -> dict[str, Any]:
        """An uploaded file, streamed to the store and recorded; refused past the file size, the
        line count (a batch input) or the key's quota, with nothing kept."""
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"Invalid 'purpose': this gateway takes {', '.join(UPLOAD_PURPOSES)}.",
                param="purpose",
            )
        cap = self.max_bytes
        if self.quota_bytes:
            used = await self.database.run(lambda tx: sql.used_bytes(tx, owner))
            cap = min(cap, max(0, self.quota_bytes - used))
        counted = Counted(chunks)
        try:
            name, size = await self.store.put_stream(counted.each(), STORED_AS, cap)
        except TooLarge:
            raise self._too_large(cap) from None
        if size == 0:
            await self.store.delete(name)
            raise InvalidRequest("The file is empty.", param="file")
        if purpose == "batch" and counted.total_lines > self.max_lines:
            await self.store.delete(name)
            raise InvalidRequest(
                f"A batch's input may have at most {self.max_lines} lines; this file has "
                f"{counted.total_lines}.",
                param="file",
            )
        return await self._record(owner, team, purpose, filename, name, size, expires_after_s)

    def _too_large(self, cap: int) -> Exception:
        if cap < self.max_bytes:
            return QuotaExceeded(
                f"The key's files would pass its storage quota of {self.quota_bytes} bytes "
                "(MEDIAGATE_FILES_QUOTA_BYTES): delete files it no longer needs.",
                code="files_quota_exceeded",
            )
        return RequestTooLarge(f"A file may be at most {self.max_bytes} bytes.", param="file")

    async def write(
        self,
        owner: str,
        team: str | None,
        filename: str,
        chunks: AsyncIterator[bytes],
        batch_id: str,
        expires_after_s: int | None,
    ) -> dict[str, Any]:
        """A batch's output or error file, streamed to the store and recorded (outside the
        key's quota: the batch was accepted)."""
        name, size = await self.store.put_stream(chunks, STORED_AS, 1 << 62)
        return await self._record(
            owner, team, "batch_output", filename, name, size, expires_after_s, batch_id=batch_id
        )

    async def _record(
        self,
        owner: str,
        team: str | None,
        purpose: str,
        filename: str,
        name: str,
        size: int,
        expires_after_s: int | None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        now = int(self.clock())
        row = {
            "id": new_file_id(),
            "owner": owner,
            "team": team,
            "purpose": purpose,
            "filename": filename,
            "bytes": size,
            "object": name,
            "created_at": now,
            "expires_at": None if expires_after_s is None else now + expires_after_s,
            "batch_id": batch_id,
        }
        quota = self.quota_bytes if self.quota_bytes and batch_id is None else None
        try:
            kept = await self.database.transaction(lambda tx: sql.insert_file(tx, row, quota))
        except BaseException:
            await self.store.delete(name)
            raise
        if not kept:  # another upload of the key's took the room meanwhile
            await self.store.delete(name)
            raise self._too_large(0)
        return row

    async def get(self, owner: str | None, file_id: str) -> dict[str, Any]:
        """The file's row, if `owner`'s (None: anyone's) and not expired; else 404."""
        row = await self.database.run(lambda tx: sql.get_file(tx, file_id))
        if row is None or (owner is not None and row["owner"] != owner) or self._expired(row):
            raise file_not_found(file_id)
        return row

    def _expired(self, row: dict[str, Any]) -> bool:
        return row["expires_at"] is not None and row["expires_at"] <= self.clock()

    async def list(
        self, owner: str, *, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        page = await self.database.run(
            lambda tx: sql.list_files(
                tx, owner, purpose=purpose, after=after, limit=limit, newest_first=newest_first
            )
        )
        if page is None:
            raise InvalidRequest(f"Invalid 'after': no file {after!r}.", param="after")
        rows, more = page
        return [row for row in rows if not self._expired(row)], more

    async def content(self, owner: str | None, file_id: str) -> tuple[dict[str, Any], HostedImage]:
        row = await self.get(owner, file_id)
        found = await self.store.get(row["object"])
        if found is None:
            raise file_not_found(file_id)
        return row, found

    async def delete(self, owner: str, file_id: str) -> dict[str, Any]:
        await self.get(owner, file_id)
        row = await self.database.transaction(lambda tx: sql.delete_file(tx, file_id))
        if row is None:
            raise file_not_found(file_id)
        await self.store.delete(row["object"])
        return row

    async def lines(self, row: dict[str, Any]) -> AsyncIterator[tuple[int, bytes]]:
        """The file's lines as they are read from the store (1-based numbers), blank ones
        skipped: never the whole file in memory."""
        found = await self.store.get(row["object"])
        if found is None:
            raise file_not_found(row["id"])
        number, rest = 0, b""
        async for chunk in found.chunks:
            rest += chunk
            *complete, rest = rest.split(b"\n")
            for raw in complete:
                number += 1
                if raw.strip():
                    yield number, raw
        if rest.strip():
            yield number + 1, rest

    async def sweep(self) -> int:
        """Expired files removed, rows and objects; how many."""
        rows = await self.database.run(lambda tx: sql.expired_files(tx, self.clock(), 500))
        for row in rows:
            file_id: str = row["id"]
            await self.database.transaction(partial(sql.delete_file, file_id=file_id))
            await self.store.delete(row["object"])
        return len(rows)

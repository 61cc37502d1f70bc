"""/v1/files: the images the gateway hosts at its own links, and the Files API.

`GET /v1/files/images/{name}` needs no key: the unguessable name is the credential, so links
work in <img> tags. The Files API (`POST /v1/files`, list, retrieve, content, delete) is a
key's own files (mediagate.batches.files): batch inputs, images an edit line names, and the
output and error files its batches write.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from mediagate.batches.files import expiry_seconds, openai_file
from mediagate.errors import NotFound, missing_parameter
from mediagate.http.bodies import bounded
from mediagate.http.deps import (
    Client,
    gateway,
    list_limit,
    list_order,
    list_page,
    read_budget,
)
from mediagate.http.routes import Routes
from mediagate.jsonio import FastJSONResponse
from mediagate.stores.hosted import HostedImage
from mediagate.videos.spec import unknown_parameter

_CHUNK = 256 * 1024

files = Routes(prefix="/v1/files")


@files.get("/images/{name}", name="files")
async def hosted_image(name: str, request: Request) -> Response:
    image = await gateway(request).hosted.get(name)
    if image is None:
        raise NotFound("No such image (it may have expired).")
    max_age = max(0, int(image.expires_at - time.time()))
    return StreamingResponse(
        image.chunks,
        media_type=image.content_type,
        headers={
            "content-length": str(image.size),
            "cache-control": f"private, max-age={max_age}, immutable",
            "x-content-type-options": "nosniff",
            # A generated SVG is a document that could carry script: opened from the gateway's
            # own origin it may run nothing and load nothing.
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        },
    )


# --- The Files API (mediagate.batches.files): a key's own files ----------------------------

_UPLOAD_SLACK = 64 * 1024  # the form's text fields and part headers, beyond the file
_FILE_FIELDS = {"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"}


@files.post("", name="files.create")
async def create(request: Request, policy: Client) -> Response:
    gw = gateway(request)
    service = gw.batches.files
    # Counted as it arrives: past the limit, a 413 before more is spooled. The parser spools
    # the file to a temporary file (on disk past 1 MB), from which it streams to the store.
    form_request = bounded(request, service.max_bytes + _UPLOAD_SLACK)
    async with form_request.form(max_files=1, max_fields=8) as form:
        unknown = sorted(set(form.keys()) - _FILE_FIELDS)
        if unknown:
            raise unknown_parameter(unknown[0])
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise missing_parameter("file")
        purpose = form.get("purpose")
        if not isinstance(purpose, str):
            raise missing_parameter("purpose")
        anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
        expiry = expiry_seconds(
            None if anchor is None and seconds is None else {"anchor": anchor, "seconds": seconds},
            "expires_after",
        )
        row = await service.upload(
            policy.name,
            policy.team,
            purpose,
            _filename(upload.filename),
            _chunks(upload),
            expiry,
        )
    return FastJSONResponse(openai_file(row))


def _filename(name: str | None) -> str:
    """The file's name as the client gave it, its path dropped and length bounded (it is shown
    back, never used as a path)."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:255] or "upload"


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


@files.get("", name="files.list")
async def list_(request: Request, policy: Client) -> Response:
    query = request.query_params
    unknown = sorted(set(query) - {"after", "limit", "order", "purpose"})
    if unknown:
        raise unknown_parameter(unknown[0])
    limit = list_limit(query.get("limit"), 10_000)
    order = list_order(query.get("order"))
    await read_budget(request, policy)
    rows, more = await gateway(request).batches.files.list(
        policy.name,
        purpose=query.get("purpose") or None,
        after=query.get("after") or None,
        limit=limit,
        newest_first=order == "desc",
    )
    return FastJSONResponse(list_page([openai_file(row) for row in rows], more))


@files.get("/{file_id}", name="files.retrieve")
async def retrieve(file_id: str, request: Request, policy: Client) -> Response:
    await read_budget(request, policy)
    return FastJSONResponse(
        openai_file(await gateway(request).batches.files.get(policy.name, file_id))
    )


@files.delete("/{file_id}", name="files.delete")
async def delete(file_id: str, request: Request, policy: Client) -> Response:
    row = await gateway(request).batches.files.delete(policy.name, file_id)
    return FastJSONResponse({"id": row["id"], "object": "file", "deleted": True})


@files.get("/{file_id}/content", name="files.content")
async def content(file_id: str, request: Request, policy: Client) -> Response:
    await read_budget(request, policy)
    row, found = await gateway(request).batches.files.content(policy.name, file_id)
    return file_content(row, found)


def file_content(row: dict[str, Any], found: HostedImage) -> StreamingResponse:
    """A file's bytes as they stream from the store (the Files API's content, the console's
    download of a batch's file)."""
    return StreamingResponse(
        found.chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(found.size),
            "content-disposition": f'attachment; filename="{row["id"]}.jsonl"',
            "cache-control": "private, no-store",
            "x-content-type-options": "nosniff",
        },
    )

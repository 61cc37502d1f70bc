"""The Videos API's HTTP surface: what the official SDK's `client.videos.*` calls.

Translation only: the request (multipart as the SDKs send it, or JSON; input_reference as an
uploaded file, an image_url or a data: URL) becomes a typed input for the video service
(`mediagate.videos.service.VideoService`), which validates, admits, runs, records and settles;
its result goes back as the OpenAI video object, list or file.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.types import Receive, Scope, Send

from mediagate.errors import InvalidRequest, Scrubber
from mediagate.http.bodies import bounded
from mediagate.http.deps import (
    Client,
    admitted,
    gateway,
    json_body,
    list_limit,
    list_order,
    list_page,
    read_budget,
)
from mediagate.http.headers import FIT_REFERENCE
from mediagate.http.idempotency import idempotency, json_digest, video_digest
from mediagate.http.routes import Routes
from mediagate.jsonio import FastJSONResponse
from mediagate.upstream.transport import UpstreamResponse
from mediagate.videos import reference as references
from mediagate.videos.records import openai_video
from mediagate.videos.service import Video
from mediagate.videos.spec import (
    ReferenceInput,
    VideoRequest,
    reference_from_json,
    unknown_parameter,
)

_FLAGS = {"true": True, "1": True, "yes": True, "on": True}
_FLAGS |= {"false": False, "0": False, "no": False, "off": False}
# Headers of a file answer that a client (or a player seeking with Range) relies on.
_RELAYED = (
    "content-type",
    "content-length",
    "accept-ranges",
    "content-range",
    "etag",
    "last-modified",
    "content-disposition",
)
_CHUNK = 64 * 1024
# The multipart envelope around a reference: text fields are capped separately by the parser.
_MULTIPART_SLACK = 1024 * 1024
_DATA_URL_PREFIX = 64  # "data:image/webp;base64," and then some
# Text parts of a multipart create: its fields and options, a list option (Muse's
# skill_preset[]) one part per item.
_MAX_FORM_FIELDS = 64

videos = Routes(prefix="/v1")


class _Relay(StreamingResponse):
    """A streamed upstream answer whose connection is released however the client leaves."""

    def __init__(self, upstream: UpstreamResponse, scrub: Scrubber) -> None:
        # A header that holds an upstream key or an internal address (a leaky ETag or file
        # name) is dropped, not
        # passed on altered: the client is better off without it.
        headers = {
            k: upstream.headers[k]
            for k in _RELAYED
            if k in upstream.headers and scrub.upstream(upstream.headers[k]) == upstream.headers[k]
        }
        headers["cache-control"] = "private, no-store"
        super().__init__(
            upstream.aiter_raw(_CHUNK), status_code=upstream.status_code, headers=headers
        )
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()


def _video_response(video: Video) -> Response:
    # orjson: the same compact bytes as JSONResponse, in a fraction of its time (a poll's).
    return FastJSONResponse(openai_video(video.job), headers=video.headers)


def _fitting(request: Request) -> bool:
    value = request.headers.get(FIT_REFERENCE)
    if value is None:
        return True
    flag = _FLAGS.get(value.strip().lower())
    if flag is None:
        raise InvalidRequest(f"{FIT_REFERENCE} must be true or false.", param=FIT_REFERENCE)
    return flag


async def _read_upload(upload: UploadFile, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > cap:
            raise references.too_large(cap)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_cap(request: Request, reference_cap: int) -> int:
    """A JSON create's cap: an input_reference of `reference_cap` bytes as a base64 data: URL,
    plus what a generation's JSON may take (the prompt and options)."""
    settings = gateway(request).settings
    return 4 * -(-reference_cap // 3) + _DATA_URL_PREFIX + settings.max_generation_json_bytes


async def _create_input(request: Request, cap: int) -> tuple[dict[str, Any], ReferenceInput | None]:
    """The create's fields and its input_reference, from multipart or JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        if kind not in ("application/json", ""):
            raise InvalidRequest(
                "POST /v1/videos takes multipart/form-data or application/json.",
                code="invalid_content_type",
            )
        body = await json_body(request, _json_cap(request, cap))
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        fields = {k: v for k, v in body.items() if v is not None}  # null is absent
        return fields, reference_from_json(fields.pop("input_reference", None))

    # Counted as it arrives (chunked or not): past the limit, a 413 before more is spooled.
    form_request = bounded(request, cap + _MULTIPART_SLACK)
    fields = {}
    given: ReferenceInput | None = None
    async with form_request.form(max_files=1, max_fields=_MAX_FORM_FIELDS) as form:
        for name, value in form.multi_items():
            # A text field sent as `name[]` parts: a list, as the SDKs send one (form text
            # values are strings, so a list among the fields is one of these).
            listed = (
                isinstance(value, str)
                and name.endswith("[]")
                and not name.startswith("input_reference")
            )
            if listed:
                name = name[:-2]
                if isinstance(fields.get(name), list):
                    fields[name].append(value)
                    continue
            if name in fields or (name.startswith("input_reference") and given is not None):
                raise InvalidRequest(f"Parameter '{name}' appears more than once.", param=name)
            if isinstance(value, UploadFile):
                if name != "input_reference":
                    raise unknown_parameter(name, "file parameter")
                given = ReferenceInput(data=await _read_upload(value, cap))
            elif name == "input_reference[image_url]":
                given = reference_from_json({"image_url": value})
            elif name.startswith("input_reference"):
                reference_from_json({"file_id": value} if "file_id" in name else value)
            elif listed:
                fields[name] = [value]
            else:
                fields[name] = value
    return fields, given


@videos.post("/videos", name="videos.create")
async def create(request: Request, policy: Client) -> Response:
    service = gateway(request).videos
    fitting = _fitting(request)
    # The key's rate, slot and budget before a byte of the body is read.
    async with admitted(request, policy) as gate:
        cap = service.settings.video_reference_max_bytes
        fields, given = await _create_input(request, cap)

        async def digest() -> str:
            data, url = (given.data, given.image_url) if given else (None, None)
            return video_digest(fields, data, url)

        # A repeated Idempotency-Key is answered before anything is metered or sent upstream.
        async with idempotency(request, digest) as slot:
            if slot.replay is not None:
                return slot.replay
            video = await service.create(policy, VideoRequest(fields, given, fitting), gate)
            return slot.keep(_video_response(video))


@videos.get("/videos", name="videos.list")
async def list_(request: Request, policy: Client) -> Response:
    query = request.query_params
    unknown = sorted(set(query) - {"after", "limit", "order"})
    if unknown:
        raise unknown_parameter(unknown[0])
    after = query.get("after") or None
    limit, order = list_limit(query.get("limit")), list_order(query.get("order"))
    await read_budget(request, policy)
    page = await gateway(request).videos.list(policy.name, after=after, limit=limit, order=order)
    return JSONResponse(list_page([openai_video(job) for job in page.jobs], page.has_more))


@videos.get("/videos/{video_id}", name="videos.retrieve")
async def retrieve(video_id: str, request: Request, policy: Client) -> Response:
    await read_budget(request, policy)
    return _video_response(await gateway(request).videos.retrieve(policy.name, video_id))


@videos.delete("/videos/{video_id}", name="videos.delete")
async def delete(video_id: str, request: Request, policy: Client) -> Response:
    job = await gateway(request).videos.delete(policy.name, video_id)
    return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})


@videos.post("/videos/{video_id}/remix", name="videos.remix")
async def remix(video_id: str, request: Request, policy: Client) -> Response:
    service = gateway(request).videos
    async with admitted(request, policy) as gate:
        body = await json_body(request, service.settings.max_generation_json_bytes)

        async def digest() -> str:  # the path names the source video
            return json_digest(body)

        async with idempotency(request, digest) as slot:
            if slot.replay is not None:
                return slot.replay
            video = await service.remix(policy, video_id, body, gate)
            return slot.keep(_video_response(video))


@videos.get("/videos/{video_id}/content", name="videos.content")
async def content(video_id: str, request: Request, policy: Client) -> Response:
    await read_budget(request, policy)
    return await relay_content(request, policy.name, video_id)


async def relay_content(request: Request, owner: str, video_id: str) -> Response:
    """The file of `owner`'s video, relayed from its upstream as it comes (also the console's
    playground's, for a <video> element that cannot send a key)."""
    # Absent is the video; an empty value is a value, refused like any other unknown one.
    variant = request.query_params.get("variant", "video")
    # Range passes through so players can seek; identity so the length is the file's.
    headers = {"accept-encoding": "identity"}
    for name in ("range", "if-range"):
        if name in request.headers:
            headers[name] = request.headers[name]
    gw = gateway(request)
    return _Relay(await gw.videos.content(owner, video_id, variant, headers), gw.scrub)

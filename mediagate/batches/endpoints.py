"""What a batch line's endpoint does with its body: judged at the batch's create exactly as the
endpoint itself judges a request (and priced), then run through the endpoint's own use case
(mediagate.images.service, mediagate.videos.service) when the line's turn comes.

An edit line is JSON (the JSON form of the edit request OpenAI's document describes): its
`images` (and `mask`) are `{"image_url": ...}` (an http(s) link, fetched under the SSRF rules,
or a data: URL) or `{"file_id": ...}` (a file the batch's key uploaded); they are read when the
line runs and handed to the edit use case as the files of a multipart edit would be.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, Headers, UploadFile

from mediagate.accounting.clients import KeyPolicy
from mediagate.batches.files import FileService
from mediagate.batches.lines import IMAGE_EDITS, IMAGE_GENERATIONS, VIDEOS
from mediagate.errors import InvalidRequest, missing_parameter
from mediagate.images.service import ImageService
from mediagate.images.uploads import MAX_IMAGES
from mediagate.upstream.fetcher import SafeFetcher
from mediagate.videos.records import openai_video
from mediagate.videos.service import VideoService
from mediagate.videos.spec import VideoRequest, reference_from_json

_DATA_URL = "data:"


@dataclass(frozen=True)
class Done:
    """A line's answer: its HTTP status and body (for a video, the job it started)."""

    status: int
    body: Any
    job_id: str | None = None


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def _check_common(body: dict[str, Any]) -> None:
    if body.get("stream"):
        raise _unsupported("A batch line cannot stream: leave 'stream' unset.", "stream")


def _video_request(body: dict[str, Any]) -> VideoRequest:
    fields = {k: v for k, v in body.items() if v is not None}  # null is absent, as in a create
    return VideoRequest(fields, reference_from_json(fields.pop("input_reference", None)))


def _edit_refs(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """An edit line's fields, its images and its mask (references, not yet read)."""
    fields = {k: v for k, v in body.items() if v is not None and k not in ("images", "mask")}
    if "image" in body:
        raise InvalidRequest(
            "A batch's edit line gives its images as 'images': a list of {\"image_url\": ...} "
            'or {"file_id": ...}.',
            param="image",
        )
    images = body.get("images")
    if not isinstance(images, list) or not images:
        raise missing_parameter("images", 'a list of {"image_url": ...} or {"file_id": ...}')
    if len(images) > MAX_IMAGES:
        raise InvalidRequest(f"At most {MAX_IMAGES} images can be edited at once.", param="images")
    for ref in [*images, *([body["mask"]] if body.get("mask") is not None else [])]:
        _check_ref(ref)
    return fields, images, body.get("mask")


def _check_ref(ref: Any) -> None:
    if isinstance(ref, dict) and len(ref) == 1:
        value = ref.get("image_url", ref.get("file_id"))
        if isinstance(value, str) and value:
            if "image_url" in ref and not value.startswith(("http://", "https://", _DATA_URL)):
                raise InvalidRequest(
                    "An image_url must be an http(s) URL or a data: URL.", param="images"
                )
            return
    raise InvalidRequest(
        'Each image must be {"image_url": ...} or {"file_id": ...}.', param="images"
    )


@dataclass
class Endpoints:
    images: ImageService
    videos: VideoService
    files: FileService
    fetcher: SafeFetcher

    def judge(self, endpoint: str, policy: KeyPolicy, body: dict[str, Any], base_url: str) -> float:
        """The line's body as its endpoint judges it (InvalidRequest, ModelNotFound,
        PermissionDenied ... as the endpoint would answer), and the most it can cost."""
        _check_common(body)
        if endpoint == VIDEOS:
            return self.videos.check(policy, _video_request(body))
        if endpoint == IMAGE_GENERATIONS:
            job = self.images.plan_generation(body, base_url)
        else:
            fields, _, mask = _edit_refs(body)
            job = self.images.plan_edit_fields(fields, base_url, mask is not None)
        policy.require(job.model)
        return self.images.estimate(job)

    async def run(
        self,
        endpoint: str,
        policy: KeyPolicy,
        body: dict[str, Any],
        base_url: str,
        job_id: str | None,
    ) -> Done:
        """The line run through its endpoint's use case: admitted, sent, settled."""
        _check_common(body)
        if endpoint == VIDEOS:
            video = await self.videos.create(policy, _video_request(body), job_id=job_id)
            return Done(200, openai_video(video.job), video.job.id)
        if endpoint == IMAGE_GENERATIONS:
            job = self.images.plan_generation(body, base_url)
            answer = await self.images.answer(policy, job)
            return Done(200, answer.body)
        assert endpoint == IMAGE_EDITS
        form = await self._edit_form(policy, body)
        job = await self.images.plan_edit(form, base_url)
        answer = await self.images.answer(policy, job, cleanup=form.close)
        return Done(200, answer.body)

    async def _edit_form(self, policy: KeyPolicy, body: dict[str, Any]) -> FormData:
        """The edit line as the multipart form its endpoint reads: the fields as text, each
        image (and the mask) read into a temporary file."""
        fields, images, mask = _edit_refs(body)
        items: list[tuple[str, str | UploadFile]] = [
            (k, v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in fields.items()
        ]
        files: list[UploadFile] = []
        try:
            for index, ref in enumerate(images):
                files.append(await self._upload(policy, ref, f"image{index}"))
                items.append(("image[]", files[-1]))
            if mask is not None:
                files.append(await self._upload(policy, mask, "mask"))
                items.append(("mask", files[-1]))
        except BaseException:
            for upload in files:
                await upload.close()
            raise
        return FormData(items)

    async def _upload(self, policy: KeyPolicy, ref: dict[str, Any], name: str) -> UploadFile:
        data = await self._image_bytes(policy, ref)
        spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115
        spool.write(data)
        spool.seek(0)
        return UploadFile(
            spool,  # type: ignore[arg-type]
            size=len(data),
            filename=name,
            headers=Headers({"content-type": "image/png"}),
        )

    async def _image_bytes(self, policy: KeyPolicy, ref: dict[str, Any]) -> bytes:
        cap = self.images.settings.edit_max_file_bytes
        if "file_id" in ref:
            row, found = await self.files.content(policy.name, ref["file_id"])
            if row["bytes"] > cap:
                raise InvalidRequest(
                    f"The file {row['id']} is {row['bytes']} bytes; the limit is {cap} bytes.",
                    param="images",
                    code="file_too_large",
                )
            return b"".join([chunk async for chunk in found.chunks])
        url: str = ref["image_url"]
        if url.startswith(_DATA_URL):
            head, _, payload = url.partition(",")
            if not head.endswith(";base64") or len(payload) > 4 * -(-cap // 3):
                raise InvalidRequest(
                    "Invalid data: URL image (base64, within the limit).", param="images"
                )
            try:
                return base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(
                    "Invalid data: URL image: not base64.", param="images"
                ) from None
        # The same rules as upstream image links: public addresses only, capped, images only.
        return await self.fetcher.fetch_given(url, "images", "the image at image_url")

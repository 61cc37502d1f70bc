"""Images the gateway hosts itself, at unguessable URLs, for as long as the operator says.

Upstream links die within a day; a `url` the gateway hands out lives for the retention
(`MEDIAGATE_IMAGE_RETENTION_S`, 7 days by default). Two backends share one small interface: a
directory under `MEDIAGATE_DATA_DIR` for one replica, and an S3-compatible bucket when several
replicas must serve each other's links. Expired images are swept, and never served.

Not to be confused with the job store (`mediagate.stores.jobs`): these are image files, kept
apart from MEDIAGATE_STORE_URL and configured by MEDIAGATE_IMAGE_STORE_URL.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
    "video/mp4": "mp4",  # kept outputs (MEDIAGATE_KEEP_OUTPUTS): a finished video's content
    "application/octet-stream": "bin",  # the Files API's files (mediagate.batches.files)
}
CONTENT_TYPES = {ext: kind for kind, ext in _EXTENSIONS.items()}
_NAME = re.compile(rf"^[A-Za-z0-9_-]{{43}}\.({'|'.join(map(re.escape, CONTENT_TYPES))})$")
_CHUNK = 256 * 1024


def new_name(content_type: str) -> str:
    # 32 random bytes: the link itself is the credential, so it must not be guessable.
    return f"{secrets.token_urlsafe(32)}.{_EXTENSIONS.get(content_type, 'png')}"


def valid_name(name: str) -> bool:
    """Only names this module made, so no path or key can escape the directory or bucket."""
    return bool(_NAME.match(name))


@dataclass
class HostedImage:
    content_type: str
    size: int
    expires_at: float
    chunks: AsyncIterator[bytes]


class HostedImages(Protocol):
    async def put(self, data: bytes, content_type: str) -> str: ...

    async def put_stream(
        self, chunks: AsyncIterator[bytes], content_type: str, max_bytes: int
    ) -> tuple[str, int]:
        """Bytes as they come (a video from the upstream), never whole in memory: the name
        and how many bytes; `TooLarge` past `max_bytes` (nothing is kept then)."""
        ...

    async def get(self, name: str, start: int = 0) -> HostedImage | None:
        """The object from byte `start` on (`size` is still the whole object's)."""
        ...

    async def delete(self, name: str) -> None: ...

    async def sweep(self) -> int:
        """Delete expired images; how many."""
        ...


class TooLarge(ValueError):
    """A streamed object grew past the most `put_stream` was allowed to keep."""


async def _spooled(
    chunks: AsyncIterator[bytes], write: Callable[[bytes], Any], max_bytes: int
) -> int:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"more than {max_bytes} bytes")
        await asyncio.to_thread(write, chunk)
    return size


async def _chunks_in_thread(
    read: Callable[[int], bytes], close: Callable[[], None]
) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(close)


class LocalHostedImages:
    def __init__(self, root: Path, retention_s: float) -> None:
        self.root = root
        self.retention_s = retention_s

    async def put(self, data: bytes, content_type: str) -> str:
        name = new_name(content_type)
        await asyncio.to_thread(self._write, name, data)
        return name

    def _write(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.root / name)  # readers never see a half-written file

    async def put_stream(
        self, chunks: AsyncIterator[bytes], content_type: str, max_bytes: int
    ) -> tuple[str, int]:
        name = new_name(content_type)
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp"
        handle = await asyncio.to_thread(tmp.open, "wb")
        try:
            size = await _spooled(chunks, handle.write, max_bytes)
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(tmp.replace, self.root / name)
        except BaseException:
            handle.close()
            tmp.unlink(missing_ok=True)
            raise
        return name, size

    async def delete(self, name: str) -> None:
        if valid_name(name):
            await asyncio.to_thread((self.root / name).unlink, missing_ok=True)

    async def get(self, name: str, start: int = 0) -> HostedImage | None:
        if not valid_name(name):
            return None
        path = self.root / name
        try:
            stat = await asyncio.to_thread(path.stat)
        except OSError:
            return None
        expires_at = stat.st_mtime + self.retention_s
        if expires_at <= time.time():
            return None
        handle = await asyncio.to_thread(path.open, "rb")
        if start:
            await asyncio.to_thread(handle.seek, start)
        kind = CONTENT_TYPES[path.suffix.lstrip(".")]
        return HostedImage(
            kind, stat.st_size, expires_at, _chunks_in_thread(handle.read, handle.close)
        )

    async def sweep(self) -> int:
        return await asyncio.to_thread(self._sweep, time.time() - self.retention_s)

    def _sweep(self, cutoff: float) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.iterdir():
            if not (valid_name(path.name) or path.name.endswith(".tmp")):
                continue  # not this store's: another store's folder (the kept outputs)
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue  # another replica or sweep got there first
        return removed


class S3HostedImages:
    """A bucket (and key prefix) on any S3-compatible service, through boto3 in threads."""

    def __init__(self, url: str, retention_s: float, endpoint_url: str | None) -> None:
        import boto3  # imported here: only deployments that use S3 pay for loading it

        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        self.retention_s = retention_s
        self._s3: Any = boto3.client("s3", endpoint_url=endpoint_url)

    async def put(self, data: bytes, content_type: str) -> str:
        name = new_name(content_type)
        await asyncio.to_thread(
            self._s3.put_object,
            Bucket=self.bucket,
            Key=self.prefix + name,
            Body=data,
            ContentType=content_type,
        )
        return name

    async def put_stream(
        self, chunks: AsyncIterator[bytes], content_type: str, max_bytes: int
    ) -> tuple[str, int]:
        # Spooled to a temporary file (bounded memory), then uploaded in parts by boto3.
        import tempfile

        name = new_name(content_type)
        with tempfile.TemporaryFile() as spool:
            size = await _spooled(chunks, spool.write, max_bytes)
            await asyncio.to_thread(spool.seek, 0)
            await asyncio.to_thread(
                self._s3.upload_fileobj,
                spool,
                self.bucket,
                self.prefix + name,
                ExtraArgs={"ContentType": content_type},
            )
        return name, size

    async def delete(self, name: str) -> None:
        if valid_name(name):
            await asyncio.to_thread(
                self._s3.delete_object, Bucket=self.bucket, Key=self.prefix + name
            )

    async def get(self, name: str, start: int = 0) -> HostedImage | None:
        if not valid_name(name):
            return None
        ranged = {"Range": f"bytes={start}-"} if start else {}
        try:
            obj = await asyncio.to_thread(
                self._s3.get_object, Bucket=self.bucket, Key=self.prefix + name, **ranged
            )
        except self._s3.exceptions.NoSuchKey:
            return None
        body = obj["Body"]
        expires_at = obj["LastModified"].timestamp() + self.retention_s
        if expires_at <= time.time():
            body.close()
            return None
        kind = CONTENT_TYPES[name.rsplit(".", 1)[1]]
        size = int(obj["ContentLength"])
        if start:  # "bytes start-end/size"
            size = int(str(obj.get("ContentRange", "")).rpartition("/")[2] or size + start)
        return HostedImage(kind, size, expires_at, _chunks_in_thread(body.read, body.close))

    async def sweep(self) -> int:
        return await asyncio.to_thread(self._sweep, time.time() - self.retention_s)

    def _sweep(self, cutoff: float) -> int:
        removed = 0
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            old = [
                {"Key": o["Key"]}
                for o in page.get("Contents", [])
                if o["LastModified"].timestamp() < cutoff
                # only this store's own names: not another's under a deeper prefix
                and valid_name(o["Key"][len(self.prefix) :])
            ]
            if old:
                self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": old, "Quiet": True})
                removed += len(old)
        return removed


def open_hosted_images(
    url: str | None,
    data_dir: Path,
    retention_s: float,
    endpoint_url: str | None,
    within: str = "",
) -> HostedImages:
    """The store MEDIAGATE_IMAGE_STORE_URL names; `within` a folder (prefix) of it, for a
    store of its own retention beside the hosted images (the kept outputs: "outputs")."""
    if url is None or url.startswith("file:"):
        root = Path(urlparse(url).path) if url else data_dir / "images"
        return LocalHostedImages(root / within if within else root, retention_s)
    if url.startswith("s3://"):
        return S3HostedImages(
            url.rstrip("/") + "/" + within if within else url, retention_s, endpoint_url
        )
    raise ValueError(f"unsupported MEDIAGATE_IMAGE_STORE_URL {url!r}: use s3://bucket/prefix")

"""GET /v1/files/images/{name}: the images the gateway hosts at its own links.

No key needed: the unguessable name is the credential, so links work in <img> tags.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from mediagate.errors import NotFound
from mediagate.http.deps import gateway

files = APIRouter(prefix="/v1/files")


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

"""A minimal, fast stand-in for the reseller upstream: zero service time, precomputed answers.

The bundled simulator (`mediagate.simulator`) is strict and records every call: it renders PNGs,
validates every field, buffers bodies for fault injection and keeps a list of calls that grows
with each request. All of that is right for tests and wrong for a benchmark, where the upstream's
own cost should be small, constant and the same for direct and gateway calls. So this serves
exactly what the gateway needs, as raw ASGI, with every body built once:

- POST /v1/images/generations: an ImagesResponse with one b64 image of `--image-kb` KiB (a
  prompt containing `[bench:huge=MB]` gets `n` of MB megabytes of base64 each instead), and usage;
  with `"stream": true`, the official event stream instead: `partial_images` partial events
  (images of a quarter of the size), then the completed event with the image and usage, each
  event `[bench:gap_ms=N]` (default 0) after the one before;
  `[bench:sleep=S]` answers after S seconds (a generation's service time: `bench.slow`);
- POST /v1/chat/completions: a chat answer whose Markdown links to /files/bench.png;
- GET /files/bench.png: that image (PNG signature, then incompressible bytes);
- POST /v1/videos (multipart): a completed video job; `[bench:bytes=N]` in the prompt sets the
  size of its content (default `--video-kb` KiB);
- GET /v1/videos/{id} and /v1/videos/{id}/content: the job, and its content streamed in 1 MiB
  chunks from one precomputed block (a 500 MB file costs no memory).

`python -m bench.standin --port P [--image-kb K] [--video-kb K]`
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import time
from typing import Any

import uvicorn

_HUGE = re.compile(rb"\[bench:huge=([0-9.]+)\]")
_BYTES = re.compile(rb"\[bench:bytes=([0-9]+)\]")
_GAP = re.compile(rb"\[bench:gap_ms=([0-9.]+)\]")
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_PARTIALS = re.compile(rb'"partial_images"\s*:\s*([0-9]+)')
_SLEEP = re.compile(rb"\[bench:sleep=([0-9.]+)\]")
_N = re.compile(rb'"n"\s*:\s*([0-9]+)')
_CHUNK = 1024 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Scope = dict[str, Any]


def fake_png(size: int) -> bytes:
    """Bytes that pass an image sniffer (PNG signature) and do not compress: a stand-in for a
    generated image of that size."""
    return _PNG_SIGNATURE + os.urandom(max(0, size - len(_PNG_SIGNATURE)))


USAGE = {
    "total_tokens": 4200,
    "input_tokens": 40,
    "output_tokens": 4160,
    "input_tokens_details": {"text_tokens": 40, "image_tokens": 0},
}


def images_body(b64: str, n: int = 1) -> bytes:
    data = [{"b64_json": b64}] * n
    body = {"created": int(time.time()), "data": data, "usage": USAGE}
    return json.dumps(body).encode()


def image_event(kind: str, image: bytes, **fields: Any) -> bytes:
    """One server-sent event of the official Images API stream."""
    data = {
        "type": f"image_generation.{kind}",
        "b64_json": base64.b64encode(image).decode("ascii"),
        "created_at": int(time.time()),
        "size": "1024x1024",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
        **fields,
    }
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class StandIn:
    def __init__(self, port: int, image_kb: int, video_kb: int) -> None:
        self.port = port
        self.video_bytes = video_kb * 1024
        self.image = fake_png(image_kb * 1024)
        self.images = images_body(base64.b64encode(self.image).decode("ascii"))
        self.huge: dict[tuple[bytes, int], bytes] = {}
        link = f"http://127.0.0.1:{port}/files/bench.png"
        self.chat = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "sora_image",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": f"> Generating...\n\n![image]({link})\n",
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
            }
        ).encode()
        self.partial_image = fake_png(max(64, image_kb * 256))
        self.partials: dict[int, bytes] = {}  # partial_image_index -> its event
        self.completed = image_event("completed", self.image, usage=USAGE)
        self.block = os.urandom(_CHUNK)
        self.videos: dict[str, tuple[int, bytes]] = {}  # id -> (content bytes, job JSON)

    def huge_images(self, megabytes: bytes, n: int = 1) -> bytes:
        """An ImagesResponse of `n` b64 strings of that many megabytes (10**6 bytes) each."""
        if (megabytes, n) not in self.huge:
            size = int(float(megabytes) * 1_000_000)
            raw = fake_png(size * 3 // 4)  # an image, as the gateway checks (its head sniffed)
            b64 = base64.b64encode(raw).decode("ascii")
            self.huge[megabytes, n] = images_body(b64, n)
        return self.huge[megabytes, n]

    def new_video(self, body: bytes) -> bytes:
        match = _BYTES.search(body)
        size = int(match.group(1)) if match else self.video_bytes
        video_id = f"video_{secrets.token_hex(16)}"
        now = int(time.time())
        job = json.dumps(
            {
                "id": video_id,
                "object": "video",
                "model": "muse-video",
                "status": "completed",
                "progress": 100,
                "created_at": now,
                "completed_at": now,
                "expires_at": now + 86_400,
                "prompt": "bench",
                "size": "720x1280",
                "seconds": "4",
                "remixed_from_video_id": None,
                "error": None,
            }
        ).encode()
        self.videos[video_id] = (size, job)
        return job

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if path.startswith("/v1/") and not _authorized(scope):
            await _send(send, 401, b'{"error": {"message": "no key", "code": "invalid_api_key"}}')
            return
        if method == "POST" and path == "/v1/images/generations" and _STREAM.search(body):
            await self._stream(send, body)
        elif method == "POST" and path == "/v1/images/generations":
            if sleep := _SLEEP.search(body):
                await asyncio.sleep(float(sleep.group(1)))
            match = _HUGE.search(body)
            if match:
                n = _N.search(body)
                await _send(
                    send, 200, self.huge_images(match.group(1), int(n.group(1)) if n else 1)
                )
            else:
                await _send(send, 200, self.images)
        elif method == "POST" and path == "/v1/chat/completions":
            await _send(send, 200, self.chat)
        elif method == "GET" and path == "/files/bench.png":
            await _send(send, 200, self.image, b"image/png")
        elif method == "POST" and path == "/v1/videos":
            await _send(send, 200, self.new_video(body))
        elif method == "GET" and path.startswith("/v1/videos/"):
            await self._video(send, path.removeprefix("/v1/videos/"))
        else:
            await _send(send, 404, b'{"error": {"message": "not found", "code": "not_found"}}')

    def partial_event(self, index: int) -> bytes:
        if index not in self.partials:
            image = self.partial_image
            self.partials[index] = image_event("partial_image", image, partial_image_index=index)
        return self.partials[index]

    async def _stream(self, send: Any, body: bytes) -> None:
        """The official event stream: the partial images asked for, then the completed one."""
        gap = _GAP.search(body)
        pause = float(gap.group(1)) / 1000 if gap else 0.0
        partials = _PARTIALS.search(body)
        count = int(partials.group(1)) if partials else 0
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index in range(count + 1):
            if pause:
                await asyncio.sleep(pause)
            event = self.completed if index == count else self.partial_event(index)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _video(self, send: Any, rest: str) -> None:
        video_id, _, tail = rest.partition("/")
        found = self.videos.get(video_id)
        if found is None or tail not in ("", "content"):
            await _send(send, 404, b'{"error": {"message": "Video not found.", "code": null}}')
            return
        size, job = found
        if not tail:
            await _send(send, 200, job)
            return
        headers = [
            (b"content-type", b"video/mp4"),
            (b"content-length", str(size).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        left = size
        while left > 0:
            piece = self.block if left >= _CHUNK else self.block[:left]
            left -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
        if size == 0:
            await send({"type": "http.response.body", "body": b""})


def _authorized(scope: Scope) -> bool:
    return any(
        name == b"authorization" and value.startswith(b"Bearer ")
        for name, value in scope["headers"]
    )


async def _send(send: Any, status: int, body: bytes, kind: bytes = b"application/json") -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--image-kb", type=int, default=1024)
    parser.add_argument("--video-kb", type=int, default=1024)
    args = parser.parse_args()
    app = StandIn(args.port, args.image_kb, args.video_kb)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off"
    )


if __name__ == "__main__":
    main()

"""The floor: the least a proxy can do, as a process to measure beside the gateway.

A minimal aiohttp pass-through: every request's body is sent to the upstream as it came (with
the upstream key instead of the client's), the answer read whole and returned with its status
and content type. No validation, accounting, logs or checks: what relaying the same bytes costs
at the least, on the same event loop the gateway runs (uvloop, when installed). The b64 bench
(bench/b64.py) measures the gateway's CPU per MB against it in alternating rounds.

`python -m bench.floor --port P --upstream http://127.0.0.1:U/v1 --key K`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import aiohttp
from aiohttp import web

_DROPPED = {"host", "authorization", "content-length", "connection", "transfer-encoding"}


def app(upstream: str, key: str) -> web.Application:
    base = upstream.rstrip("/")
    session: aiohttp.ClientSession | None = None

    async def start(_: web.Application) -> None:
        nonlocal session
        # No pool limit, no automatic decompression: the bytes as they come.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def stop(_: web.Application) -> None:
        if session is not None:
            await session.close()

    async def relay(request: web.Request) -> web.Response:
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        headers["Authorization"] = f"Bearer {key}"
        path = request.match_info["path"]
        async with session.request(
            request.method, f"{base}/{path}", headers=headers, data=await request.read()
        ) as answer:
            body = await answer.read()
            kind = answer.headers.get("content-type", "application/json")
            return web.Response(body=body, status=answer.status, headers={"content-type": kind})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    application = web.Application(client_max_size=1 << 30)
    application.router.add_get("/healthz", healthz)
    application.router.add_route("*", "/v1/{path:.*}", relay)
    application.on_startup.append(start)
    application.on_cleanup.append(stop)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's API base URL")
    parser.add_argument("--key", required=True, help="the upstream key")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop  # the gateway's loop too

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        app(args.upstream, args.key),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()

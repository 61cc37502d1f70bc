"""The floor: the least a proxy can do, a minimal aiohttp pass-through, for every bench mode.

What a gateway costs is only meaningful against what relaying the same bytes costs at all. This
process forwards every request to one upstream, unchanged (method, path, query, body, the
`Authorization` and `Content-Type` headers), over one pooled aiohttp client session, and answers
with the upstream's status, content type and body:

- a plain answer with a Content-Length of at most 1 MiB (JSON): read whole, sent whole;
- anything else (an event stream, a video, a large or unsized body): streamed, each chunk sent
  on as it arrives (`iter_any`), so an SSE event leaves as soon as it came in and a 200 MB
  download never sits in memory.

No authentication, no accounting, no logging, no parsing: a floor, not a gateway. Clients call
it with the upstream's paths and the upstream's key.

    python -m bench.floor --upstream http://127.0.0.1:8001 --port 8002

`bench.modes.floor(...)` starts one as a child process for a mode (see bench/modes.py).
"""

from __future__ import annotations

import argparse

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

WHOLE_LIMIT = 1024 * 1024  # answers up to this size are read whole, larger ones streamed
_FORWARDED = ("Authorization", "Content-Type", "Accept")


def make_app(upstream: str, key: str | None = None) -> web.Application:
    """The pass-through; with `key`, the client's Authorization is replaced by the upstream's
    key (a client that holds the gateway's key measures both sides with one request)."""
    base = upstream.rstrip("/")
    app = web.Application(client_max_size=1024**3)

    async def start(app: web.Application) -> None:
        connector = TCPConnector(limit=0, limit_per_host=0)  # no pool cap: a floor
        app["session"] = ClientSession(
            connector=connector, timeout=ClientTimeout(total=None), auto_decompress=False
        )

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        session: ClientSession = request.app["session"]
        headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        body = await request.read()
        async with session.request(
            request.method, base + request.path_qs, headers=headers, data=body or None
        ) as answer:
            kind = answer.headers.get("Content-Type", "application/octet-stream")
            length = answer.content_length
            if length is not None and length <= WHOLE_LIMIT and "event-stream" not in kind:
                data = await answer.read()
                return web.Response(status=answer.status, body=data, headers={"Content-Type": kind})
            out = web.StreamResponse(status=answer.status, headers={"Content-Type": kind})
            if length is not None:
                out.content_length = length
            await out.prepare(request)
            async for chunk in answer.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", help="send this upstream key instead of the client's")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # uvicorn's backlog (the gateway's): a burst of 2,000 connects at once (bench.slow).
    web.run_app(
        make_app(args.upstream, args.key),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        backlog=2048,
    )


if __name__ == "__main__":
    main()

"""Downloading images from links an upstream model wrote.

A model can write any URL into its answer, including ones that point at the gateway's own
network. So: http(s) only, every address the host resolves to must be public (unless the
operator allowed that host:port), the connection goes to the address that was checked (no DNS
rebinding between check and connect), redirects are checked hop by hop, the body is capped, and
only image bytes are accepted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from mediagate.errors import FetchRefused, UpstreamError, UpstreamTimeout
from mediagate.imagedata import sniff_image_type
from mediagate.observability import tracing

_MAX_REDIRECTS = 3


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise FetchRefused(f"Could not resolve the image host '{host}'.") from None
    return [str(info[4][0]) for info in infos]


class SafeFetcher:
    def __init__(
        self,
        client: httpx.AsyncClient,
        allow_hosts: list[str],
        max_bytes: int,
        timeout_s: float,
        tracer: tracing.Tracer | None = None,
    ) -> None:
        self._client = client
        self._tracer = tracer or tracing.NoOpTracer()  # a span per download
        self._allow = {h.lower() for h in allow_hosts}
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def _target(self, url: httpx.URL) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL to connect to (host replaced by a checked address), headers and extensions."""
        if url.scheme not in ("http", "https") or not url.host:
            raise FetchRefused("Refused to fetch an image link that is not http(s).")
        port = url.port or (443 if url.scheme == "https" else 80)
        if f"{url.host}:{port}".lower() in self._allow:
            return url, {}, {}
        addresses = await _resolve(url.host, port)
        parsed = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
        if not parsed or not all(is_public(ip) for ip in parsed):
            raise FetchRefused(
                f"Refused to fetch an image from '{url.host}': it is not a public address."
            )
        host = url.host
        pinned = url.copy_with(host=str(parsed[0]))
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        default_port = port == (443 if url.scheme == "https" else 80)
        return pinned, {"Host": host if default_port else f"{host}:{port}"}, extensions

    async def fetch_image(self, link: str) -> tuple[bytes, str]:
        """The image's bytes and content type, or a GatewayError saying why not."""
        # The span names the host only: a link's path and query may be a signed credential.
        host = link.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        with tracing.span(
            self._tracer, "fetch image", tracing.SpanKind.CLIENT, **{"server.address": host}
        ) as span:
            data, kind = await self._fetch_image(link)
            span.set(**{"mediagate.bytes": len(data), "mediagate.content_type": kind})
            span.outcome("ok")
            return data, kind

    async def _fetch_image(self, link: str) -> tuple[bytes, str]:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._fetch(httpx.URL(link))
        except TimeoutError:
            raise UpstreamTimeout("Downloading the generated image timed out.") from None
        except httpx.InvalidURL:
            raise FetchRefused("The upstream wrote an invalid image link.") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"Could not download the generated image: {type(exc).__name__}.",
                code="image_download_failed",
            ) from None

    async def _fetch(self, url: httpx.URL) -> tuple[bytes, str]:
        for _ in range(_MAX_REDIRECTS + 1):
            target, headers, extensions = await self._target(url)
            request = self._client.build_request(
                "GET", target, headers=headers, extensions=extensions
            )
            response = await self._client.send(request, stream=True, follow_redirects=False)
            try:
                if response.is_redirect and "location" in response.headers:
                    url = url.join(response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise UpstreamError(
                        f"The generated image's link answered HTTP {response.status_code}.",
                        code="image_download_failed",
                    )
                return await self._read_image(response)
            finally:
                await response.aclose()
        raise FetchRefused("The generated image's link redirected too many times.")

    async def post(self, link: str, body: bytes, headers: dict[str, str]) -> int:
        """POST `body` to `link` under the same address rules (redirects are not followed, a
        webhook receiver answers where it was told to): the answer's HTTP status."""
        try:
            async with asyncio.timeout(self._timeout_s):
                target, pinned, extensions = await self._target(httpx.URL(link))
                response = await self._client.post(
                    target,
                    content=body,
                    headers={**headers, **pinned},
                    extensions=extensions,
                    follow_redirects=False,
                )
                return response.status_code
        except TimeoutError:
            raise UpstreamTimeout(f"POST to '{httpx.URL(link).host}' timed out.") from None
        except httpx.InvalidURL:
            raise FetchRefused("Refused to POST to an invalid URL.") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"Could not POST to '{httpx.URL(link).host}': {type(exc).__name__}.",
                code="post_failed",
            ) from None

    async def _read_image(self, response: httpx.Response) -> tuple[bytes, str]:
        declared = int(response.headers.get("content-length") or 0)
        if declared > self._max_bytes:
            raise FetchRefused("The generated image is larger than the gateway accepts.")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise FetchRefused("The generated image is larger than the gateway accepts.")
            chunks.append(chunk)
        data = b"".join(chunks)
        kind = sniff_image_type(data)
        if kind is None:
            raise FetchRefused("The upstream's image link did not serve an image.")
        return data, kind

"""Downloading images from links an upstream model wrote.

A model can write any URL into its answer, including ones that point at the gateway's own
network. So: http(s) only, every address the host resolves to must be public (unless the
operator allowed that host:port), redirects are checked hop by hop, the body is capped, and
only image bytes are accepted.

"Public" sees through the IPv6 forms that carry an IPv4 address: IPv4-mapped (::ffff:a.b.c.d),
SIIT (::ffff:0:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96; the local-use
64:ff9b:1::/48 is never public), 6to4 (2002::/16) and Teredo: the embedded IPv4 must be public
too, or `http://[64:ff9b::a9fe:a9fe]/` would reach 169.254.169.254 wherever NAT64 exists.

Fetching has its own client (`public_transport`, built in mediagate.gateway), whose network
backend makes the check where connections are made: it resolves the host, refuses unless every
address is public, and connects to a checked address, so DNS rebinding between a check and the
connection cannot happen. The URL keeps its host name, so the connection pool is keyed by host
and TLS sends that host's SNI and checks its certificate (a connection opened for one host is
never reused for another on the same IP). `SafeFetcher` also checks each hop's host before
sending, to refuse early with a clear message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpcore2
import httpx2

from mediagate.errors import FetchRefused, NotFound, UpstreamError, UpstreamTimeout
from mediagate.imagedata import sniff_image_type
from mediagate.observability import tracing
from mediagate.upstream.transport import UpstreamResponse, streamed

_MAX_REDIRECTS = 3


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a local network's own
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and would reach through a translator)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # the server's and the client's
    if ip in _NAT64 or ip in _SIIT or ip in _COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        embedded = embedded_ipv4(ip)
        if embedded:
            # The wrapper says nothing: where it leads does (mapped and SIIT forms are not
            # "global" themselves, 6to4 and NAT64 ones are, whatever they carry).
            return all(is_public(v4) for v4 in embedded)
    return ip.is_global


def _checked(host: str, addresses: list[str]) -> list[str]:
    """`addresses` if every one is public, else FetchRefused."""
    parsed = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
    if not parsed or not all(is_public(ip) for ip in parsed):
        raise FetchRefused(f"Refused to fetch an image from '{host}': it is not a public address.")
    return addresses


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise FetchRefused(f"Could not resolve the image host '{host}'.") from None
    return [str(info[4][0]) for info in infos]


class _PublicOnly(httpcore2.AsyncNetworkBackend):
    """Connects only to public addresses (or to an allow-listed host:port): the check is made
    here, at connect time, on the addresses the connection then uses."""

    def __init__(self, allow_hosts: list[str]) -> None:
        self._allow = {h.lower() for h in allow_hosts}
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        if _allowed(self._allow, host, port):
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = _checked(host, await _resolve(host, port))
        error: OSError | httpcore2.ConnectError | None = None
        for address in dict.fromkeys(addresses):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (OSError, httpcore2.ConnectError) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's interface)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise FetchRefused("Refused to fetch an image over a Unix socket.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _allowed(allow: set[str], host: str, port: int) -> bool:
    """Whether the operator allowed host:port (an IPv6 host with or without brackets)."""
    host = host.lower()
    return f"{host}:{port}" in allow or f"[{host}]:{port}" in allow


class _PublicTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport on a connection pool whose network backend is `_PublicOnly`."""

    def __init__(
        self, allow_hosts: list[str], limits: httpx2.Limits, ssl_context: ssl.SSLContext
    ) -> None:
        super().__init__(verify=ssl_context, limits=limits)
        # httpx2 builds its pool with the default backend and offers no parameter for another:
        # the same pool (TLS context, limits), on ours.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PublicOnly(allow_hosts),
        )


def public_transport(
    allow_hosts: list[str],
    limits: httpx2.Limits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx2.AsyncBaseTransport:
    """The transport of the fetching client: connections to public addresses only. A TLS
    context (loading the CA bundle costs ~25 ms) may be shared by several transports."""
    context = ssl_context if ssl_context is not None else httpx2.create_ssl_context()
    return _PublicTransport(allow_hosts, limits or httpx2.Limits(), context)


class SafeFetcher:
    def __init__(
        self,
        client: httpx2.AsyncClient,
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

    async def _check(self, url: httpx2.URL) -> None:
        """Refuses a link that is not http(s) or whose host is not public, before sending (the
        transport checks again where it connects)."""
        if url.scheme not in ("http", "https") or not url.host:
            raise FetchRefused("Refused to fetch an image link that is not http(s).")
        port = url.port or (443 if url.scheme == "https" else 80)
        if _allowed(self._allow, url.host, port):
            return
        _checked(url.host, await _resolve(url.host, port))

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

    @asynccontextmanager
    async def _bounded(self, doing: str, invalid: str, code: str) -> AsyncIterator[None]:
        """The block under the fetch timeout, its transport failures as the gateway's errors:
        `doing` names the exchange in their messages ("download the generated image")."""
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except TimeoutError:
            raise UpstreamTimeout(f"Could not {doing} in {self._timeout_s:g} s.") from None
        except httpx2.InvalidURL:
            raise FetchRefused(invalid) from None
        except httpx2.HTTPError as exc:
            raise UpstreamError(f"Could not {doing}: {type(exc).__name__}.", code=code) from None

    async def _fetch_image(self, link: str) -> tuple[bytes, str]:
        invalid = "The upstream wrote an invalid image link."
        async with self._bounded("download the generated image", invalid, "image_download_failed"):
            image = await self._fetch(httpx2.URL(link))
        return image

    async def _fetch(self, url: httpx2.URL) -> tuple[bytes, str]:
        for _ in range(_MAX_REDIRECTS + 1):
            await self._check(url)
            request = self._client.build_request("GET", url)
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

    async def open_stream(self, link: str, headers: dict[str, str]) -> UpstreamResponse:
        """A signed result link (a finished video) opened for streaming under the same address
        rules, with the client's Range and validators and WITHOUT any upstream key: the answer
        (200, 206, 304 or 416) with its body unread, for the caller to relay and close."""
        invalid = "The upstream wrote an invalid video link."
        try:
            url = httpx2.URL(link)
        except httpx2.InvalidURL:
            raise FetchRefused(invalid) from None
        async with self._bounded("open the video's link", invalid, "video_download_failed"):
            for _ in range(_MAX_REDIRECTS + 1):
                await self._check(url)
                request = self._client.build_request("GET", url, headers=headers)
                response = await self._client.send(request, stream=True, follow_redirects=False)
                if response.is_redirect and "location" in response.headers:
                    await response.aclose()
                    url = url.join(response.headers["location"])
                    continue
                if response.status_code not in (200, 206, 304, 416):
                    status = response.status_code
                    await response.aclose()
                    if status in (403, 404, 410):
                        raise NotFound(
                            "The video's file is no longer available upstream (its link expired).",
                            code="video_content_expired",
                        )
                    raise UpstreamError(
                        f"The video's link answered HTTP {status}.", code="video_download_failed"
                    )
                return streamed(response)
        raise FetchRefused("The video's link redirected too many times.")

    async def post(self, link: str, body: bytes, headers: dict[str, str]) -> int:
        """POST `body` to `link` under the same address rules (redirects are not followed, a
        webhook receiver answers where it was told to): the answer's HTTP status."""
        invalid = "Refused to POST to an invalid URL."
        try:
            url = httpx2.URL(link)
        except httpx2.InvalidURL:
            raise FetchRefused(invalid) from None
        async with self._bounded(f"POST to '{url.host}'", invalid, "post_failed"):
            await self._check(url)
            response = await self._client.post(
                url, content=body, headers=headers, follow_redirects=False
            )
        return response.status_code

    async def _read_image(self, response: httpx2.Response) -> tuple[bytes, str]:
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

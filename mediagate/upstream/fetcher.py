"""Downloading images from links an upstream model wrote.

A model can write any URL into its answer, including ones that point at the gateway's own
network. So: http(s) only, every address the host resolves to must be public (unless the
operator allowed that host:port), redirects are checked hop by hop, the body is capped, and
only image bytes are accepted. Bodies are never decoded, as with the upstream's API calls
(mediagate.upstream.transport): a download asks for `Accept-Encoding: identity` and refuses an
answer in any other Content-Encoding before reading its body (a few KB of gzip could decode
to any size; httpx2's client would otherwise decode it, a chunk at a time, before counting).

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

The operator's allow-list (MEDIAGATE_FETCH_ALLOW_HOSTS, and MEDIAGATE_WEBHOOK_ALLOW_HOSTS for
webhooks) is `host:port` entries compared as places, not strings (`AllowList`): host names
case-insensitively without a trailing dot, addresses in their one canonical form (`[::1]`,
`[0:0::1]`), and a link whose host resolves only to addresses an entry of that port resolves
to is allowed too (`localhost:8080` allows `127.0.0.1:8080`, and the other way round). An
allowed host is connected to at the addresses just checked, like any other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpcore2
import httpx2

from mediagate.errors import (
    AddressRefused,
    FetchRefused,
    GatewayError,
    InvalidRequest,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
)
from mediagate.imagedata import sniff_output_type
from mediagate.observability import tracing
from mediagate.upstream.transport import (
    AnswerTooLarge,
    UpstreamResponse,
    encoded,
    raw_chunks,
    read_whole,
    streamed,
)

_MAX_REDIRECTS = 3
_IDENTITY = {"accept-encoding": "identity"}  # what every download asks for: bytes as stored
_TOKEN = re.compile(r"[A-Za-z0-9._+-]{1,40}")


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


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%")[0])


def _checked(host: str, addresses: list[str], doing: str = "connect to") -> list[str]:
    """`addresses` if every one is public, else AddressRefused (`doing` names the exchange in
    its message: "fetch an image from", "POST to")."""
    parsed = [_address(a) for a in addresses]
    if not parsed or not all(is_public(ip) for ip in parsed):
        raise AddressRefused(f"Refused to {doing} '{host}': it is not a public address.")
    return addresses


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise FetchRefused(f"Could not resolve the host '{host}'.") from None
    return [str(info[4][0]) for info in infos]


def _normal_host(host: str) -> str:
    """A host as one spelling: an address in its canonical form, a name in lower case
    without a trailing dot."""
    bare = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return str(_address(bare))
    except ValueError:
        return bare


class AllowList:
    """The operator's `host:port` entries, compared as places (see the module's docstring)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._entries: set[tuple[str, int]] = set()
        for entry in entries:
            host, sep, port = entry.strip().rpartition(":")
            if sep and port.isdigit() and host:
                self._entries.add((_normal_host(host), int(port)))

    def names(self, host: str, port: int) -> bool:
        return (_normal_host(host), port) in self._entries

    async def covers(self, host: str, port: int, addresses: list[str]) -> bool:
        """Whether host:port is allowed: by its name, or because every address it resolved
        to is one an allowed entry of that port resolves to."""
        if self.names(host, port):
            return True
        hosts = [h for h, p in self._entries if p == port]
        if not hosts or not addresses:
            return False
        allowed: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        for entry in hosts:
            try:
                allowed.update(_address(a) for a in await _resolve(entry, port))
            except FetchRefused:  # an entry that does not resolve allows nothing
                continue
        return all(_address(a) in allowed for a in addresses)


class _PublicOnly(httpcore2.AsyncNetworkBackend):
    """Connects only to public addresses (or to an allow-listed host:port): the check is made
    here, at connect time, on the addresses the connection then uses."""

    def __init__(self, allow_hosts: list[str]) -> None:
        self._allow = AllowList(allow_hosts)
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await _resolve(host, port)
        if not await self._allow.covers(host, port, addresses):
            _checked(host, addresses)
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
        self._allow = AllowList(allow_hosts)
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def _check(self, url: httpx2.URL, doing: str = "fetch an image from") -> None:
        """Refuses a link that is not http(s) or whose host is not public, before sending (the
        transport checks again where it connects). `doing` names the exchange in the refusal."""
        if url.scheme not in ("http", "https") or not url.host:
            raise FetchRefused(f"Refused to {doing} a link that is not http(s).")
        port = url.port or (443 if url.scheme == "https" else 80)
        if self._allow.names(url.host, port):
            return
        addresses = await _resolve(url.host, port)
        if not await self._allow.covers(url.host, port, addresses):
            _checked(url.host, addresses, doing)

    async def fetch_given(self, link: str, param: str, what: str) -> bytes:
        """An image a client gave as a link (a video's input_reference, a batch's edit line's
        image), under the same rules: its bytes, or a 400 naming `param` saying why not."""
        try:
            data, _ = await self.fetch_image(link)
        except GatewayError as exc:
            raise InvalidRequest(
                f"Could not use {what}: {exc.message}",
                param=param,
                code=exc.code or "invalid_image_url",
            ) from None
        return data

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
            request = self._client.build_request("GET", url, headers=_IDENTITY)
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
                _not_encoded(response, "The image's link", "image_download_failed")
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
                await self._check(url, "open a video link to")
                request = self._client.build_request("GET", url, headers={**headers, **_IDENTITY})
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
                try:
                    _not_encoded(response, "The video's link", "video_download_failed")
                except UpstreamError:
                    await response.aclose()
                    raise
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
            await self._check(url, "POST to")
            response = await self._client.post(
                url, content=body, headers=headers, follow_redirects=False
            )
        return response.status_code

    async def _read_image(self, response: httpx2.Response) -> tuple[bytes, str]:
        # The bytes as sent, by the one read path (raw: nothing decoded; `_not_encoded`
        # checked there is nothing to decode), bounded as declared and as they arrive.
        try:
            data, _ = await read_whole(raw_chunks(response), response.headers.raw, self._max_bytes)
        except AnswerTooLarge:
            raise FetchRefused("The generated image is larger than the gateway accepts.") from None
        # An image a route made (a video reference is sniffed again, strictly, by its reader).
        kind = sniff_output_type(data)
        if kind is None:
            raise FetchRefused("The upstream's image link did not serve an image.")
        return data, kind


def _not_encoded(response: httpx2.Response, what: str, code: str) -> None:
    """Refuses (an UpstreamError with `code`) an answer in a Content-Encoding the download did
    not ask for, before a byte of its body is read: it is never decoded."""
    encoding = encoded(response.headers.raw)
    if encoding is None:
        return
    named = encoding if _TOKEN.fullmatch(encoding) else "unknown"
    raise UpstreamError(
        f"{what} answered in a Content-Encoding the gateway did not ask for ({named!r}); it "
        "is not decoded.",
        code=code,
    )

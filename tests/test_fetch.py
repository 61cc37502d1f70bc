"""Links an upstream model wrote are untrusted: only public image URLs are ever fetched."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable

import httpx2
import openai
import pytest

from mediagate.errors import FetchRefused, GatewayError
from mediagate.simulator import make_png
from mediagate.upstream.fetcher import SafeFetcher

from .conftest import Gateway, Sim, assert_error

PNG = make_png(16, 16, "tiny")


def fetch(
    url: str,
    handler: Callable[[httpx2.Request], httpx2.Response],
    allow: list[str] | None = None,
    max_bytes: int = 1_000_000,
) -> tuple[bytes, str]:
    async def run() -> tuple[bytes, str]:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
            fetcher = SafeFetcher(client, allow or [], max_bytes=max_bytes, timeout_s=5)
            return await fetcher.fetch_image(url)

    return asyncio.run(run())


class Recorder:
    def __init__(self, *responses: httpx2.Response) -> None:
        self.requests: list[httpx2.Request] = []
        self.responses = list(responses) or [httpx2.Response(200, content=PNG)]

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.png",
        "http://localhost:8080/a.png",
        "http://10.1.2.3/a.png",
        "http://172.16.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://100.64.0.1/a.png",  # carrier-grade NAT
        "http://0.0.0.0/a.png",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://[fd00::1]/a.png",
        "http://224.0.0.1/a.png",
        # IPv6 forms that carry a private IPv4 address (issue 14, item 11):
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of 169.254.169.254
        "http://[64:ff9b::7f00:1]/a.png",  # NAT64 of 127.0.0.1
        "http://[64:ff9b:1::a00:1]/a.png",  # local-use NAT64
        "http://[2002:a9fe:a9fe::1]/a.png",  # 6to4 of 169.254.169.254
        "http://[2002:7f00:1::]/a.png",  # 6to4 of 127.0.0.1
        "http://[::a9fe:a9fe]/a.png",  # IPv4-compatible 169.254.169.254
        "http://[::7f00:1]/a.png",  # IPv4-compatible 127.0.0.1
        "http://[::ffff:0:a9fe:a9fe]/a.png",  # SIIT 169.254.169.254
        "http://[::ffff:0:a00:1]/a.png",  # SIIT 10.0.0.1
        "file:///etc/passwd",
        "ftp://93.184.216.34/a.png",
        "gopher://93.184.216.34/",
    ],
)
def test_private_and_non_http_links_are_refused_without_connecting(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(FetchRefused):
        fetch(url, recorder)
    assert recorder.requests == []


def test_public_address_is_fetched_under_its_own_name() -> None:
    recorder = Recorder()
    data, kind = fetch("http://93.184.216.34:8080/img.png?sig=1", recorder)
    assert (data, kind) == (PNG, "image/png")
    (request,) = recorder.requests
    assert request.url.host == "93.184.216.34" and request.url.params["sig"] == "1"


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2606:4700::1111", "8.8.8.8"],
)
def test_ipv6_forms_of_public_addresses_are_public(address: str) -> None:
    import ipaddress

    from mediagate.upstream.fetcher import is_public

    assert is_public(ipaddress.ip_address(address))


def test_the_fetching_transport_checks_addresses_where_it_connects(sim: Sim) -> None:
    """The fetch client's own check, with no SafeFetcher in front: a name that resolves to a
    private address (localhost, as a rebinding name would at connect time) is refused when
    the connection is made; an allow-listed host:port is reached, by its name."""
    from mediagate.upstream.fetcher import public_transport

    async def get(url: str, allow: list[str]) -> httpx2.Response:
        async with httpx2.AsyncClient(transport=public_transport(allow)) as client:
            return await client.get(url)

    for url in (f"http://localhost:{sim.port}/healthz", f"http://[::ffff:127.0.0.1]:{sim.port}/"):
        with pytest.raises(FetchRefused):
            asyncio.run(get(url, []))
    # The URL is not rewritten to the IP: the request still names its host.
    response = asyncio.run(get(f"http://localhost:{sim.port}/nothing", [f"localhost:{sim.port}"]))
    assert response.request.url.host == "localhost"
    assert response.status_code in (401, 404)  # the simulator's answer, reached


def test_https_keeps_the_hosts_name_for_sni_and_certificates(sim: Sim) -> None:
    """TLS names the host, not the address: a plain-HTTP server on the allowed port fails the
    handshake (it is reached, by name), and the pool is keyed by that name."""
    from mediagate.upstream.fetcher import public_transport

    async def get() -> None:
        transport = public_transport([f"localhost:{sim.port}"])
        async with httpx2.AsyncClient(transport=transport) as client:
            await client.get(f"https://localhost:{sim.port}/")

    with pytest.raises(httpx2.ConnectError):
        asyncio.run(get())


def test_redirect_to_a_private_address_is_refused() -> None:
    recorder = Recorder(
        httpx2.Response(302, headers={"location": "http://169.254.169.254/secret"}),
        httpx2.Response(200, content=PNG),
    )
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/img.png", recorder)
    assert len(recorder.requests) == 1


def test_public_redirect_is_followed() -> None:
    recorder = Recorder(
        httpx2.Response(301, headers={"location": "http://93.184.216.35/final.png"}),
        httpx2.Response(200, content=PNG),
    )
    assert fetch("http://93.184.216.34/img.png", recorder)[0] == PNG
    assert [r.url.host for r in recorder.requests] == ["93.184.216.34", "93.184.216.35"]


def test_too_many_redirects() -> None:
    loop = httpx2.Response(302, headers={"location": "http://93.184.216.34/again"})
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/img.png", Recorder(loop, loop, loop, loop, loop))


def test_allow_listed_private_host_is_fetched() -> None:
    recorder = Recorder()
    assert fetch("http://127.0.0.1:9000/a.png", recorder, allow=["127.0.0.1:9000"])[0] == PNG
    with pytest.raises(FetchRefused):  # the allow-list names a port, not the whole host
        fetch("http://127.0.0.1:9001/a.png", recorder, allow=["127.0.0.1:9000"])


def test_content_that_is_not_an_image_is_refused() -> None:
    html = httpx2.Response(200, content=b"<html>", headers={"content-type": "image/png"})
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/a.png", Recorder(html))


@pytest.mark.parametrize("declared", [True, False])
def test_oversized_images_are_refused(declared: bool) -> None:
    body = PNG + b"\0" * 5000
    headers = {} if declared else {"content-length": ""}
    response = httpx2.Response(200, content=body, headers=headers)
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/a.png", Recorder(response), max_bytes=4000)


def test_error_status_from_the_image_host() -> None:
    with pytest.raises(GatewayError) as caught:
        fetch("http://93.184.216.34/a.png", Recorder(httpx2.Response(403)))
    assert caught.value.code == "image_download_failed"


def test_gateway_refuses_a_private_link_that_is_not_allowed(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    # The simulator serves its images from loopback; without the operator's allow-list entry
    # the gateway must treat that as the private address it is.
    gateway = make_gateway(fetch_allow_hosts=[])
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.sdk().images.generate(model="sora_image", prompt="p")
    assert caught.value.status_code == 502
    assert caught.value.code == "unsafe_image_url"


def test_the_shared_upstream_client_keeps_no_cookies() -> None:
    from mediagate.gateway import no_cookies

    seen: list[str | None] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get("cookie"))
        return httpx2.Response(200, headers={"set-cookie": "session=tenant-a; Path=/"}, json={})

    async def two_requests() -> None:
        transport = httpx2.MockTransport(upstream)
        async with httpx2.AsyncClient(transport=transport, cookies=no_cookies()) as client:
            await client.get("https://upstream.example/v1/videos/a")  # tenant A's request
            await client.get("https://upstream.example/v1/videos/b")  # tenant B's request

    asyncio.run(two_requests())
    assert seen == [None, None]  # A's cookie never rides along with B's request


@pytest.mark.parametrize(
    "link",
    ["http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "http://[::ffff:0:7f00:1]/a.png"],
)
def test_gateway_refuses_a_reference_link_to_a_private_ipv4_in_ipv6_form(
    videos_gw: Gateway, sim: Sim, link: str
) -> None:
    with videos_gw.http() as http:
        response = http.post(
            "/v1/videos",
            json={"model": "sora-2", "prompt": "p", "input_reference": {"image_url": link}},
        )
    assert_error(response, 400, "input_reference", "unsafe_image_url")
    assert sim.sent("/v1/videos") == []


@pytest.mark.parametrize("allowed", ["localhost", "LOCALHOST.", "127.0.0.1"])
def test_the_allow_list_compares_places_not_strings(
    make_gateway: Callable[..., Gateway], sim: Sim, allowed: str
) -> None:
    """The simulator's image links name 127.0.0.1; an operator who allowed `localhost` (in any
    case, with a trailing dot) allowed that same place, and the other way round."""
    from mediagate.upstream.fetcher import public_transport

    allow = [f"{allowed}:{sim.port}"]
    gateway = make_gateway(fetch_allow_hosts=allow)
    result = gateway.sdk().images.generate(
        model="sora_image", prompt="p", response_format="b64_json"
    )
    assert result.data and result.data[0].b64_json

    async def get(url: str) -> httpx2.Response:
        async with httpx2.AsyncClient(transport=public_transport(allow)) as client:
            return await client.get(url)

    for host in ("localhost", "127.0.0.1"):
        response = asyncio.run(get(f"http://{host}:{sim.port}/nothing"))
        assert response.status_code in (401, 404)  # the simulator's answer, reached
    # Another port of the same place is not allowed.
    with pytest.raises(FetchRefused):
        asyncio.run(get("http://127.0.0.1:1/x"))


def test_a_download_asks_for_the_bytes_as_stored_and_refuses_an_encoding_undecoded() -> None:
    # A few KB of gzip can decode to any size: the answer is refused before its body is read.
    recorder = Recorder(
        httpx2.Response(200, content=gzip.compress(PNG), headers={"content-encoding": "gzip"})
    )
    with pytest.raises(GatewayError) as caught:
        fetch("http://93.184.216.34/a.png", recorder)
    assert (caught.value.status, caught.value.code) == (502, "image_download_failed")
    assert "'gzip'" in caught.value.message and "not decoded" in caught.value.message
    (request,) = recorder.requests
    assert request.headers["accept-encoding"] == "identity"
    # `identity` said out loud is no encoding.
    plain = Recorder(httpx2.Response(200, content=PNG, headers={"content-encoding": "identity"}))
    assert fetch("http://93.184.216.34/a.png", plain) == (PNG, "image/png")


def test_an_upstream_image_link_served_gzipped_is_a_502(gateway: Gateway, sim: Sim) -> None:
    # The simulator's CDN compresses whatever was asked ([sim:gzipimage]).
    response = gateway.generate("a fox [sim:gzipimage]", model="sora_image")
    assert_error(response, 502, None, "image_download_failed")
    assert "Content-Encoding" in response.json()["error"]["message"]
    downloads = [h for method, path, h in sim.state.headers if path.startswith("/files/")]
    assert downloads and all(h.get("accept-encoding") == "identity" for h in downloads)


def test_a_clients_image_link_served_gzipped_is_a_400(videos_gw: Gateway, sim: Sim) -> None:
    sim.state.files["gz-ref.png"] = (make_png(720, 1280, "ref"), "image/png")
    response = videos_gw.video_from_link(f"{sim.url}/files/gz-ref.png")
    message = assert_error(response, 400, "input_reference")
    assert "Content-Encoding" in message and "not decoded" in message
    assert sim.sent("/v1/videos") == []

"""Links an upstream model wrote are untrusted: only public image URLs are ever fetched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import openai
import pytest

from mediagate.errors import FetchRefused, GatewayError
from mediagate.simulator import make_png
from mediagate.upstream.fetcher import SafeFetcher

from .conftest import Gateway, Sim

PNG = make_png(16, 16, "tiny")


def fetch(
    url: str,
    handler: Callable[[httpx.Request], httpx.Response],
    allow: list[str] | None = None,
    max_bytes: int = 1_000_000,
) -> tuple[bytes, str]:
    async def run() -> tuple[bytes, str]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            fetcher = SafeFetcher(client, allow or [], max_bytes=max_bytes, timeout_s=5)
            return await fetcher.fetch_image(url)

    return asyncio.run(run())


class Recorder:
    def __init__(self, *responses: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self.responses = list(responses) or [httpx.Response(200, content=PNG)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
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


def test_public_address_is_fetched_at_the_checked_address() -> None:
    recorder = Recorder()
    data, kind = fetch("http://93.184.216.34:8080/img.png?sig=1", recorder)
    assert (data, kind) == (PNG, "image/png")
    (request,) = recorder.requests
    assert request.url.host == "93.184.216.34" and request.url.params["sig"] == "1"


def test_redirect_to_a_private_address_is_refused() -> None:
    recorder = Recorder(
        httpx.Response(302, headers={"location": "http://169.254.169.254/secret"}),
        httpx.Response(200, content=PNG),
    )
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/img.png", recorder)
    assert len(recorder.requests) == 1


def test_public_redirect_is_followed() -> None:
    recorder = Recorder(
        httpx.Response(301, headers={"location": "http://93.184.216.35/final.png"}),
        httpx.Response(200, content=PNG),
    )
    assert fetch("http://93.184.216.34/img.png", recorder)[0] == PNG
    assert [r.url.host for r in recorder.requests] == ["93.184.216.34", "93.184.216.35"]


def test_too_many_redirects() -> None:
    loop = httpx.Response(302, headers={"location": "http://93.184.216.34/again"})
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/img.png", Recorder(loop, loop, loop, loop, loop))


def test_allow_listed_private_host_is_fetched() -> None:
    recorder = Recorder()
    assert fetch("http://127.0.0.1:9000/a.png", recorder, allow=["127.0.0.1:9000"])[0] == PNG
    with pytest.raises(FetchRefused):  # the allow-list names a port, not the whole host
        fetch("http://127.0.0.1:9001/a.png", recorder, allow=["127.0.0.1:9000"])


def test_content_that_is_not_an_image_is_refused() -> None:
    html = httpx.Response(200, content=b"<html>", headers={"content-type": "image/png"})
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/a.png", Recorder(html))


@pytest.mark.parametrize("declared", [True, False])
def test_oversized_images_are_refused(declared: bool) -> None:
    body = PNG + b"\0" * 5000
    headers = {} if declared else {"content-length": ""}
    response = httpx.Response(200, content=body, headers=headers)
    with pytest.raises(FetchRefused):
        fetch("http://93.184.216.34/a.png", Recorder(response), max_bytes=4000)


def test_error_status_from_the_image_host() -> None:
    with pytest.raises(GatewayError) as caught:
        fetch("http://93.184.216.34/a.png", Recorder(httpx.Response(403)))
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

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=tenant-a; Path=/"}, json={})

    async def two_requests() -> None:
        transport = httpx.MockTransport(upstream)
        async with httpx.AsyncClient(transport=transport, cookies=no_cookies()) as client:
            await client.get("https://upstream.example/v1/videos/a")  # tenant A's request
            await client.get("https://upstream.example/v1/videos/b")  # tenant B's request

    asyncio.run(two_requests())
    assert seen == [None, None]  # A's cookie never rides along with B's request

"""Image links that outlive the upstream's: hosted by the gateway for the retention."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx2
import openai
import pytest
from PIL import Image

from mediagate.stores.hosted import S3HostedImages

from .conftest import Gateway, Sim
from .processes import free_port


def fetch_image(url: str) -> Image.Image:
    response = httpx2.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert "max-age=" in response.headers["cache-control"]
    return Image.open(io.BytesIO(response.content))


def test_url_links_outlive_the_upstreams(client: openai.OpenAI, sim: Sim, gateway: Gateway) -> None:
    result = client.images.generate(
        model="sora_image", prompt="kept", size="1024x1536", response_format="url"
    )
    url = result.data[0].url
    assert url is not None and url.startswith(f"{gateway.url}/v1/files/images/")
    sim.state.forget_files()  # the upstream's own link is dead now
    assert fetch_image(url).size == (1024, 1536)


def test_b64_and_url_routes_are_both_rehosted(client: openai.OpenAI, sim: Sim) -> None:
    for model in ("gpt-image-2", "gpt-image-2-web", "gpt-image-2-vip"):
        result = client.images.generate(model=model, prompt=model, response_format="url")
        url = result.data[0].url
        assert url is not None and "/v1/files/images/" in url
        sim.state.forget_files()
        assert fetch_image(url).size[0] > 0


def test_links_expire_after_the_retention_and_are_swept(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = make_gateway(image_retention_s=1.0, image_sweep_interval_s=0.2)
    result = gateway.sdk().images.generate(
        model="gpt-image-2-web", prompt="short-lived", response_format="url"
    )
    url = result.data[0].url
    assert url is not None and httpx2.get(url).status_code == 200
    images = tmp_path / "data" / "images"
    assert len(list(images.iterdir())) == 1
    deadline = time.monotonic() + 10
    while list(images.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(images.iterdir()) == []
    expired = httpx2.get(url)
    assert expired.status_code == 404 and expired.json()["error"]["message"]


def test_an_expired_file_is_not_served_even_before_the_sweep(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = make_gateway(image_retention_s=3600, image_sweep_interval_s=3600)
    url = gateway.sdk().images.generate(prompt="old", response_format="url").data[0].url
    assert url is not None
    (path,) = (tmp_path / "data" / "images").iterdir()
    two_hours_ago = time.time() - 7200
    os.utime(path, (two_hours_ago, two_hours_ago))
    assert httpx2.get(url).status_code == 404


@pytest.mark.parametrize(
    ("headers", "base"),
    [
        (
            {"x-forwarded-proto": "https", "x-forwarded-host": "images.example.com"},
            "https://images.example.com",
        ),
        (
            {
                "x-forwarded-proto": "https",
                "x-forwarded-host": "gw.example.com:8443",
                "x-forwarded-prefix": "/mediagate",
            },
            "https://gw.example.com:8443/mediagate",
        ),
        ({"x-forwarded-host": "evil.example/<script>"}, None),  # not a host: ignored
    ],
)
def test_links_honour_forwarded_headers(
    gateway: Gateway, headers: dict[str, str], base: str | None
) -> None:
    client = gateway.sdk(default_headers=headers)
    url = client.images.generate(prompt="fwd", response_format="url").data[0].url
    assert url is not None
    assert url.startswith(f"{base or gateway.url}/v1/files/images/")


def test_configured_public_url_wins(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(public_url="https://cdn.example.org/gw/")
    client = gateway.sdk(default_headers={"x-forwarded-host": "other.example"})
    url = client.images.generate(prompt="pub", response_format="url").data[0].url
    assert url is not None and url.startswith("https://cdn.example.org/gw/v1/files/images/")


@pytest.mark.parametrize("name", ["../secret.png", "x.png", "a" * 43 + ".exe", "%2e%2e%2fetc"])
def test_only_names_the_store_made_are_served(gateway: Gateway, name: str) -> None:
    status = httpx2.get(f"{gateway.url}/v1/files/images/{name}").status_code
    # The client resolves "../secret.png" to /v1/files/secret.png: the Files API's path, which
    # wants a key (401). Either way nothing is served.
    assert status == (401 if name.startswith("../") else 404)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_store_shared_by_two_gateways(
    make_gateway: Callable[..., Gateway], sim: Sim, s3_endpoint: str
) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="images")
    settings = {"image_store_url": "s3://images/links", "s3_endpoint_url": s3_endpoint}
    first, second = make_gateway(**settings), make_gateway(**settings)
    result = first.sdk().images.generate(
        model="gpt-image-2-vip", prompt="shared", size="1280x720", response_format="url"
    )
    url = result.data[0].url
    assert url is not None
    sim.state.forget_files()
    # Any replica serves any replica's link.
    name = url.rsplit("/", 1)[1]
    assert fetch_image(f"{second.url}/v1/files/images/{name}").size == (1280, 720)
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="images")[
            "Contents"
        ]
    ]
    assert keys == [f"links/{name}"]


def test_s3_sweep_removes_only_expired_objects(s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="sweep")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32

    async def scenario() -> tuple[int, int, bool]:
        store = S3HostedImages("s3://sweep/p", retention_s=3600, endpoint_url=s3_endpoint)
        name = await store.put(png, "image/png")
        kept = await store.sweep()
        store.retention_s = 0  # everything is now past its retention
        gone = await store.get(name)
        removed = await store.sweep()
        return kept, removed, gone is None

    kept, removed, gone = asyncio.run(scenario())
    assert (kept, removed, gone) == (0, 1, True)
    assert "Contents" not in s3.list_objects_v2(Bucket="sweep")

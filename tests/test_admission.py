"""What a client can make the gateway hold before it has paid its way in: bodies cut short,
admission before the body is read, a global bound on the bodies in flight, a body-read deadline.
Driven over raw sockets, as a misbehaving client would."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import httpx2
import pytest

from .conftest import CLIENT_KEY, Gateway, Sim, wait_until
from .test_catalog import sample


def _address(gateway: Gateway) -> tuple[str, int]:
    host, port = gateway.url.removeprefix("http://").split(":")
    return host, int(port)


def _head(
    path: str,
    length: int,
    *,
    key: str = CLIENT_KEY,
    content_type: str = "application/json",
    extra: str = "",
) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _answer(sock: socket.socket, timeout_s: float = 10.0) -> tuple[int, bytes, bytes]:
    """The status, head and body of one answer with a Content-Length."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-answer"
        rest += chunk
    return int(head.split(b" ")[1]), head, rest


def _metrics(gateway: Gateway) -> str:
    with httpx2.Client(base_url=gateway.url) as http:
        return http.get("/metrics").text


def _requests(gateway: Gateway, endpoint: str, status: str) -> float:
    value = sample(_metrics(gateway), "mediagate_requests_total", endpoint=endpoint, status=status)
    return value or 0.0


# --- A client hanging up mid-body ---------------------------------------------------------


MULTIPART = "multipart/form-data; boundary=b0undary"


@pytest.mark.parametrize(
    ("path", "endpoint", "content_type", "part"),
    [
        ("/v1/images/generations", "images.generations", "application/json", b'{"prompt": "'),
        ("/v1/videos", "videos.create", "application/json", b'{"prompt": "'),
        (
            "/v1/images/edits",
            "images.edits",
            MULTIPART,
            b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG",
        ),
        (
            "/v1/videos",
            "videos.create",
            MULTIPART,
            b'--b0undary\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na her',
        ),
    ],
)
def test_a_client_hanging_up_mid_body_is_a_499_logged_at_info(
    make_gateway: Callable[..., Gateway],
    sim: Sim,
    caplog: pytest.LogCaptureFixture,
    path: str,
    endpoint: str,
    content_type: str,
    part: bytes,
) -> None:
    caplog.set_level(logging.INFO, logger="mediagate")
    gateway = make_gateway()
    with socket.create_connection(_address(gateway), timeout=10) as sock:
        sock.sendall(_head(path, 100_000, content_type=content_type) + part)
        time.sleep(0.2)  # the gateway is reading the body
    wait_until(lambda: _requests(gateway, endpoint, "499") == 1.0)
    assert _requests(gateway, endpoint, "500") == 0.0
    messages = [r.getMessage() for r in caplog.records]
    assert "unhandled error" not in messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sim.sent() == []

"""What a client can make the gateway hold before it has paid its way in: bodies cut short,
admission before the body is read, a global bound on the bodies in flight, a body-read deadline.
Driven over raw sockets, as a misbehaving client would."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import CLIENT_KEY, Gateway, Sim, wait_until
from .test_catalog import sample
from .test_keys import entry, keys_file


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


# --- Admission before the body --------------------------------------------------------------

KEY = "sk-admission-0123456789abcdef"
GENERATIONS = "/v1/images/generations"


@pytest.fixture
def keyed(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Callable[..., Gateway]:
    """A gateway whose key KEY has the given policy (and these settings)."""

    def make(settings: dict[str, Any] | None = None, **policy: Any) -> Gateway:
        path = keys_file(tmp_path / "keys.yaml", [entry("solo", KEY, **policy)])
        return make_gateway(keys_file=path, **(settings or {}))

    return make


def _refused_before_the_body(
    gateway: Gateway, path: str, status: int, code: str, length: int = 8 * 1024 * 1024
) -> bytes:
    """Headers announcing a large body, and not a byte of it: the answer must come anyway,
    so the gateway decided without reading (or holding) the body."""
    with socket.create_connection(_address(gateway), timeout=10) as sock:
        sock.sendall(_head(path, length, key=KEY))
        got, head, body = _answer(sock, timeout_s=5)
    assert got == status, body
    assert json.loads(body)["error"]["code"] == code
    return head


def test_a_key_at_its_concurrency_limit_is_refused_before_its_body_is_read(
    keyed: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = keyed(concurrent_requests=1)
    running = threading.Thread(
        target=lambda: gateway.sdk(api_key=KEY).images.generate(
            model="gpt-image-2-web", prompt="slow [sim:sleep=1.5]"
        )
    )
    running.start()
    try:
        wait_until(lambda: len(sim.sent()) == 1)  # the first request holds the key's slot
        for path in (GENERATIONS, "/v1/videos"):
            head = _refused_before_the_body(gateway, path, 429, "concurrency_limit_exceeded")
            assert b"retry-after: 1" in head.lower()
    finally:
        running.join()
    assert len(sim.sent()) == 1
    # The slot came back: the next request is served.
    assert gateway.sdk(api_key=KEY).images.generate(model="gpt-image-2-web", prompt="b").data


def test_a_key_with_its_budget_spent_is_refused_before_its_body_is_read(
    keyed: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = keyed(budget_usd_per_day=0.02)
    # $0.03 asked of $0.02: refused by the reservation, once the body says what it costs.
    with pytest.raises(openai.RateLimitError):
        gateway.sdk(api_key=KEY).images.generate(model="gpt-image-2-web", prompt="b")
    assert sim.sent() == []
    gateway = keyed(budget_usd_per_day=0.0)  # nothing left: refused before the body
    for path in (GENERATIONS, "/v1/images/edits", "/v1/videos"):
        _refused_before_the_body(gateway, path, 429, "insufficient_quota")
    assert sim.sent() == []


def test_a_key_over_its_request_rate_is_refused_before_its_body_is_read(
    keyed: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = keyed(requests_per_minute=1)
    assert gateway.sdk(api_key=KEY).images.generate(model="gpt-image-2-web", prompt="b").data
    head = _refused_before_the_body(gateway, GENERATIONS, 429, "rate_limit_exceeded")
    assert b"retry-after:" in head.lower()
    assert len(sim.sent()) == 1


def test_the_bodies_in_flight_are_bounded_for_all_clients(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(max_inflight_body_bytes=100_000)
    with socket.create_connection(_address(gateway), timeout=10) as first:
        # One client announces 78 kB (a prompt of escaped characters) and sends half: the
        # gateway holds its share.
        prompt = "\u00e9" * 13_000
        body = json.dumps({"model": "gpt-image-2-web", "prompt": prompt}).encode()
        assert 70_000 < len(body) < 100_000
        first.sendall(_head(GENERATIONS, len(body), key=CLIENT_KEY) + body[:40_000])
        wait_until(lambda: _in_flight_requests(gateway) >= 1)
        time.sleep(0.1)
        # Another's 30 kB would pass the bound: a 503 with Retry-After, before its body.
        with socket.create_connection(_address(gateway), timeout=10) as second:
            second.sendall(_head(GENERATIONS, 30_000, key=CLIENT_KEY))
            status, head, answer = _answer(second, timeout_s=5)
        assert status == 503, answer
        assert json.loads(answer)["error"]["code"] == "server_overloaded"
        assert b"retry-after: 1" in head.lower()
        first.sendall(body[40_000:])  # the first completes and is served
        status, _, answer = _answer(first)
        assert status == 200, answer
    assert len(sim.sent()) == 1
    # What it held was given back: a body of the same size fits again.
    assert gateway.generate(prompt).status_code == 200


def _in_flight_requests(gateway: Gateway) -> float:
    text = _metrics(gateway)
    return sum(
        float(item.value)
        for family in text_string_to_metric_families(text)
        for item in family.samples
        if item.name == "mediagate_requests_in_flight" and item.labels.get("endpoint") == "images"
    )


def test_a_generations_json_is_capped_near_what_a_valid_one_needs(
    gateway: Gateway, sim: Sim
) -> None:
    # Far under MEDIAGATE_MAX_JSON_BYTES (32 MiB), yet more than any valid generation.
    response = gateway.generate("p" * (1024 * 1024))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    # A 32,000-character prompt of escaped characters still fits.
    assert gateway.generate("\U0001f600" * 16_000, model="nope").status_code == 404
    assert sim.sent() == []


# --- A body-read deadline -------------------------------------------------------------------


def test_a_body_trickled_byte_by_byte_is_cut(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(body_timeout_s=1.0, body_min_bytes_per_s=1000)
    body = json.dumps({"model": "gpt-image-2-web", "prompt": "trickled"}).encode()
    started = time.monotonic()
    with socket.create_connection(_address(gateway), timeout=10) as sock:
        sock.sendall(_head(GENERATIONS, len(body)))
        answer = b""
        for byte in body:  # one byte every 0.5 s: 2 B/s, far under the 1000 B/s it must keep
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.5)
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if answer:
                break
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer and b"connection: close" in answer.lower()
    assert elapsed < 3.0
    assert sim.sent() == []
    # A body at a fair pace is served.
    assert gateway.generate("fine").status_code == 200

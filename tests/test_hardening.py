"""Smaller exposures (issue 14, item 12): strict integers, no Host-built redirects, a bound on
the time a client may take to send its headers."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx2
import pytest

from .conftest import CLIENT_KEY, Gateway, Sim, assert_error
from .test_edits import PNG_SMALL


@pytest.mark.parametrize("value", [True, "2", 2.0, "\uff12", "\u0662"])
def test_integers_are_strict_in_json(gateway: Gateway, sim: Sim, value: Any) -> None:
    response = gateway.generate("p", n=value)
    assert_error(response, 400, "n", "invalid_value")
    assert sim.sent() == []


@pytest.mark.parametrize("value", ["\uff12", "\u0662", "2.0", "+2", "true"])
def test_an_edits_integers_are_ascii_digits(gateway: Gateway, sim: Sim, value: str) -> None:
    with gateway.http() as http:
        response = http.post(
            "/v1/images/edits",
            data={"model": "gpt-image-2-web", "prompt": "e", "n": value},
            files=[("image", ("a.png", PNG_SMALL, "image/png"))],
        )
    assert_error(response, 400, "n", "invalid_value")
    assert sim.sent() == []


def test_a_trailing_slash_is_not_redirected_to_the_clients_host(gateway: Gateway) -> None:
    with httpx2.Client(base_url=gateway.url) as http:
        response = http.post(
            "/v1/images/generations/",
            json={"prompt": "p"},
            headers={"Host": "evil.example", "Authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"]["code"] == "unsupported_endpoint"


def test_a_client_slow_to_send_its_headers_is_cut_off(make_gateway: Any) -> None:
    gateway = make_gateway(header_timeout_s=0.5)
    host, port = gateway.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(20):  # a header byte every 0.2 s: each would reset an idle timer
            time.sleep(0.2)
            try:
                sock.sendall(b"X")
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                continue
            except OSError:
                closed = True
                break
    assert closed and time.monotonic() - started < 2.5
    # A prompt client on a fresh connection is served as usual.
    with httpx2.Client(base_url=gateway.url) as http:
        assert http.get("/healthz").status_code == 200


def test_metrics_need_the_metrics_token_when_one_is_set(make_gateway: Any) -> None:
    gateway = make_gateway(metrics_token="m-token-0123456789")
    with httpx2.Client(base_url=gateway.url) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "m-token"}):
            response = http.get("/metrics", headers=headers)
            assert_error(response, 401, None, "invalid_api_key")
            assert "team-a" not in response.text
        # Not a client key either: a tenant may not read the others' spend.
        assert (
            http.get("/metrics", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).status_code
            == 401
        )
        allowed = http.get("/metrics", headers={"Authorization": "Bearer m-token-0123456789"})
        assert allowed.status_code == 200 and "mediagate_" in allowed.text
        assert http.get("/healthz").status_code == 200  # the probes stay open


def test_the_header_deadline_starts_again_after_each_answer_and_never_cuts_an_answer(
    make_gateway: Any,
) -> None:
    # One timer per connection (mediagate.servethread): it must not cut a request slower than
    # the deadline, and must still cut slow headers on a connection that served requests.
    gateway = make_gateway(header_timeout_s=0.5)
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "gpt-image-2-web", "prompt": "slow [sim:slowstart=1.2]"})
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(2):  # a slow answer, then another on the same connection
            sock.sendall(request)
            head = _read_answer(sock)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # then headers that stall
        started = time.monotonic()
        sock.settimeout(3)
        assert sock.recv(1) == b""  # closed by the gateway, not answered
        assert time.monotonic() - started < 1.5


def _read_answer(sock: socket.socket) -> bytes:
    """One HTTP/1.1 answer with a Content-Length, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head

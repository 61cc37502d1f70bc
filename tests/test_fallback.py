"""Fallbacks along a model's routes, and circuit breakers per route.

gpt-image-2 is served by the official route, then the enterprise one, then the web one. A
route is left only when it failed in a way that cost nothing; what was left is in the headers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from .conftest import GROUP_KEYS, Gateway, Sim
from .resilience import catalog, metric
from .test_edits import PNG_SMALL

OFFICIAL, ENTERPRISE = GROUP_KEYS["OpenAI Official"], GROUP_KEYS["OpenAI Official Enterprise"]


def groups(sim: Sim) -> list[tuple[str | None, int]]:
    return [(c.group, c.status) for c in sim.sent("/v1/images/generations")]


@pytest.fixture
def fast(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    return make_gateway(config=catalog(tmp_path))


def test_a_failing_route_hands_over_to_the_next(fast: Gateway, sim: Sim) -> None:
    sim.state.faults.set(by_key={OFFICIAL: "503"})
    response = fast.generate("a harbour", model="gpt-image-2", size="1024x1536", quality="low")
    assert response.status_code == 200
    assert response.json()["data"][0]["b64_json"]
    assert response.headers["x-mediagate-route"] == "gpt-image-2.enterprise"
    assert response.headers["x-mediagate-fallback"] == "gpt-image-2.official=upstream_error"
    assert response.headers["x-should-retry"] == "false"
    assert "x-mediagate-dropped" not in response.headers
    assert groups(sim) == [("OpenAI Official", 503)] * 3 + [("OpenAI Official Enterprise", 200)]
    # The request is counted (and billed) on the route that served it.
    served = {"endpoint": "images.generations", "route": "gpt-image-2.enterprise"}
    assert metric(fast.url, "mediagate_requests_total", **served) == 1
    left = {"model": "gpt-image-2", "route": "gpt-image-2.official", "reason": "upstream_error"}
    assert metric(fast.url, "mediagate_fallbacks_total", **left) == 1


def test_the_last_route_may_drop_parameters_and_says_so(fast: Gateway, sim: Sim) -> None:
    sim.state.faults.set(by_key={OFFICIAL: "502", ENTERPRISE: "429"}, retry_after_s=0.01)
    response = fast.generate("a harbour", model="gpt-image-2", size="1024x1536", quality="low")
    assert response.status_code == 200
    assert response.headers["x-mediagate-route"] == "gpt-image-2.web"
    assert response.headers["x-mediagate-dropped"] == "quality,size"
    assert response.headers["x-mediagate-fallback"] == (
        "gpt-image-2.official=upstream_error,gpt-image-2.enterprise=rate_limit_exceeded"
    )
    (web,) = [c for c in sim.sent() if c.group == "default"]
    assert "size" not in web.body and "quality" not in web.body


def test_when_every_route_fails_the_client_hears_the_last_failure(fast: Gateway, sim: Sim) -> None:
    response = fast.generate("[sim:status=503] a harbour", model="gpt-image-2")
    assert response.status_code == 502
    assert response.headers["x-mediagate-fallback"] == (
        "gpt-image-2.official=upstream_error,gpt-image-2.enterprise=upstream_error"
    )
    assert len(sim.sent()) == 9  # three attempts on each route


@pytest.mark.parametrize("where", ["setting", "model"])
def test_an_operator_can_forbid_fallbacks_that_drop_parameters(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path, where: str
) -> None:
    if where == "setting":
        gateway = make_gateway(config=catalog(tmp_path), fallback_may_drop=False)
    else:
        config = catalog(tmp_path, **{"gpt-image-2": {"fallback_may_drop": False}})
        gateway = make_gateway(config=config)
    sim.state.faults.set(by_key={OFFICIAL: "503", ENTERPRISE: "503"})
    refused = gateway.generate("a harbour", model="gpt-image-2", size="1024x1536")
    assert refused.status_code == 502
    assert refused.headers["x-mediagate-fallback"].endswith("gpt-image-2.web=would_drop")
    assert not [c for c in sim.sent() if c.group == "default"]
    # Nothing the client sent would be lost: the web route may serve.
    allowed = gateway.generate("a harbour", model="gpt-image-2")
    assert allowed.status_code == 200
    assert allowed.headers["x-mediagate-route"] == "gpt-image-2.web"


def test_no_fallback_after_a_timeout(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    override = catalog(tmp_path, {"gpt-image-2.official": {"timeouts": {"total": 0.3}}})
    gateway = make_gateway(config=override)
    sim.state.faults.set(by_key={OFFICIAL: "timeout"}, timeout_s=1)
    response = gateway.generate("a harbour", model="gpt-image-2")
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"
    assert "x-mediagate-fallback" not in response.headers
    assert {s.key for s in sim.state.faults.seen} == {OFFICIAL}  # the upstream may be at work


def test_no_fallback_after_a_connection_lost_mid_call(fast: Gateway, sim: Sim) -> None:
    sim.state.faults.set(by_key={OFFICIAL: "resetbody"})
    response = fast.generate("a harbour", model="gpt-image-2")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_connection_lost"
    assert {s.key for s in sim.state.faults.seen} == {OFFICIAL}


def test_no_fallback_for_a_request_the_first_route_refuses(fast: Gateway, sim: Sim) -> None:
    response = fast.generate("a harbour", model="gpt-image-2", size="1000x1000")
    assert response.status_code == 400
    assert sim.sent() == []


def test_an_edit_falls_back_too(fast: Gateway, sim: Sim) -> None:
    sim.state.faults.set(by_key={OFFICIAL: "503"})
    response = fast.sdk().images.with_raw_response.edit(
        model="gpt-image-2", image=("in.png", PNG_SMALL, "image/png"), prompt="brighter"
    )
    assert response.headers["x-mediagate-route"] == "gpt-image-2.enterprise"
    assert response.parse().data
    (served,) = [c for c in sim.sent("/v1/images/edits") if c.status == 200]
    assert served.group == "OpenAI Official Enterprise"


def test_a_relayed_stream_falls_back_to_a_route_that_relays(fast: Gateway, sim: Sim) -> None:
    sim.state.faults.set(by_key={OFFICIAL: "503"})
    client = fast.sdk()
    with client.images.with_streaming_response.generate(
        model="gpt-image-2", prompt="a harbour", stream=True, partial_images=1
    ) as response:
        assert response.headers["x-mediagate-route"] == "gpt-image-2.enterprise"
        assert response.headers["x-mediagate-fallback"] == "gpt-image-2.official=upstream_error"
        text = response.read().decode()
    assert "image_generation.partial_image" in text and "image_generation.completed" in text
    # Both relaying routes failing: the web route cannot take over a relayed stream.
    sim.state.faults.set(by_key={OFFICIAL: "503", ENTERPRISE: "503"})
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="gpt-image-2", prompt="a harbour", stream=True)
    assert caught.value.response.headers["x-mediagate-fallback"].endswith(
        "gpt-image-2.web=stream_mode"
    )


def test_a_failing_route_is_skipped_until_its_breaker_probes_it(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    breaker = {"breaker": {"failures": 2, "cooldown_s": 0.5}}
    gateway = make_gateway(config=catalog(tmp_path, {"gpt-image-2.official": breaker}))
    state = {"route": "gpt-image-2.official"}
    assert metric(gateway.url, "mediagate_circuit_state", **state) == 0
    sim.state.faults.set(by_key={OFFICIAL: "503"})
    for _ in range(2):
        assert gateway.generate("p", model="gpt-image-2").headers["x-mediagate-route"] == (
            "gpt-image-2.enterprise"
        )
    assert metric(gateway.url, "mediagate_circuit_state", **state) == 2  # open
    official_calls = len([c for c in sim.sent() if c.group == "OpenAI Official"])
    skipped = gateway.generate("p", model="gpt-image-2")
    assert skipped.headers["x-mediagate-fallback"] == "gpt-image-2.official=route_unavailable"
    assert len([c for c in sim.sent() if c.group == "OpenAI Official"]) == official_calls
    # After the cool-down one request probes the route; it works again, the breaker closes.
    sim.state.faults.clear()
    time.sleep(0.6)
    probe = gateway.generate("p", model="gpt-image-2")
    assert probe.headers["x-mediagate-route"] == "gpt-image-2.official"
    assert "x-mediagate-fallback" not in probe.headers
    assert metric(gateway.url, "mediagate_circuit_state", **state) == 0


def test_an_open_breaker_without_fallback_is_a_503_with_retry_after(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    breaker = {"breaker": {"failures": 1, "cooldown_s": 30}}
    gateway = make_gateway(config=catalog(tmp_path, {"gpt-image-2.web": breaker}))
    with gateway.http() as http:
        body = {"model": "gpt-image-2-web", "prompt": "[sim:status=500] p"}
        assert http.post("/v1/images/generations", json=body).status_code == 502
        calls = len(sim.sent())
        response = http.post("/v1/images/generations", json={**body, "prompt": "p"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "route_unavailable"
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert len(sim.sent()) == calls  # nothing was sent

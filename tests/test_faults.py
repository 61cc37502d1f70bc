"""The fault suite: the simulator's faults (per request and by rate), what the gateway makes of
each, and a client that disconnects cancelling its upstream call."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mediagate.simulator.faults import KINDS

from .conftest import GROUP_KEYS, Gateway, Sim
from .resilience import catalog, metric
from .test_edits import PNG_SMALL

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Sora warning
SIM_BODY = {"model": "gpt-image-2", "prompt": "a kite"}  # in the default group: the web route
WEB = {"model": "gpt-image-2-web", "prompt": "a kite"}  # the same, through the gateway


def upstream(sim: Sim, prompt: str = "a kite", **options: Any) -> httpx2.Response:
    """One request straight to the simulator, as the gateway would send it."""
    headers = {"Authorization": f"Bearer {GROUP_KEYS['default']}"}
    return httpx2.post(
        f"{sim.url}/v1/images/generations",
        json={**SIM_BODY, "prompt": prompt},
        headers=headers,
        timeout=options.get("timeout", 30),
    )


def test_a_429_burst_then_normal_answers(sim: Sim) -> None:
    prompt = "[sim:burst429=2:x] [sim:retryafter=2.5] a kite"
    first, second, third = (upstream(sim, prompt) for _ in range(3))
    assert first.status_code == second.status_code == 429
    assert first.headers["retry-after"] == "3" and first.headers["retry-after-ms"] == "2500"
    assert first.json()["error"]["message"]
    assert third.status_code == 200
    # Another label is another burst.
    assert upstream(sim, "[sim:burst503=1:y] a kite").status_code == 503
    assert [c.status for c in sim.sent()] == [429, 429, 200, 503]


def test_a_reset_answers_nothing_and_is_recorded(sim: Sim) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        upstream(sim, "[sim:reset] a kite")
    (call,) = sim.sent()
    assert call.status == 0 and call.group == "default" and call.model == "gpt-image-2"


def test_a_reset_mid_body(sim: Sim) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        upstream(sim, "[sim:resetbody] a kite")
    assert [c.status for c in sim.sent()] == [200]


def test_slow_start_and_slow_body(sim: Sim) -> None:
    started = time.monotonic()
    assert upstream(sim, "[sim:slowstart=0.4] a kite").status_code == 200
    assert time.monotonic() - started >= 0.4
    headers = {"Authorization": f"Bearer {GROUP_KEYS['default']}"}
    body = {**SIM_BODY, "prompt": "[sim:slowbody=0.5] a kite"}
    with httpx2.stream(
        "POST", f"{sim.url}/v1/images/generations", json=body, headers=headers
    ) as response:
        first_byte = time.monotonic()
        data = response.read()
        done = time.monotonic()
    assert done - first_byte >= 0.4  # the body trickled in
    assert json.loads(data)["data"]


def test_answers_that_are_not_json(sim: Sim) -> None:
    html = upstream(sim, "[sim:nonjson] a kite")
    assert html.status_code == 200 and html.headers["content-type"] == "text/html"
    truncated = upstream(sim, "[sim:truncated] a kite")
    assert truncated.status_code == 200
    with pytest.raises(ValueError):
        truncated.json()
    headers = {"Authorization": f"Bearer {GROUP_KEYS['default']}"}
    body = {**SIM_BODY, "prompt": "[sim:huge=3] a kite"}
    with httpx2.stream(
        "POST", f"{sim.url}/v1/images/generations", json=body, headers=headers
    ) as huge:
        assert int(huge.headers["content-length"]) == 3 * 1024 * 1024
        assert len(huge.read()) == 3 * 1024 * 1024


def test_faults_by_rate_are_reproducible_and_counted(sim: Sim) -> None:
    sim.state.faults.set(rate=0.5, kinds=["500", "503"], seed=42)
    first = [upstream(sim).status_code for _ in range(40)]
    sim.state.faults.set(rate=0.5, kinds=["500", "503"], seed=42)
    second = [upstream(sim).status_code for _ in range(40)]
    assert first == second
    failed = [s for s in first if s != 200]
    assert 10 <= len(failed) <= 30 and set(failed) == {500, 503}
    assert sim.state.faults.injected["500"] + sim.state.faults.injected["503"] == 2 * len(failed)
    # Faults are upstream calls like any other.
    assert len(sim.sent()) == 80


def test_faults_by_key_and_one_shot_faults(sim: Sim) -> None:
    sim.state.faults.set(by_key={GROUP_KEYS["default"]: "502"})
    assert upstream(sim).status_code == 502
    sim.state.faults.clear()
    sim.state.faults.inject("503", count=2, path="/v1/images/")
    assert [upstream(sim).status_code for _ in range(3)] == [503, 503, 200]
    with pytest.raises(ValueError):
        sim.state.faults.inject("meteor")


# What the gateway makes of each fault.


@pytest.mark.parametrize(
    ("directive", "status", "code", "paid"),
    [
        ("[sim:burst500=9]", 502, "upstream_error", False),
        ("[sim:burst502=9]", 502, "upstream_error", False),
        ("[sim:burst503=9]", 502, "upstream_error", False),
        ("[sim:burst429=9] [sim:retryafter=0.01]", 429, "rate_limit_exceeded", False),
        ("[sim:reset]", 502, "upstream_connection_lost", True),
        ("[sim:resetbody]", 502, "upstream_connection_lost", True),
        ("[sim:slowstart=0.8]", 504, "upstream_timeout", True),
        ("[sim:slowbody=0.8]", 504, "upstream_timeout", True),
        ("[sim:nonjson]", 502, "bad_upstream_response", True),
        ("[sim:truncated]", 502, "bad_upstream_response", True),
        ("[sim:huge=2]", 502, "upstream_response_too_large", True),
        ("[sim:slowstart=0.2]", 200, None, False),
        ("[sim:slowbody=0.2]", 200, None, False),
    ],
)
def test_every_fault_ends_in_success_or_a_correct_openai_error(
    make_gateway: Callable[..., Gateway],
    sim: Sim,
    tmp_path: Path,
    directive: str,
    status: int,
    code: str | None,
    paid: bool,
) -> None:
    override = catalog(tmp_path, {"gpt-image-2.web": {"timeouts": {"total": 0.5}}})
    gateway = make_gateway(config=override, upstream_max_bytes=1024 * 1024)
    with gateway.http() as http:
        response = http.post("/v1/images/generations", json={**WEB, "prompt": f"{directive} x"})
    assert response.status_code == status, response.text[:300]
    if code is None:
        assert response.json()["data"]
        return
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert GROUP_KEYS["default"] not in response.text
    if paid:
        # The upstream may have done (and charged for) the work: no retry, by anyone.
        assert response.headers["x-should-retry"] == "false"
        assert "x-mediagate-retries" not in response.headers
        assert len(sim.state.faults.seen) == 1


def test_the_gateway_stays_healthy_under_faults_by_rate(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    gateway = make_gateway(config=catalog(tmp_path))
    sim.state.faults.set(rate=0.5, kinds=["429", "503", "reset"], seed=3, retry_after_s=0.01)
    codes = set()
    with gateway.http() as http:
        for index in range(20):
            response = http.post("/v1/images/generations", json={**WEB, "prompt": f"k{index}"})
            codes.add(response.status_code)
            assert response.status_code in (200, 429, 502)
        assert http.get("/healthz").json() == {"status": "ok"}
    assert 200 in codes


# A client that goes away.


def _leave_early(gateway: Gateway, path: str, **kwargs: Any) -> None:
    with gateway.http() as http, pytest.raises(httpx2.ReadTimeout):
        http.post(path, timeout=0.3, **kwargs)


def test_a_client_that_disconnects_cancels_its_upstream_call(gateway: Gateway, sim: Sim) -> None:
    started = time.monotonic()
    _leave_early(gateway, "/v1/images/generations", json={**WEB, "prompt": "[sim:sleep=3] x"})
    deadline = started + 2
    while not any(s.dropped for s in sim.state.faults.seen) and time.monotonic() < deadline:
        time.sleep(0.02)
    (seen,) = sim.state.faults.seen
    # The gateway hung up on the upstream long before its three seconds were up.
    assert seen.dropped and seen.status == 0
    assert time.monotonic() - started < 2
    assert metric(gateway.url, "mediagate_requests_total", status="499") == 1


def test_an_edit_whose_client_disconnects_is_cancelled_too(gateway: Gateway, sim: Sim) -> None:
    files = {"image": ("in.png", PNG_SMALL, "image/png")}
    data = {"model": "gpt-image-2-web", "prompt": "[sim:sleep=3] x"}
    _leave_early(gateway, "/v1/images/edits", files=files, data=data)
    time.sleep(0.5)
    (seen,) = sim.state.faults.seen
    assert seen.dropped and seen.path == "/v1/images/edits"


def test_a_video_create_whose_client_left_is_still_recorded(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    # The job is made (and charged) upstream either way; dropping it would lose a paid video.
    gateway = make_gateway()
    _leave_early(gateway, "/v1/videos", json={"prompt": "[sim:slowstart=0.6] a calm sea"})
    time.sleep(0.8)
    assert len(gateway.sdk().videos.list().data) == 1


def test_every_fault_kind_is_known() -> None:
    assert set(KINDS) >= {"429", "500", "502", "503", "reset", "resetbody", "slowstart"}
    assert set(KINDS) >= {"slowbody", "timeout", "nonjson", "truncated", "huge"}

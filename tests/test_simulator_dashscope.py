"""The simulated Wan route (DashScope tasks, upstream-2026/wan-2-7.md) is as strict as the docs
describe it: the async header, integer durations, per-model media, and a signed `result_url`
that must be fetched without the upstream key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from mediagate.servethread import BackgroundServer
from mediagate.simulator import DEFAULT_SIM_KEYS, SimConfig, SimState, create_simulator_app
from mediagate.simulator.dashscope import WAN_PATH, WanTask

from .conftest import GROUP_KEYS, Sim, wait_for_status

ASYNC = {"X-DashScope-Async": "enable"}


def key(group: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {GROUP_KEYS[group]}"}


@pytest.fixture
def wan(sim: Sim) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=sim.url, headers=key("Wan"), timeout=10) as client:
        yield client


def body(model: str = "wan2.7-t2v", prompt: str = "a kite", **parameters: Any) -> dict[str, Any]:
    return {"model": model, "input": {"prompt": prompt}, "parameters": parameters}


def submit(client: httpx2.Client, payload: dict[str, Any]) -> str:
    response = client.post(WAN_PATH, json=payload, headers=ASYNC)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["output"] == {"task_id": answer["task_id"], "task_status": "PENDING"}
    task_id: str = answer["task_id"]
    return task_id


def wait_for(client: httpx2.Client, task_id: str, status: str) -> dict[str, Any]:
    return wait_for_status(client, f"/v1/tasks/{task_id}", status)


def test_a_task_completes_with_a_signed_result_url_fetched_without_the_key(
    wan: httpx2.Client, sim: Sim
) -> None:
    task_id = submit(wan, body(resolution="720P", duration=5))
    done = wait_for(wan, task_id, "completed")
    assert done["usage"]["output_video_duration"] == 5 and done["usage"]["duration"] == 5
    assert done["usage"]["SR"] == 720 and done["data"]["output"]["task_status"] == "SUCCEEDED"
    assert done["error"] is None
    video = httpx2.get(done["result_url"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    part = httpx2.get(done["result_url"], headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == video.content[-10:]
    task = sim.state.videos[task_id]
    assert isinstance(task, WanTask) and task.cost_usd() == pytest.approx(5 * 0.1028)
    call = sim.sent(WAN_PATH)[0]
    assert call.group == "Wan" and call.model == "wan2.7-t2v"
    assert call.headers["x-dashscope-async"] == "enable"
    assert call.headers["authorization"] == "Bearer <Wan>"
    assert call.body == body(resolution="720P", duration=5)


def test_statuses_advance_and_the_seconds_made_are_reported(wan: httpx2.Client) -> None:
    task_id = submit(wan, body(prompt="[sim:render=0.4] [sim:made=4] x", duration=5))
    assert wan.get(f"/v1/tasks/{task_id}").json()["status"] == "submitted"
    running = wait_for(wan, task_id, "in_progress")
    assert running["result_url"] is None and running["usage"] is None
    done = wait_for(wan, task_id, "completed")
    assert (done["duration"], done["usage"]["video_duration"]) == (5, 4)
    assert done["resolution"] == "1080P"  # omitted: 1080P (and billed so)


def test_wan_3_settles_on_the_seconds_made(wan: httpx2.Client, sim: Sim) -> None:
    task_id = submit(wan, body("wan3.0-video", "[sim:made=9] x", duration=10))
    assert wait_for(wan, task_id, "completed")["usage"]["duration"] == 9
    task = sim.state.videos[task_id]
    assert isinstance(task, WanTask) and task.cost_usd() == pytest.approx(9 * 0.2057)


def test_a_failed_task_says_why(wan: httpx2.Client) -> None:
    failed = wait_for(wan, submit(wan, body(prompt="[sim:fail=DataInspectionFailed] x")), "failed")
    assert failed["error"]["code"] == "DataInspectionFailed" and failed["error"]["message"]
    assert failed["result_url"] is None and failed["data"]["output"]["task_status"] == "FAILED"


def test_without_the_async_header_it_is_refused(wan: httpx2.Client, sim: Sim) -> None:
    for headers in ({}, {"X-DashScope-Async": "disable"}):
        response = wan.post(WAN_PATH, json=body(), headers=headers)
        assert response.status_code == 403
        assert response.json()["code"] == "AccessDenied"
        assert "synchronous" in response.json()["message"]
    assert not sim.state.videos


def test_a_signed_link_refuses_a_key_a_bad_signature_and_a_missing_one(wan: httpx2.Client) -> None:
    done = wait_for(wan, submit(wan, body()), "completed")
    link = done["result_url"]
    with_key = httpx2.get(link, headers=key("Wan"))
    assert with_key.status_code == 400
    assert with_key.headers["content-type"].startswith("application/xml")
    assert "<Code>InvalidArgument</Code>" in with_key.text
    tampered = httpx2.get(link.replace("Signature=", "Signature=f"))
    assert tampered.status_code == 403 and "SignatureDoesNotMatch" in tampered.text
    assert httpx2.get(link.split("?")[0]).status_code == 403
    # The link's own path with another task's id (a signature for the wrong object).
    other = link.replace(done["task_id"], "0" * 32)
    assert httpx2.get(other).status_code == 403


def test_an_expired_link_is_refused() -> None:
    config = SimConfig(keys=dict(DEFAULT_SIM_KEYS), video_render_s=0.01, signed_link_ttl_s=-1)
    with BackgroundServer(create_simulator_app(config, SimState())) as server:
        with httpx2.Client(base_url=server.url, headers=key("Wan"), timeout=10) as client:
            done = wait_for(client, submit(client, body()), "completed")
        expired = httpx2.get(done["result_url"])
        assert expired.status_code == 403 and "Request has expired" in expired.text


@pytest.mark.parametrize("group", ["default", "SeeDance2", "OpenAI Official"])
def test_other_groups_have_no_channel(sim: Sim, group: str) -> None:
    response = httpx2.post(f"{sim.url}{WAN_PATH}", json=body(), headers={**key(group), **ASYNC})
    assert response.status_code == 503
    assert "No available channel" in response.json()["error"]["message"]
    assert not sim.state.videos


def test_tasks_belong_to_their_group(wan: httpx2.Client, sim: Sim) -> None:
    task_id = submit(wan, body())
    assert httpx2.get(f"{sim.url}/v1/tasks/{task_id}", headers=key("default")).status_code == 503
    assert wan.get("/v1/tasks/unknown").status_code == 404
    assert httpx2.get(f"{sim.url}/v1/tasks/{task_id}").status_code == 401


def media(kind: str, url: str = "https://example.com/a") -> dict[str, str]:
    return {"type": kind, "url": url}


@pytest.mark.parametrize(
    "payload",
    [
        body(duration="5"),
        body(duration=5.0),
        body(duration=1),
        body(duration=16),
        body(model="wan3.0-video", duration=31),
        body(resolution="720p"),
        body(resolution="480P"),  # Wan 2.7 has no 480P
        body(resolution="4K"),
        body(size="1280*720"),
        body(seed=-1),
        body(watermark="false"),
        body(model="wan2.6-t2v"),
        body(model="wan2.7-i2v"),  # needs a first frame (or clip)
        {"model": "wan2.7-t2v", "input": {"prompt": "x", "media": [media("first_frame")]}},
        {"model": "wan2.7-i2v", "input": {"prompt": "x", "media": [media("last_frame")]}},
        {"model": "wan2.7-i2v", "input": {"prompt": "x", "media": [{"type": "first_frame"}]}},
        {"model": "wan2.7-i2v", "input": {"prompt": "x", "media": [media("first_frame", "a.png")]}},
        {"model": "wan2.7-r2v", "input": {"prompt": "x", "media": [media("first_frame")]}},
        {
            "model": "wan2.7-r2v",
            "input": {"prompt": "x", "media": [media("reference_video")]},
            "parameters": {"duration": 12},  # 10 s at most with a reference video
        },
        {"model": "wan2.7-t2v", "input": {"prompt": "x", "img_url": "https://a"}},
        {"model": "wan2.7-t2v", "input": {"prompt": "x"}, "extra": 1},
        {"model": "wan2.7-t2v", "prompt": "x"},
        {"model": "wan2.7-t2v", "input": {"prompt": ""}},
    ],
)
def test_create_is_strict(wan: httpx2.Client, sim: Sim, payload: dict[str, Any]) -> None:
    response = wan.post(WAN_PATH, json=payload, headers=ASYNC)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert set(answer) == {"request_id", "code", "message"} and answer["code"] == "InvalidParameter"
    assert not sim.state.videos


@pytest.mark.parametrize(
    ("payload", "billed"),
    [
        (
            {
                "model": "wan2.7-i2v",
                "input": {"prompt": "x", "media": [media("first_frame"), media("last_frame")]},
                "parameters": {"resolution": "720P", "duration": 15, "seed": 7},
            },
            15,
        ),
        (
            {
                "model": "wan2.7-videoedit",
                "input": {"prompt": "x", "media": [media("video")]},
                "parameters": {"duration": 5, "prompt_extend": False, "watermark": True},
            },
            10,  # source (assumed 5 s) + output
        ),
        (
            {
                "model": "wan3.0-video-prime",
                "input": {"prompt": "x", "negative_prompt": "y", "media": []},
                "parameters": {"resolution": "480P", "duration": 30},
            },
            30,
        ),
    ],
)
def test_each_model_takes_its_own_media_and_bills_input_video(
    wan: httpx2.Client, sim: Sim, payload: dict[str, Any], billed: int
) -> None:
    done = wait_for(wan, submit(wan, payload), "completed")
    assert done["usage"]["duration"] == billed
    task = sim.state.videos[done["task_id"]]
    assert isinstance(task, WanTask) and task.billed_seconds() == billed


def test_fault_markers_apply(wan: httpx2.Client) -> None:
    refused = wan.post(WAN_PATH, json=body(prompt="[sim:status=429] x"), headers=ASYNC)
    assert refused.status_code == 429
    done = wait_for(wan, submit(wan, body(prompt="[sim:bytes=32] x")), "completed")
    assert len(httpx2.get(done["result_url"]).content) == 32

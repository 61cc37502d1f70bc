"""The simulated Muse route (upstream-2026/muse.md) is as strict as the docs describe it, so a
gateway that maps the OpenAI request onto it wrongly fails here."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from PIL import Image

from mediagate.servethread import BackgroundServer
from mediagate.simulator import DEFAULT_SIM_KEYS, SimConfig, SimState, create_simulator_app
from mediagate.simulator.muse import MuseVideo

from .conftest import GROUP_KEYS, Sim, wait_for_status


def client_for(sim: Sim, group: str) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {GROUP_KEYS[group]}"}
    return httpx2.Client(base_url=f"{sim.url}/v1", headers=headers, timeout=10)


@pytest.fixture
def muse(sim: Sim) -> Iterator[httpx2.Client]:
    with client_for(sim, "default") as client:
        yield client


def image(width: int = 64, height: int = 36, kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "olive").save(out, format=kind)
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def wait_for(client: httpx2.Client, video_id: str, status: str) -> dict[str, Any]:
    return wait_for_status(client, f"/videos/{video_id}", status)


def error_of(response: httpx2.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_json_create_polls_to_a_video_url_served_without_a_key(
    muse: httpx2.Client, sim: Sim
) -> None:
    created = muse.post(
        "/videos", json={"model": "muse-video", "prompt": "a fox", "seconds": "8"}
    ).json()
    assert (created["status"], created["seconds"], created["size"]) == ("queued", "8", "1280x720")
    assert created["video_url"] is None
    done = wait_for(muse, created["id"], "completed")
    assert done["expires_at"] - done["completed_at"] == 7 * 86400  # links are kept 7 days
    link = httpx2.get(done["video_url"])  # no Authorization: the link needs none
    assert link.status_code == 200 and link.content[4:8] == b"ftyp"
    part = muse.get(f"/videos/{created['id']}/content", headers={"Range": "bytes=0-15"})
    assert part.status_code == 206 and part.content == link.content[:16]
    video = sim.state.videos[created["id"]]
    assert isinstance(video, MuseVideo) and video.cost_usd() == 0.30
    call = sim.sent("/v1/videos")[0]
    assert call.group == "default" and call.model == "muse-video"
    assert call.headers["authorization"] == "Bearer <default>"
    assert call.body == {"model": "muse-video", "prompt": "a fox", "seconds": "8"}


def test_statuses_advance_over_time(muse: httpx2.Client) -> None:
    created = muse.post("/videos", json={"model": "muse-video", "prompt": "[sim:render=0.4] x"})
    video_id = created.json()["id"]
    middle = wait_for(muse, video_id, "in_progress")
    assert 0 <= middle["progress"] < 100 and middle["video_url"] is None
    assert wait_for(muse, video_id, "completed")["progress"] == 100


def test_multipart_takes_input_reference_and_last_frame_files(
    muse: httpx2.Client, sim: Sim
) -> None:
    files = {
        "model": (None, "muse-video"),
        "prompt": (None, "x"),
        "aspect_ratio": (None, "9:16"),
        # Pixel-exact frames are not required (muse.md), unlike the Sora route's.
        "input_reference": ("first.png", image(100, 100), "image/png"),
        "last_frame": ("last.jpg", image(30, 60, "JPEG"), "image/jpeg"),
    }
    created = muse.post("/videos", files=files)
    assert created.status_code == 200, created.text
    assert (created.json()["size"], created.json()["seconds"]) == ("720x1280", "10")
    recorded = sim.sent("/v1/videos")[0].body
    assert recorded["input_reference"]["format"] == "PNG"
    assert recorded["last_frame"]["format"] == "JPEG"


@pytest.mark.parametrize("group", ["default", "vip", "svip"])
def test_every_muse_group_serves_it(sim: Sim, group: str) -> None:
    with client_for(sim, group) as client:
        body = {"model": "muse-video-60s", "prompt": "x", "image": "https://example.com/a.png"}
        created = client.post("/videos", json=body)
        assert created.status_code == 200 and created.json()["seconds"] == "60"


@pytest.mark.parametrize("group", ["OpenAI Official", "SeeDance2", "Wan"])
def test_other_groups_have_no_channel_and_nothing_is_charged(sim: Sim, group: str) -> None:
    with client_for(sim, group) as client:
        response = client.post("/videos", json={"model": "muse-video", "prompt": "x"})
    assert response.status_code == 503 and error_of(response)["code"] == "model_not_found"
    assert "No available channel" in error_of(response)["message"]
    assert not sim.state.videos


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "muse-video", "prompt": "x", "seconds": "12"}, "seconds", None),
        ({"model": "muse-video", "prompt": "x", "seconds": 4}, "seconds", None),
        ({"model": "muse-video", "prompt": "x", "seconds": 8.5}, "seconds", None),
        ({"model": "muse-video-20s", "prompt": "x", "seconds": "10"}, "seconds", None),
        ({"model": "muse-video", "prompt": "x", "size": "1792x1024"}, "size", None),
        ({"model": "muse-video", "prompt": "x", "aspect_ratio": "21:9"}, "aspect_ratio", None),
        (
            {"model": "muse-video", "prompt": "x", "size": "1280x720", "aspect_ratio": "16:9"},
            "aspect_ratio",
            None,
        ),
        ({"model": "muse-video", "prompt": "  "}, "prompt", "missing_required_parameter"),
        ({"model": "muse-video", "prompt": "x", "quality": "high"}, "quality", "unknown_parameter"),
        ({"model": "muse-video", "prompt": "x", "input_reference": "x"}, "input_reference", None),
        ({"model": "muse-video", "prompt": "x", "image": "ftp://a/b.png"}, "image", None),
        ({"model": "muse-video", "prompt": "x", "image": "data:image/png;base64,@"}, "image", None),
        (
            {"model": "muse-video", "prompt": "x", "image": data_url(b"GIF89a", "image/gif")},
            "image",
            None,
        ),
        ({"model": "muse-video", "prompt": "x", "last_frame": 7}, "last_frame", None),
        ({"model": "muse-video", "prompt": "x", "video_url": "not a url"}, "video_url", None),
        # Looks and camera techniques: only the ids the announcement names, `none` alone.
        (
            {"model": "muse-video", "prompt": "x", "style_preset": "watercolor"},
            "style_preset",
            None,
        ),
        (
            {"model": "muse-video", "prompt": "x", "skill_preset": "whip_pan,dolly"},
            "skill_preset",
            None,
        ),
        (
            {"model": "muse-video", "prompt": "x", "skill_preset": ["none", "whip_pan"]},
            "skill_preset",
            None,
        ),
        ({"model": "muse-video", "prompt": "x", "skill_preset": "whip_pan,"}, "skill_preset", None),
        ({"model": "muse-video", "prompt": "x", "skill_preset": 3}, "skill_preset", None),
        ({"model": "muse-video", "prompt": "x", "custom_style": "s" * 2001}, "custom_style", None),
        ({"model": "muse-video", "prompt": "x", "custom_skill": ["a"]}, "custom_skill", None),
    ],
)
def test_create_is_strict(
    muse: httpx2.Client, sim: Sim, body: dict[str, Any], param: str, code: str | None
) -> None:
    response = muse.post("/videos", json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param
    if code is not None:
        assert error_of(response)["code"] == code
    assert not sim.state.videos  # rejected at submission: not charged


@pytest.mark.parametrize(
    "presets",
    [
        {"style_preset": "2d_anime", "skill_preset": "whip_pan,cut_on_action"},
        {"skill_preset": ["micro_drama_hook", "occlusion_wipe"], "custom_skill": "k" * 2000},
        {"skill_preset": "none", "custom_style": "ink wash, muted greens"},
    ],
)
def test_documented_looks_and_techniques_pass(
    muse: httpx2.Client, sim: Sim, presets: dict[str, Any]
) -> None:
    created = muse.post("/videos", json={"model": "muse-video-30s", "prompt": "x", **presets})
    assert created.status_code == 200, created.text
    video = sim.state.videos[created.json()["id"]]
    assert isinstance(video, MuseVideo) and video.cost_usd() == 0.80  # the price is unchanged


def test_seconds_may_be_a_number_and_a_data_url_frame_passes(muse: httpx2.Client) -> None:
    body = {"model": "muse-video", "prompt": "x", "seconds": 5, "image": data_url(image())}
    created = muse.post("/videos", json=body)
    assert created.status_code == 200 and created.json()["seconds"] == "5"


def test_a_continuation_names_the_total_length(muse: httpx2.Client) -> None:
    source = muse.post("/videos", json={"model": "muse-video", "prompt": "x"}).json()
    link = wait_for(muse, source["id"], "completed")["video_url"]
    shorter = {"model": "muse-video", "prompt": "on", "seconds": "10", "video_url": link}
    response = muse.post("/videos", json=shorter)
    assert response.status_code == 400 and error_of(response)["param"] == "video_url"
    longer = {"model": "muse-video-20s", "prompt": "on", "video_url": link}
    extended = muse.post("/videos", json=longer)
    assert extended.status_code == 200 and extended.json()["seconds"] == "20"
    with_frame = {**longer, "image": "https://example.com/a.png"}
    assert muse.post("/videos", json=with_frame).status_code == 400


def test_a_failed_task_is_refunded(muse: httpx2.Client, sim: Sim) -> None:
    created = muse.post("/videos", json={"model": "muse-video-30s", "prompt": "[sim:fail] x"})
    failed = wait_for(muse, created.json()["id"], "failed")
    assert failed["error"]["code"] == "video_generation_failed" and failed["video_url"] is None
    video = sim.state.videos[failed["id"]]
    assert isinstance(video, MuseVideo) and video.cost_usd() == 0.0
    coded = muse.post("/videos", json={"model": "muse-video", "prompt": "[sim:fail=busy] x"})
    assert wait_for(muse, coded.json()["id"], "failed")["error"]["code"] == "busy"


def test_fault_markers_apply(muse: httpx2.Client) -> None:
    refused = muse.post("/videos", json={"model": "muse-video", "prompt": "[sim:status=502] x"})
    assert refused.status_code == 502
    small = muse.post("/videos", json={"model": "muse-video", "prompt": "[sim:bytes=100] x"})
    done = wait_for(muse, small.json()["id"], "completed")
    assert len(httpx2.get(done["video_url"]).content) == 100


def test_only_create_get_and_the_video_exist(muse: httpx2.Client, sim: Sim) -> None:
    created = muse.post("/videos", json={"model": "muse-video", "prompt": "x"}).json()
    wait_for(muse, created["id"], "completed")
    for variant in ("thumbnail", "spritesheet"):
        response = muse.get(f"/videos/{created['id']}/content", params={"variant": variant})
        assert response.status_code == 404
    assert muse.get("/videos").status_code == 404
    assert muse.delete(f"/videos/{created['id']}").status_code == 404
    remix = muse.post(f"/videos/{created['id']}/remix", json={"prompt": "y"})
    assert remix.status_code == 404
    with client_for(sim, "vip") as other:  # another group's task does not exist for it
        assert other.get(f"/videos/{created['id']}").status_code == 404
    sim.state.forget_videos()
    assert httpx2.get(f"{sim.url}/cdn/muse/{created['id']}.mp4").status_code == 404


def test_a_closed_sora_route_retires_sora_2() -> None:
    config = SimConfig(keys=dict(DEFAULT_SIM_KEYS), sora_closed=True)
    state = SimState()
    with BackgroundServer(create_simulator_app(config, state)) as server:
        headers = {"Authorization": f"Bearer {GROUP_KEYS['OpenAI Official']}"}
        for model in ("sora-2", "sora-2-pro"):
            files = {"model": (None, model), "prompt": (None, "x")}
            response = httpx2.post(f"{server.url}/v1/videos", files=files, headers=headers)
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "model_not_found"
            assert "retired" in response.json()["error"]["message"]
        assert not state.videos

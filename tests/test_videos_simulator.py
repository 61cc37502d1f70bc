"""The simulated upstream's Sora Videos API is as strict as the real one was, so gateway bugs fail
here. The upstream closed that route (sora2-shutdown.md) and the simulator answers it closed by
default; these tests run a simulator that keeps it open (`SimConfig.sora_closed=False`)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from PIL import Image

from mediagate.servethread import BackgroundServer
from mediagate.simulator import DEFAULT_SIM_KEYS, SimConfig, SimState, create_simulator_app
from mediagate.simulator.videos import content_chunks

from .conftest import GROUP_KEYS, Sim, wait_for_status


@pytest.fixture(scope="module")
def _sora_open() -> Iterator[Sim]:
    state = SimState()
    config = SimConfig(keys=dict(DEFAULT_SIM_KEYS), sora_closed=False)
    with BackgroundServer(create_simulator_app(config, state)) as server:
        yield Sim(server.url, server.port, state)


@pytest.fixture
def sim(_sora_open: Sim) -> Sim:
    _sora_open.state.reset()
    return _sora_open


def test_the_closed_route_answers_404_naming_the_successors(_simulator: Sim) -> None:
    headers = {"Authorization": f"Bearer {GROUP_KEYS['OpenAI Official']}"}
    response = httpx2.post(
        f"{_simulator.url}/v1/videos",
        files={"model": (None, "sora-2"), "prompt": (None, "x")},
        headers=headers,
    )
    assert response.status_code == 404 and "muse-video" in response.text


@pytest.fixture
def official(sim: Sim) -> Iterator[httpx2.Client]:
    headers = {"Authorization": f"Bearer {GROUP_KEYS['OpenAI Official']}"}
    with httpx2.Client(base_url=f"{sim.url}/v1", headers=headers, timeout=10) as client:
        yield client


def form(**fields: Any) -> dict[str, Any]:
    return {
        name: value if isinstance(value, tuple) else (None, value) for name, value in fields.items()
    }


def png(width: int, height: int, kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "navy").save(out, format=kind)
    return out.getvalue()


def error_of(response: httpx2.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def wait_for(client: httpx2.Client, video_id: str, status: str) -> dict[str, Any]:
    """The job once it reached `status`."""
    return wait_for_status(client, f"/videos/{video_id}", status)


def test_a_job_moves_through_its_states(official: httpx2.Client) -> None:
    created = official.post("/videos", files=form(model="sora-2", prompt="[sim:render=0.4] x"))
    assert created.status_code == 200
    video = created.json()
    assert (video["status"], video["progress"], video["size"], video["seconds"]) == (
        "queued",
        0,
        "720x1280",
        "4",
    )
    middle = wait_for(official, video["id"], "in_progress")
    assert middle["status"] == "in_progress" and 0 <= middle["progress"] < 100
    done = wait_for(official, video["id"], "completed")
    assert done["progress"] == 100 and done["completed_at"] and done["expires_at"]


def test_only_the_creating_group_sees_a_job(official: httpx2.Client, sim: Sim) -> None:
    video = official.post("/videos", files=form(model="sora-2", prompt="mine")).json()
    enterprise = {"Authorization": f"Bearer {GROUP_KEYS['OpenAI Official Enterprise']}"}
    for path in (f"/videos/{video['id']}", f"/videos/{video['id']}/content"):
        response = httpx2.get(f"{sim.url}/v1{path}", headers=enterprise)
        assert response.status_code == 404
    listed = httpx2.get(f"{sim.url}/v1/videos", headers=enterprise).json()
    assert video["id"] not in [v["id"] for v in listed["data"]]
    assert official.get(f"/videos/{video['id']}").status_code == 200
    assert httpx2.get(f"{sim.url}/v1/videos/{video['id']}").status_code == 401


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"model": "sora-2", "prompt": "x", "size": "1792x1024"}, 400, "size"),
        ({"model": "sora-2-pro", "prompt": "x", "size": "1024x1024"}, 400, "size"),
        ({"model": "sora-2", "prompt": "x", "seconds": "10"}, 400, "seconds"),
        ({"model": "sora-2", "prompt": "x", "fps": "24"}, 400, "fps"),
        ({"model": "sora-2"}, 400, "prompt"),
        ({"prompt": "x"}, 400, "model"),
        ({"model": "sora-3", "prompt": "x"}, 503, None),
    ],
)
def test_create_is_strict(
    official: httpx2.Client, fields: dict[str, str], status: int, param: str | None
) -> None:
    response = official.post("/videos", files=form(**fields))
    assert response.status_code == status
    assert error_of(response)["param"] == param


def test_create_takes_multipart_only_and_from_video_groups_only(
    official: httpx2.Client, sim: Sim
) -> None:
    response = official.post("/videos", json={"model": "sora-2", "prompt": "x"})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_content_type"
    default = {"Authorization": f"Bearer {GROUP_KEYS['default']}"}
    response = httpx2.post(
        f"{sim.url}/v1/videos", files=form(model="sora-2", prompt="x"), headers=default
    )
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (png(1280, 720), "invalid_image_size"),  # the default size is 720x1280
        (png(720, 1280, "GIF"), "invalid_image_format"),
        (b"not an image", "invalid_image_format"),
    ],
)
def test_a_reference_must_be_an_image_of_exactly_the_size(
    official: httpx2.Client, data: bytes, code: str
) -> None:
    fields = form(model="sora-2", prompt="x", input_reference=("r.png", data, "image/png"))
    response = official.post("/videos", files=fields)
    assert response.status_code == 400 and error_of(response)["code"] == code


def test_an_exact_reference_in_any_accepted_format_passes(official: httpx2.Client) -> None:
    for kind in ("PNG", "JPEG", "WEBP"):
        reference = ("r", png(1792, 1024, kind), "application/octet-stream")  # the bytes decide
        fields = form(model="sora-2-pro", prompt="x", size="1792x1024", input_reference=reference)
        assert official.post("/videos", files=fields).status_code == 200


def test_failing_forgetting_and_deleting(official: httpx2.Client, sim: Sim) -> None:
    failing = official.post("/videos", files=form(model="sora-2", prompt="[sim:fail] x")).json()
    failed = wait_for(official, failing["id"], "failed")
    assert failed["error"]["code"] == "video_generation_failed" and failed["error"]["message"]

    busy = official.post("/videos", files=form(model="sora-2", prompt="[sim:render=5] x")).json()
    assert official.delete(f"/videos/{busy['id']}").status_code == 400
    assert official.post(f"/videos/{busy['id']}/remix", json={"prompt": "y"}).status_code == 400
    deleted = official.delete(f"/videos/{failing['id']}")
    assert deleted.json() == {"id": failing["id"], "object": "video.deleted", "deleted": True}
    assert official.get(f"/videos/{failing['id']}").status_code == 404

    sim.state.forget_videos()
    assert official.get(f"/videos/{busy['id']}").status_code == 404


def test_content_is_generated_in_chunks_with_ranges(official: httpx2.Client) -> None:
    size = 3 * 64 * 1024 + 17
    created = official.post("/videos", files=form(model="sora-2", prompt=f"[sim:bytes={size}] x"))
    video = created.json()
    not_ready = official.get(f"/videos/{video['id']}/content")
    assert not_ready.status_code == 400 and error_of(not_ready)["code"] == "video_not_ready"
    wait_for(official, video["id"], "completed")

    expected = b"".join(content_chunks(video["id"], size))
    assert len(expected) == size and expected[4:8] == b"ftyp"
    whole = official.get(f"/videos/{video['id']}/content")
    assert whole.content == expected and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(size)
    middle = official.get(f"/videos/{video['id']}/content", headers={"Range": "bytes=65530-65545"})
    assert middle.status_code == 206 and middle.content == expected[65530:65546]
    beyond = official.get(f"/videos/{video['id']}/content", headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416

    thumbnail = official.get(f"/videos/{video['id']}/content", params={"variant": "thumbnail"})
    assert thumbnail.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(thumbnail.content)).format == "WEBP"
    sheet = official.get(f"/videos/{video['id']}/content", params={"variant": "spritesheet"})
    assert Image.open(io.BytesIO(sheet.content)).format == "JPEG"


def test_remix_makes_a_new_job_from_a_completed_one(official: httpx2.Client) -> None:
    source = official.post("/videos", files=form(model="sora-2-pro", prompt="a", size="1280x720"))
    source_id = source.json()["id"]
    wait_for(official, source_id, "completed")
    remix = official.post(f"/videos/{source_id}/remix", json={"prompt": "b"}).json()
    assert remix["remixed_from_video_id"] == source_id and remix["id"] != source_id
    assert (remix["model"], remix["size"]) == ("sora-2-pro", "1280x720")
    bad = official.post(f"/videos/{source_id}/remix", json={"prompt": "b", "seconds": "8"})
    assert bad.status_code == 400

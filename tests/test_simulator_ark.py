"""The simulated Seedance route (Volcengine Ark tasks, upstream-2026/seedance-2.md) is as strict
as the docs describe it, so a gateway that builds the Ark body wrongly fails here."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from PIL import Image

from mediagate.simulator.ark import ArkTask

from .conftest import GROUP_KEYS, Sim, wait_for_status

SEEDANCE_20 = "doubao-seedance-2-0-260128"
SEEDANCE_25 = "doubao-seedance-2-5-260628"
FAST = "doubao-seedance-2-0-fast-260128"
MINI = "doubao-seedance-2-0-mini-260615"
TASKS = "/contents/generations/tasks"


def key(group: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {GROUP_KEYS[group]}"}


@pytest.fixture
def ark(sim: Sim) -> Iterator[httpx2.Client]:
    with httpx2.Client(
        base_url=f"{sim.url}/seedance/api/v3", headers=key("SeeDance2"), timeout=10
    ) as client:
        yield client


def text(prompt: str) -> dict[str, str]:
    return {"type": "text", "text": prompt}


def media(kind: str, role: str, url: str = "https://example.com/a") -> dict[str, Any]:
    return {"type": kind, kind: {"url": url}, "role": role}


def png_url(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "plum").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def wait_for(client: httpx2.Client, task_id: str, status: str) -> dict[str, Any]:
    return wait_for_status(client, f"{TASKS}/{task_id}", status)


def create(client: httpx2.Client, **body: Any) -> str:
    response = client.post(TASKS, json=body)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    task_id: str = response.json()["id"]
    return task_id


def test_a_task_succeeds_with_tokens_a_signed_link_and_a_main_host_download(
    ark: httpx2.Client, sim: Sim
) -> None:
    task_id = create(
        ark,
        model=SEEDANCE_20,
        content=[text("a lighthouse")],
        ratio="16:9",
        resolution="720p",
        duration=5,
        return_last_frame=True,
    )
    done = wait_for(ark, task_id, "succeeded")
    # 5 s at 720p 16:9: 121 frames of 1280x720 / 1024 (the doc's own figure).
    assert done["usage"]["completion_tokens"] == 108_900
    assert (done["duration"], done["ratio"], done["resolution"]) == (5, "16:9", "720p")
    assert done["error"] is None and done["framespersecond"] == 24
    video = httpx2.get(done["content"]["video_url"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    frame = httpx2.get(done["content"]["last_frame_url"])
    assert frame.headers["content-type"] == "image/png"
    main = httpx2.get(f"{sim.url}/v1/videos/{task_id}/content", headers=key("SeeDance2"))
    assert main.status_code == 200 and main.content == video.content
    ranged = httpx2.get(
        done["content"]["video_url"], headers={"Range": "bytes=4-7"}
    )  # signed links serve ranges too
    assert ranged.status_code == 206 and ranged.content == b"ftyp"
    task = sim.state.videos[task_id]
    assert isinstance(task, ArkTask) and task.cost_usd() == pytest.approx(108_900 * 7.88 / 1e6)
    call = sim.sent(f"/seedance/api/v3{TASKS}")[0]
    assert call.group == "SeeDance2" and call.model == SEEDANCE_20
    assert call.headers["authorization"] == "Bearer <SeeDance2>"


def test_1080p_tokens_and_the_price_tier(ark: httpx2.Client, sim: Sim) -> None:
    task_id = create(ark, model=SEEDANCE_25, content=[text("x")], ratio="16:9", resolution="1080p")
    done = wait_for(ark, task_id, "succeeded")
    assert done["duration"] == 5  # -1 (the 2.5 default): the model chose
    assert done["usage"]["completion_tokens"] == 245_025
    task = sim.state.videos[task_id]
    assert isinstance(task, ArkTask) and task.cost_usd() == pytest.approx(245_025 * 13.20 / 1e6)


def test_statuses_advance_and_end_failed_or_expired(ark: httpx2.Client) -> None:
    task_id = create(ark, model=MINI, content=[text("[sim:render=0.4] x")])
    assert ark.get(f"{TASKS}/{task_id}").json()["status"] == "queued"
    running = wait_for(ark, task_id, "running")
    assert "content" not in running and "usage" not in running
    wait_for(ark, task_id, "succeeded")
    failed = wait_for(ark, create(ark, model=FAST, content=[text("[sim:fail] x")]), "failed")
    assert failed["error"]["code"] and "content" not in failed
    expired = wait_for(ark, create(ark, model=FAST, content=[text("[sim:expire] x")]), "expired")
    assert expired["error"]["code"] == "TaskExpired"


def test_an_adaptive_ratio_follows_the_first_frame(ark: httpx2.Client) -> None:
    content = [text("x"), media("image_url", "first_frame", png_url(90, 160))]
    task_id = create(ark, model=SEEDANCE_20, content=content)
    assert wait_for(ark, task_id, "succeeded")["ratio"] == "9:16"


def test_an_input_video_is_billed_with_the_output(ark: httpx2.Client, sim: Sim) -> None:
    content = [text("x"), media("video_url", "reference_video")]
    task_id = create(ark, model=SEEDANCE_20, content=content, ratio="16:9", duration=4)
    done = wait_for(ark, task_id, "succeeded")
    assert done["usage"]["completion_tokens"] == (24 * (4 + 5) + 1) * 900
    task = sim.state.videos[task_id]
    assert isinstance(task, ArkTask) and task.cost_usd() == pytest.approx(
        done["usage"]["completion_tokens"] * 4.80 / 1e6
    )


@pytest.mark.parametrize("group", ["default", "Wan", "OpenAI Official"])
def test_other_groups_have_no_channel(sim: Sim, group: str) -> None:
    body = {"model": SEEDANCE_20, "content": [text("x")]}
    response = httpx2.post(f"{sim.url}/seedance/api/v3{TASKS}", json=body, headers=key(group))
    assert response.status_code == 503
    assert "No available channel" in response.json()["error"]["message"]
    assert not sim.state.videos


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/seedance/api/v3{TASKS}"),  # the list call
        ("POST", f"/seedance/v3{TASKS}"),  # `/api` dropped
        ("POST", f"/api/v3{TASKS}"),  # the Ark path glued onto the host
        ("GET", "/seedance/api/v3/contents/generations/task/x"),
    ],
)
def test_a_wrong_path_answers_the_website_html(sim: Sim, method: str, path: str) -> None:
    response = httpx2.request(method, f"{sim.url}{path}", headers=key("SeeDance2"), json={})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "seedance-2.0", "content": [text("x")]}, "model"),
        ({"model": FAST, "content": [text("x")], "resolution": "1080p"}, "resolution"),
        ({"model": SEEDANCE_20, "content": [text("x")], "resolution": "720P"}, "resolution"),
        ({"model": SEEDANCE_20, "content": [text("x")], "duration": 3}, "duration"),
        ({"model": SEEDANCE_20, "content": [text("x")], "duration": 16}, "duration"),
        ({"model": SEEDANCE_20, "content": [text("x")], "duration": "5"}, "duration"),
        ({"model": SEEDANCE_25, "content": [text("x")], "duration": 31}, "duration"),
        ({"model": SEEDANCE_20, "content": [text("x")], "ratio": "2:1"}, "ratio"),
        ({"model": SEEDANCE_20, "content": [text("x")], "size": "1280x720"}, "size"),
        ({"model": SEEDANCE_20, "content": [text("x")], "draft": True}, "draft"),
        ({"model": SEEDANCE_20, "content": [text("x")], "generate_audio": "yes"}, "generate_audio"),
        ({"model": SEEDANCE_20, "content": [text("x")], "seed": 2**32}, "seed"),
        ({"model": SEEDANCE_20, "content": []}, "content"),
        ({"model": SEEDANCE_20, "content": "x"}, "content"),
        ({"model": SEEDANCE_20, "content": [text("x"), text("y")]}, "content"),
        ({"model": SEEDANCE_20, "content": [{"type": "prompt", "text": "x"}]}, "content[0]"),
        (
            {"model": SEEDANCE_20, "content": [text("x"), {"type": "image_url", "image_url": {}}]},
            "content[1]",
        ),
        (
            {"model": SEEDANCE_20, "content": [text("x"), media("image_url", "reference_video")]},
            "content[1]",
        ),
        (
            {
                "model": SEEDANCE_20,
                "content": [text("x"), media("image_url", "first_frame", "ftp://a")],
            },
            "content[1]",
        ),
        (
            {
                "model": SEEDANCE_20,
                "content": [
                    text("x"),
                    media("image_url", "first_frame"),
                    media("image_url", "reference_image"),
                ],
            },
            "content",
        ),
        (
            {"model": SEEDANCE_20, "content": [text("x"), media("image_url", "last_frame")]},
            "content",
        ),
        (
            {"model": SEEDANCE_20, "content": [text("x"), media("audio_url", "reference_audio")]},
            "content",
        ),
        (
            {
                "model": SEEDANCE_20,
                "content": [text("x")] + [media("video_url", "reference_video")] * 4,
            },
            "content",
        ),
        (
            {
                "model": SEEDANCE_25,
                "content": [text("x"), media("image_url", "first_frame")],
                "ratio": "16:9",
            },
            "ratio",
        ),
    ],
)
def test_create_is_strict(ark: httpx2.Client, sim: Sim, body: dict[str, Any], param: str) -> None:
    response = ark.post(TASKS, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("InvalidParameter", param)
    assert not sim.state.videos


def test_the_documented_options_and_2_5_extras_pass(ark: httpx2.Client) -> None:
    body = {
        "model": SEEDANCE_25,
        "content": [text("x"), media("audio_url", "reference_audio")],  # audio alone: 2.5 only
        "ratio": "21:9",
        "resolution": "480p",
        "duration": 30,
        "generate_audio": False,
        "seed": 42,
        "watermark": True,
        "callback_url": "https://example.com/hook",
        "draft": True,
    }
    done = wait_for(ark, create(ark, **body), "succeeded")
    assert (done["seed"], done["generate_audio"], done["duration"]) == (42, False, 30)
    assert "last_frame_url" not in done["content"]


def test_a_create_must_be_json(ark: httpx2.Client) -> None:
    response = ark.post(TASKS, data={"model": SEEDANCE_20})
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidParameter"


def test_links_and_tasks_belong_to_their_group_and_signature(ark: httpx2.Client, sim: Sim) -> None:
    task_id = create(ark, model=MINI, content=[text("x")])
    done = wait_for(ark, task_id, "succeeded")
    link = done["content"]["video_url"]
    with_key = httpx2.get(link, headers=key("SeeDance2"))
    assert with_key.status_code == 400 and "<Code>InvalidArgument</Code>" in with_key.text
    tampered = httpx2.get(link.replace("Signature=", "Signature=0"))
    assert tampered.status_code == 403 and "SignatureDoesNotMatch" in tampered.text
    unsigned = httpx2.get(link.split("?")[0])
    assert unsigned.status_code == 403
    other = httpx2.get(f"{sim.url}/seedance/api/v3{TASKS}/{task_id}", headers=key("Wan"))
    assert other.status_code == 503
    missing = ark.get(f"{TASKS}/cgt-nope")
    assert missing.status_code == 404
    main = f"{sim.url}/v1/videos/{task_id}/content"
    assert httpx2.get(main, headers=key("default")).status_code == 404
    thumb = httpx2.get(main, params={"variant": "thumbnail"}, headers=key("SeeDance2"))
    assert thumb.status_code == 404


def test_fault_markers_apply(ark: httpx2.Client, sim: Sim) -> None:
    refused = ark.post(TASKS, json={"model": MINI, "content": [text("[sim:status=500] x")]})
    assert refused.status_code == 500
    reset = ark.post(TASKS, json={"model": MINI, "content": [text("[sim:nonjson] x")]})
    assert reset.status_code == 200 and "html" in reset.text.lower()
    small = create(ark, model=MINI, content=[text("[sim:bytes=64] x")])
    done = wait_for(ark, small, "succeeded")
    assert len(httpx2.get(done["content"]["video_url"]).content) == 64


# --- Dreamina Seedance (changes-2026-12.md section 1): the dreamina-* ids -----------------------

DREAMINA_25 = "dreamina-seedance-2-5-260628"
DREAMINA_FLASH = "dreamina-seedance-2-5-flash-261115"
DREAMINA_20 = "dreamina-seedance-2-0-260128"
DREAMINA_MINI = "dreamina-seedance-2-0-mini-260615"


def ark_post(sim: Sim, group: str, **body: Any) -> httpx2.Response:
    return httpx2.post(f"{sim.url}/seedance/api/v3{TASKS}", json=body, headers=key(group))


@pytest.mark.parametrize("group", ["SeeDance2", "Wan", "OpenAI Official"])
def test_a_dreamina_id_has_no_channel_outside_dreamina_and_default(sim: Sim, group: str) -> None:
    response = ark_post(sim, group, model=DREAMINA_20, content=[text("x")])
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "No available channel" in message and DREAMINA_20 in message
    assert not sim.state.videos


def test_a_dreamina_key_has_no_channel_for_a_doubao_id(sim: Sim) -> None:
    response = ark_post(sim, "Dreamina", model=SEEDANCE_20, content=[text("x")])
    assert response.status_code == 503 and "No available channel" in response.text


@pytest.mark.parametrize("group", ["Dreamina", "default"])
def test_dreamina_sells_its_ids_in_its_group_and_default(sim: Sim, group: str) -> None:
    with httpx2.Client(
        base_url=f"{sim.url}/seedance/api/v3", headers=key(group), timeout=10
    ) as client:
        task_id = create(client, model=DREAMINA_MINI, content=[text("x")], ratio="16:9",
                         resolution="480p", duration=4)  # fmt: skip
        done = wait_for(client, task_id, "succeeded")
    # The page's worked example: 2.0 mini, 480p 16:9, 4 s = 40,594 tokens x $3.50/M; here
    # (97 frames of 864x496) the simulator's own pixels, at the page's rate.
    tokens = done["usage"]["completion_tokens"]
    assert tokens == 97 * 864 * 496 // 1024
    task = sim.state.videos[task_id]
    assert isinstance(task, ArkTask) and task.group == group
    assert task.cost_usd() == pytest.approx(tokens * 3.50 / 1e6)
    # A task is its group's: the other group that sells dreamina-* does not see it.
    other = "default" if group == "Dreamina" else "Dreamina"
    seen = httpx2.get(f"{sim.url}/seedance/api/v3{TASKS}/{task_id}", headers=key(other))
    assert seen.status_code == 404
    assert httpx2.get(f"{sim.url}/seedance/api/v3{TASKS}/{task_id}",
                      headers=key("SeeDance2")).status_code == 404  # fmt: skip


@pytest.mark.parametrize(
    ("model", "resolution", "status"),
    [
        (DREAMINA_FLASH, "1080p", 400),
        (DREAMINA_FLASH, "4k", 400),
        (DREAMINA_MINI, "1080p", 400),
        (SEEDANCE_25, "4k", 400),  # SeeDance2 stops at 1080p
        (DREAMINA_FLASH, "720p", 200),
        (DREAMINA_20, "1080p", 200),
        (DREAMINA_25, "4k", 200),
    ],
)
def test_resolutions_per_model(sim: Sim, model: str, resolution: str, status: int) -> None:
    group = "SeeDance2" if model.startswith("doubao") else "Dreamina"
    response = ark_post(sim, group, model=model, content=[text("x")], resolution=resolution)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["param"] == "resolution"


def test_4k_is_made_at_3840x2160_and_billed_by_its_tokens(sim: Sim) -> None:
    with httpx2.Client(
        base_url=f"{sim.url}/seedance/api/v3", headers=key("Dreamina"), timeout=10
    ) as client:
        task_id = create(client, model=DREAMINA_25, content=[text("x")], ratio="16:9",
                         resolution="4k", duration=5)  # fmt: skip
        done = wait_for(client, task_id, "succeeded")
    assert done["usage"]["completion_tokens"] == 121 * 3840 * 2160 // 1024
    task = sim.state.videos[task_id]
    # No 4K rate is published: the simulator knows none either.
    assert isinstance(task, ArkTask) and task.size == "3840x2160" and task.cost_usd() is None

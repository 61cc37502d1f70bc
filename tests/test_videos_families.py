"""The Videos API over each upstream family (Muse, Seedance on Ark, Wan on DashScope) and the
retired Sora names, through the real OpenAI SDK against the simulated upstreams: what the
gateway sends each upstream for the same OpenAI request, what it books, how it maps and refuses,
and how often it asks."""

from __future__ import annotations

import calendar
import io
import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from PIL import Image

from mediagate.servethread import BackgroundServer
from mediagate.simulator import DEFAULT_SIM_KEYS, SimConfig, SimState, create_simulator_app

from .conftest import GROUP_KEYS, Gateway, Sim, fast_video_polls, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ARK_TASKS = "/seedance/api/v3/contents/generations/tasks"
WAN_CREATE = "/wan/api/v1/services/aigc/video-generation/video-synthesis"
DEPRECATION = f"@{calendar.timegm(date(2026, 9, 24).timetuple())}"


def picture(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 160)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    return make_gateway(config=fast_video_polls(tmp_path / "polls.yaml"))


def heron_8s() -> dict[str, Any]:
    """The create each family's end-to-end test sends: 1280x720, 8 s, with a reference."""
    return {
        "prompt": "a heron takes off",
        "size": "1280x720",
        "seconds": "8",
        "input_reference": ("ref.png", picture(1280, 720), "image/png"),
    }


def assert_made_8s(video: Any, model: str) -> None:
    assert (video.status, video.model, video.size, video.seconds) == (
        "completed",
        model,
        "1280x720",
        "8",
    )


def posts(sim: Sim, path: str) -> list[Any]:
    return [c for c in sim.sent(path) if c.method == "POST"]


def cost(gateway: Gateway, video_id: str) -> float:
    with gateway.http() as http:
        rows = http.get("/v1/usage").json()
    assert rows is not None
    from .test_videos import stored  # one reader of the job store for the video tests

    job = stored(gateway, video_id)
    assert job.cost is not None
    return job.cost


def show(label: str, call: Any) -> None:
    """The upstream request as the simulator recorded it, for the report (pytest -s)."""
    body = re.sub(r'"data:([a-z/]+);base64,[^"]+"', r'"data:\1;base64,..."', json.dumps(call.body))
    headers = {k: v for k, v in call.headers.items() if k in ("authorization", "x-dashscope-async")}
    print(f"\n[{label}] {call.method} {call.path} group={call.group} headers={headers}")
    print(f"[{label}] body={body}")


def test_muse_create_poll_download_with_a_reference(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    video = sdk.videos.create_and_poll(
        model="muse-video",
        **heron_8s(),
    )
    assert_made_8s(video, "muse-video")
    [create] = posts(sim, "/v1/videos")
    show("muse", create)
    assert create.group == "default"
    assert {k: v for k, v in create.body.items() if k != "input_reference"} == {
        "model": "muse-video",
        "prompt": "a heron takes off",
        "size": "1280x720",
        "seconds": "8",
    }
    assert create.body["input_reference"]["format"] == "PNG"
    content = sdk.videos.download_content(video.id)
    assert content.content[4:8] == b"ftyp"
    downloads = [c for c in sim.sent() if c.path.endswith("/content")]
    assert downloads[-1].headers["authorization"] == "Bearer <default>"  # the job's own key
    assert cost(gw, video.id) == pytest.approx(0.30)


def test_seedance_create_poll_download_with_a_reference(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    raw = sdk.videos.with_raw_response.create(
        model="seedance-2.0",
        **heron_8s(),
        extra_body={"generate_audio": "false", "seed": "7", "negative_prompt": "fog"},
    )
    assert raw.headers["x-mediagate-dropped"] == "negative_prompt"  # a Wan option, not Ark's
    video = sdk.videos.poll(raw.parse().id)
    assert_made_8s(video, "seedance-2.0")
    [create] = posts(sim, ARK_TASKS)
    show("seedance", create)
    # Dreamina's route first (its own group's key is set): the same Ark contract.
    assert create.group == "Dreamina"
    assert raw.headers["x-mediagate-route"] == "dreamina-seedance-2.0"
    body = create.body
    text, image = body["content"]
    assert text == {"type": "text", "text": "a heron takes off"}
    assert image["role"] == "first_frame" and image["type"] == "image_url"
    rest = {k: v for k, v in body.items() if k != "content"}
    assert rest == {
        "model": "dreamina-seedance-2-0-260128",
        "ratio": "16:9",
        "resolution": "720p",
        "duration": 8,
        "generate_audio": False,
        "seed": 7,
    }
    assert sdk.videos.download_content(video.id).content[4:8] == b"ftyp"
    # 193 frames (24 x 8 + 1) of 1280x720 are 173,700 completion tokens at Dreamina's $7.01 a
    # million (SeeDance2's 7.88 x 0.89).
    assert cost(gw, video.id) == pytest.approx(173_700 * 7.01 / 1e6)


def test_wan_create_poll_download_without_the_key(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    video = sdk.videos.create_and_poll(
        model="wan2.7-i2v",
        **heron_8s(),
    )
    assert_made_8s(video, "wan2.7-i2v")
    [create] = posts(sim, WAN_CREATE)
    show("wan", create)
    assert create.group == "Wan" and create.headers["x-dashscope-async"] == "enable"
    assert create.body["model"] == "wan2.7-i2v"
    assert create.body["parameters"] == {"resolution": "720P", "duration": 8}
    [media] = create.body["input"]["media"]
    assert media["type"] == "first_frame"
    assert create.body["input"]["prompt"] == "a heron takes off"
    content = sdk.videos.download_content(video.id)
    assert content.content[4:8] == b"ftyp"
    link = [c for c in sim.sent() if c.method == "GET" and c.path.startswith("/oss/")]
    link = link or [c for c in sim.sent() if c.method == "GET" and "result" in c.path]
    assert link and "authorization" not in link[-1].headers  # the signed link, keyless
    assert cost(gw, video.id) == pytest.approx(8 * 0.1028)


def test_sora_2_is_muse_with_the_mapping_and_deprecation(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    raw = sdk.videos.with_raw_response.create(
        model="sora-2",
        prompt="a heron takes off",
        size="1280x720",
        seconds="4",
        input_reference=("ref.png", picture(1280, 720), "image/png"),
    )
    assert raw.headers["x-mediagate-alias"] == "sora-2>muse-video"
    assert raw.headers["x-mediagate-route"] == "muse-video"
    assert raw.headers["deprecation"] == DEPRECATION
    assert raw.headers["x-mediagate-mapped"] == "seconds=4>5"
    # The Video object names the model asked for, as OpenAI answers; what served it is in the
    # headers above.
    assert raw.parse().model == "sora-2"
    video = sdk.videos.poll(raw.parse().id)
    assert (video.status, video.model, video.seconds) == ("completed", "sora-2", "5")
    [create] = posts(sim, "/v1/videos")
    assert create.body["model"] == "muse-video" and create.body["seconds"] == "5"
    assert sdk.videos.download_content(video.id).content[4:8] == b"ftyp"
    listed = sdk.videos.list().data[0]
    assert (listed.id, listed.model) == (video.id, "sora-2")


def test_sora_2_pro_is_seedance_at_1080p(gw: Gateway, sim: Sim) -> None:
    raw = gw.sdk().videos.with_raw_response.create(
        model="sora-2-pro", prompt="p", size="1792x1024", seconds="8"
    )
    assert raw.headers["x-mediagate-alias"] == "sora-2-pro>seedance-2.0"
    assert raw.headers["x-mediagate-mapped"] == "size=1792x1024>1920x1080"
    assert raw.parse().size == "1792x1024"  # the nearest size OpenAI's Video object has
    assert raw.parse().model == "sora-2-pro"
    # A 720p size is raised to sora-2-pro's 1080p tier (the README says so).
    raised = gw.sdk().videos.with_raw_response.create(
        model="sora-2-pro", prompt="p", size="720x1280", seconds="8"
    )
    assert raised.headers["x-mediagate-mapped"] == "size=720x1280>1080x1920"
    first, second = posts(sim, ARK_TASKS)
    assert (first.body["ratio"], first.body["resolution"]) == ("16:9", "1080p")
    assert (second.body["ratio"], second.body["resolution"]) == ("9:16", "1080p")


@pytest.mark.parametrize(
    ("dated", "successor", "tier"),
    [
        ("sora-2-2025-10-06", "muse-video", None),
        ("sora-2-2025-12-08", "muse-video", None),
        ("sora-2-pro-2025-10-06", "seedance-2.0", "1080p"),
    ],
)
def test_openais_dated_sora_ids_are_their_models_aliases(
    gw: Gateway, sim: Sim, dated: str, successor: str, tier: str | None
) -> None:
    raw = gw.sdk().videos.with_raw_response.create(model=dated, prompt="p", size="1280x720")
    assert raw.headers["x-mediagate-alias"] == f"{dated}>{successor}"
    assert raw.headers["deprecation"] == DEPRECATION
    assert raw.parse().model == dated  # the name asked for
    [create] = sim.sent()[-1:]
    if tier is None:
        assert create.body["model"] == "muse-video"
    else:
        assert create.body["resolution"] == tier


def test_sora_2_pro_falls_back_to_muse_without_a_seedance_key(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    # Only SeeDance2 serves seedance-2.0 here (Dreamina's routes are taken off), without a key.
    config = fast_video_polls(tmp_path / "p.yaml")
    overlay = yaml.safe_load(config.read_text())
    overlay["models"] = {"seedance-2.0": {"routes": ["seedance-2.0"]}}
    config.write_text(yaml.safe_dump(overlay))
    gateway = make_gateway(key_seedance2=None, config=config)
    assert "seedance-2.0" not in {m.id for m in gateway.sdk().models.list().data}
    raw = gateway.sdk().videos.with_raw_response.create(
        model="sora-2-pro", prompt="p", size="1792x1024", seconds="12"
    )
    assert raw.headers["x-mediagate-alias"] == "sora-2-pro>muse-video"
    assert raw.headers["x-mediagate-mapped"] == "seconds=12>10,size=1792x1024>1280x720"
    [create] = posts(sim, "/v1/videos")
    assert create.body["model"] == "muse-video" and create.group == "default"
    assert "resolution" not in create.body  # the Seedance default is not sent to Muse
    assert "x-mediagate-dropped" not in raw.headers


def test_bad_requests_are_400s_before_any_upstream_call(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    reference = ("ref.png", picture(64, 64), "image/png")
    cases: list[dict[str, Any]] = [
        {"model": "wan2.7-t2v", "input_reference": reference},  # text only
        {"model": "seedance-2.0", "seconds": "40"},  # 4-15 s
        {"model": "wan2.7-t2v", "seconds": "1"},
        {"model": "seedance-2.0-fast", "extra_body": {"resolution": "1080p"}},
        {"model": "seedance-2.0", "extra_body": {"watermark": "maybe"}},
    ]
    for case in cases:
        with pytest.raises(openai.BadRequestError):
            sdk.videos.create(prompt="p", **case)
    assert sim.sent() == []


def test_a_route_without_remix_says_so(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    video = sdk.videos.create_and_poll(model="wan2.7-t2v", prompt="p", size="1280x720")
    calls = len(sim.sent())
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.remix(video.id, prompt="again")
    assert caught.value.code == "remix_unsupported"
    assert len(sim.sent()) == calls


def test_seedance_remix_is_an_edit_of_the_clip(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    source = sdk.videos.create_and_poll(model="seedance-2.0-mini", prompt="a", seconds="5")
    remix = sdk.videos.poll(sdk.videos.remix(source.id, prompt="b").id)
    assert remix.status == "completed" and remix.remixed_from_video_id == source.id
    edit = posts(sim, ARK_TASKS)[-1]
    _, clip = edit.body["content"]
    assert clip["type"] == "video_url" and clip["role"] == "reference_video"
    assert edit.body["duration"] == 5


def test_failures_are_refunded_per_family(gw: Gateway) -> None:
    sdk = gw.sdk()
    for model in ("muse-video", "seedance-2.0", "wan2.7-t2v"):
        video = sdk.videos.create_and_poll(model=model, prompt="[sim:fail] p")
        assert video.status == "failed" and video.error is not None, model
        assert cost(gw, video.id) == 0.0
    with gw.http() as http:
        budget = http.get("/v1/usage").json()
    assert budget["totals"]["cost_usd"] == 0


def test_an_expired_seedance_task_fails_with_a_clear_code(gw: Gateway) -> None:
    video = gw.sdk().videos.create_and_poll(model="seedance-2.0", prompt="[sim:expire] p")
    assert video.status == "failed" and video.error is not None
    assert video.error.code == "video_expired"


def test_polls_respect_the_route_interval(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    gateway = make_gateway(config=fast_video_polls(tmp_path / "slow.yaml", 30))
    sdk = gateway.sdk()
    raw = sdk.videos.with_raw_response.create(model="muse-video", prompt="[sim:render=5] p")
    assert raw.headers["openai-poll-after-ms"] == "30000"
    video = raw.parse()
    for _ in range(5):
        assert sdk.videos.retrieve(video.id).status in ("queued", "in_progress")
        sdk.videos.list()
    upstream = next(iter(sim.state.videos))
    asks = [c for c in sim.sent(f"/v1/videos/{upstream}") if c.method == "GET"]
    assert len(asks) == 1  # once, then the stored state until 30 s have passed
    wait_until(lambda: True)
    assert GROUP_KEYS["default"] not in raw.text


def test_seedance_2_5_with_a_first_frame_is_adaptive(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    video = sdk.videos.create_and_poll(
        model="seedance-2.5",
        prompt="p",
        size="1280x720",
        seconds="20",
        input_reference=("ref.png", picture(1280, 720), "image/png"),
    )
    assert video.status == "completed", video.error
    [create] = posts(sim, ARK_TASKS)
    assert (create.body["ratio"], create.body["duration"]) == ("adaptive", 20)


@pytest.mark.parametrize("model", ["wan2.7-t2v", "wan3.0-video"])
def test_a_result_link_that_expired_is_a_clear_404(
    make_gateway: Callable[..., Gateway], tmp_path: Path, model: str
) -> None:
    # Wan's results are signed links that lapse (24 h upstream) and are fetched as they are
    # (Seedance's content comes through the upstream's own content route): this upstream signs
    # every link already expired, so the download finds it so.
    state = SimState()
    config = SimConfig(keys=dict(DEFAULT_SIM_KEYS), signed_link_ttl_s=-60)
    with BackgroundServer(create_simulator_app(config, state)) as server:
        gateway = make_gateway(
            upstream_url=f"{server.url}/v1",
            fetch_allow_hosts=[f"127.0.0.1:{server.port}"],
            config=fast_video_polls(tmp_path / "polls.yaml"),
        )
        sdk = gateway.sdk()
        video = sdk.videos.create_and_poll(model=model, prompt="a heron", seconds="5")
        assert video.status == "completed"
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.videos.download_content(video.id)
        assert caught.value.status_code == 404
        assert caught.value.body["code"] == "video_content_expired"  # type: ignore[index]
        links = [c for c in state.calls if c.method == "GET" and c.path.startswith("/oss/")]
        links = links or [c for c in state.calls if c.method == "GET" and "result" in c.path]
        assert links and links[-1].status == 403  # the upstream said so, to a keyless fetch
        assert "authorization" not in links[-1].headers


# Muse's looks and camera techniques (docs.laozhang.ai/en/announcements/muse-video-styles-
# 2026-11.md): catalog data, checked before anything is sent.
LOOKS = ["cinematic_realistic", "2d_anime", "3d_xianxia", "american_comic", "cyberpunk_neon"]
LOOKS += ["ecommerce_ugc"]


def test_muse_looks_and_camera_techniques_reach_muse(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    # A list through the Python SDK (multipart `skill_preset[]` parts), on a longer model too.
    raw = sdk.videos.with_raw_response.create(
        model="muse-video-30s",
        prompt="a duel on a bamboo roof",
        extra_body={
            "style_preset": "3d_xianxia",
            "skill_preset": ["xianxia_speed_ramp", "whip_pan"],
            "custom_style": "jade and gold",
            "custom_skill": "a slow push-in on the last blow",
        },
    )
    assert "x-mediagate-dropped" not in raw.headers
    video = sdk.videos.poll(raw.parse().id)
    assert (video.status, video.model, video.seconds) == ("completed", "muse-video-30s", "30")
    # Comma strings (spaces trimmed) and `none` alone, as JSON.
    with gw.http() as http:
        for skills in ("whip_pan, cut_on_action", "none"):
            body = {"model": "muse-video", "prompt": "p", "skill_preset": skills}
            assert http.post("/v1/videos", json=body).status_code == 200
        body = {"model": "muse-video", "prompt": "p", "skill_preset": ["occlusion_wipe"]}
        assert http.post("/v1/videos", json=body).status_code == 200
    first, *others = posts(sim, "/v1/videos")
    assert {k: first.body[k] for k in ("model", "style_preset", "skill_preset")} == {
        "model": "muse-video-30s",
        "style_preset": "3d_xianxia",
        "skill_preset": "xianxia_speed_ramp,whip_pan",  # one field, ids separated by commas
    }
    assert (first.body["custom_style"], first.body["custom_skill"]) == (
        "jade and gold",
        "a slow push-in on the last blow",
    )
    sent = [call.body["skill_preset"] for call in others]
    assert sent == ["whip_pan,cut_on_action", "none", "occlusion_wipe"]
    assert cost(gw, video.id) == pytest.approx(0.80)  # the price is unchanged


@pytest.mark.parametrize(
    ("extra", "param", "code", "says"),
    [
        ({"style_preset": "watercolor"}, "style_preset", "invalid_value", LOOKS),
        ({"style_preset": "2d_anime,cyberpunk_neon"}, "style_preset", "invalid_value", LOOKS),
        (
            {"skill_preset": ["whip_pan", "dolly_zoom"]},
            "skill_preset",
            "invalid_value",
            ["'dolly_zoom' is not an id muse-video takes", "'whip_pan'", "'none'"],
        ),
        (
            {"skill_preset": "none,whip_pan"},
            "skill_preset",
            "invalid_value",
            ["'none' stands alone"],
        ),
        ({"skill_preset": "whip_pan,,cut_on_action"}, "skill_preset", "invalid_value", []),
        ({"custom_style": "s" * 2001}, "custom_style", "string_above_max_length", ["2000"]),
        ({"custom_skill": ""}, "custom_skill", "invalid_value", []),
    ],
)
def test_an_unlisted_muse_id_is_a_400_naming_the_listed_ones(
    gw: Gateway, sim: Sim, extra: dict[str, Any], param: str, code: str, says: list[str]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.sdk().videos.create(model="muse-video", prompt="p", extra_body=extra)
    assert (caught.value.param, caught.value.code) == (param, code)
    for text in says:
        assert text in caught.value.message
    assert sim.sent() == []  # nothing upstream, nothing reserved or charged
    with gw.http() as http:
        assert http.get("/v1/usage").json()["totals"]["cost_usd"] == 0


def test_an_operator_adds_a_muse_look_the_docs_do_not_show(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    # The announcement has 7 looks but names 6: an operator who learns the 7th lists it in a
    # catalog override, per route (each Muse model is a route of its own).
    overlay = tmp_path / "looks.yaml"
    options = {"style_preset": {"values": [*LOOKS, "noir_mono"]}}
    overlay.write_text(
        json.dumps({"routes": {"muse-video": {"video": {"options": options}}}})  # JSON is YAML
    )
    sdk = make_gateway(config=overlay).sdk()
    # muse-video now sends it (the simulator, which knows only the documented ids, refuses it
    # as the upstream would refuse an id it does not have: a 400, no task, no charge).
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.create(model="muse-video", prompt="p", extra_body={"style_preset": "noir_mono"})
    [create] = posts(sim, "/v1/videos")
    assert create.body["style_preset"] == "noir_mono"
    assert "noir_mono" in caught.value.message and not sim.state.videos
    # Another Muse route without the override still refuses it, naming what it takes.
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.create(
            model="muse-video-20s", prompt="p", extra_body={"style_preset": "noir_mono"}
        )
    assert caught.value.param == "style_preset" and "'ecommerce_ugc'" in caught.value.message
    assert len(posts(sim, "/v1/videos")) == 1

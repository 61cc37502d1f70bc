"""The video dialects and the request planner, pure: the upstream payloads as the upstream docs
show them (upstream-2026/muse.md, seedance-2.md, wan-2-7.md) read into the neutral record, and
an OpenAI request mapped onto each route's policy. No network."""

from __future__ import annotations

from typing import Any

import pytest

from mediagate.accounting.pricing import video_cost, video_estimate
from mediagate.catalog import DIALECTS, VIDEO_DIALECTS, load_catalog
from mediagate.errors import InvalidRequest, UpstreamError
from mediagate.upstream.dialects import registered, video_dialect
from mediagate.upstream.dialects.videos import Reference, VideoSpec
from mediagate.videos.spec import openai_size, plan_video

CATALOG = load_catalog()
NOW = 1_790_000_000.0


def route(name: str) -> Any:
    return CATALOG.routes[name]


def test_muse_reads_its_video_object_and_keeps_the_link() -> None:
    muse = video_dialect("muse")
    payload = {"id": "task_1", "status": "completed", "video_url": "https://cdn.example/v.mp4"}
    video = muse.parse(payload, route("muse-video"), NOW)
    assert (video.status, video.progress, video.result_url) == (
        "completed",
        100,
        "https://cdn.example/v.mp4",
    )
    assert video.expires_at == int(NOW) + 7 * 86400  # Muse keeps links 7 days
    failed = muse.parse({"id": "t", "status": "failed"}, route("muse-video"), NOW)
    assert failed.error is not None and failed.error["code"] == "video_generation_failed"
    with pytest.raises(UpstreamError):
        muse.parse({"id": "t", "status": "exploded"}, route("muse-video"), NOW)
    assert muse.build_delete(route("muse-video"), "t") is None


def test_ark_maps_statuses_usage_and_expiry() -> None:
    ark = video_dialect("ark")
    seedance = route("seedance-2.0")
    assert ark.parse({"id": "cgt-1"}, seedance, NOW).status == "queued"  # a create's answer
    assert ark.parse({"id": "cgt-1", "status": "running"}, seedance, NOW).status == "in_progress"
    done = ark.parse(
        {
            "id": "cgt-1",
            "status": "succeeded",
            "content": {"video_url": "https://tos.example/v.mp4?sig=1"},
            "usage": {"completion_tokens": 108900},
        },
        seedance,
        NOW,
    )
    assert (done.status, done.output_tokens, done.result_url) == (
        "completed",
        108900,
        "https://tos.example/v.mp4?sig=1",
    )
    expired = ark.parse({"id": "cgt-1", "status": "expired"}, seedance, NOW)
    assert expired.status == "failed" and expired.error == {
        "code": "video_expired",
        "message": "The upstream let the task expire before it finished.",
    }
    request = ark.build_status(seedance, "cgt-1")
    assert request.root and request.path == "/seedance/api/v3/contents/generations/tasks/cgt-1"


def test_dashscope_builds_async_creates_and_reads_top_level_status() -> None:
    dash = video_dialect("dashscope")
    wan = route("wan2.7-i2v")
    spec = VideoSpec("p", "1280x720", 8, "16:9", "720P", {"seed": 3})
    reference = Reference(b"\x89PNG", "image/png", 1280, 720)
    request = dash.build_create(wan, spec, reference)
    assert request.headers == {"X-DashScope-Async": "enable"} and request.root
    assert request.json is not None
    assert request.json["parameters"] == {"resolution": "720P", "duration": 8, "seed": 3}
    assert request.json["input"]["media"] == [
        {"type": "first_frame", "url": "data:image/png;base64,iVBORw=="}
    ]
    created = dash.parse({"output": {"task_id": "t-1", "task_status": "PENDING"}}, wan, NOW)
    assert (created.id, created.status) == ("t-1", "queued")
    done = dash.parse(
        {
            "task_id": "t-1",
            "status": "completed",
            "result_url": "https://oss.example/r.mp4?Signature=x",
            "usage": {"duration": 8},
        },
        wan,
        NOW,
    )
    assert (done.status, done.actual_seconds) == ("completed", 8.0)
    assert dash.build_content(wan, "t-1", "video", {}) is None  # the signed link, keyless
    assert dash.build_remix(wan, "t-1", spec) is None


def test_prices_per_family() -> None:
    muse = route("muse-video").video.price
    assert video_estimate(muse, "1280x720", 10) == video_cost(muse, "1280x720", 10) == 0.30
    seedance = route("seedance-2.0").video.price
    assert video_cost(seedance, "720p", 5, output_tokens=108_900) == pytest.approx(0.858132)
    assert video_cost(seedance, "720p", 5, output_tokens=100, input_video=True) == pytest.approx(
        100 * 4.80 / 1e6
    )
    assert video_estimate(seedance, "1080p", 5) == pytest.approx(49_005 * 5 * 8.74 / 1e6)
    wan = route("wan3.0-video").video.price
    assert video_cost(wan, "1080P", 10, actual_seconds=10) == pytest.approx(2.057)
    assert video_cost(wan, "720P", 10, actual_seconds=4.2) == pytest.approx(5 * 0.1028)


def test_plan_maps_size_and_seconds_and_sorts_options() -> None:
    known = CATALOG.video_options
    plan = plan_video(
        {"prompt": "p", "size": "1792x1024", "seconds": "12", "seed": "9", "negative_prompt": 1},
        route("seedance-2.0"),
        "seedance-2.0",
        known=known,
    )
    assert (plan.spec.size, plan.spec.ratio, plan.spec.resolution) == ("1920x1080", "16:9", "1080p")
    assert plan.spec.seconds == 12 and plan.spec.options == {"seed": 9}
    # An option of another family (Wan's) is dropped and named; a name no route takes is a 400.
    assert plan.mapped == ["size=1792x1024>1920x1080"] and plan.dropped == ["negative_prompt"]
    with pytest.raises(InvalidRequest) as unknown:
        plan_video({"prompt": "p", "fps": 30}, route("seedance-2.0"), "seedance-2.0", known=known)
    assert (unknown.value.code, unknown.value.param) == ("unknown_parameter", "fps")
    tier = plan_video(
        {"prompt": "p", "size": "1280x720", "resolution": "480p"},
        route("seedance-2.0"),
        "seedance-2.0",
        known=known,
    )
    assert tier.spec.size == "864x496" and tier.spec.resolution == "480p"
    muse = plan_video(
        {"prompt": "p", "seconds": "4"}, route("muse-video"), "muse-video", known=known
    )
    assert (muse.spec.seconds, muse.mapped) == (5, ["seconds=4>5"])
    assert (
        plan_video(
            {"prompt": "p", "seconds": 8}, route("muse-video"), "muse-video", known=known
        ).spec.seconds
        == 8
    )
    with pytest.raises(InvalidRequest):
        plan_video({"prompt": "p", "seconds": "20"}, route("muse-video"), "muse-video", known=known)
    with pytest.raises(InvalidRequest):
        plan_video({"prompt": "p"}, route("wan2.7-t2v"), "wan2.7-t2v", known=known, reference=True)
    assert openai_size("1920x1080") == "1792x1024" and openai_size("1080x1920") == "1024x1792"


def test_seedance_2_5_sends_an_adaptive_ratio_with_a_first_frame() -> None:
    ark = video_dialect("ark")
    spec = VideoSpec("p", "1280x720", 5, "16:9", "720p")
    reference = Reference(b"\x89PNG", "image/png", 1280, 720)
    with_frame = ark.build_create(route("seedance-2.5"), spec, reference).json
    without = ark.build_create(route("seedance-2.5"), spec, None).json
    assert with_frame is not None and without is not None
    assert (with_frame["ratio"], without["ratio"]) == ("adaptive", "16:9")
    standard = ark.build_create(route("seedance-2.0"), spec, reference).json
    assert standard is not None and standard["ratio"] == "16:9"


def test_the_catalog_knows_exactly_the_dialects_there_are() -> None:
    """The catalog (the bottom layer, which cannot import the dialects) validates a route's
    `dialect:` against its own list of names: that list and the registry agree."""
    images, videos = registered()
    assert videos == VIDEO_DIALECTS
    assert images | videos == DIALECTS
    assert not images & videos

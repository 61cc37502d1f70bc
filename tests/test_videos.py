"""The Videos API through the real OpenAI SDK, against the simulated upstream, on both job
stores: create_and_poll, download_content, list, delete, remix, ownership and failures."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from mediagate.simulator.videofiles import mp4
from mediagate.stores import open_stores
from mediagate.stores.jobs import VideoJob

from .conftest import (
    CLIENT_KEY,
    GROUP_KEYS,
    OTHER_CLIENT_KEY,
    Gateway,
    Sim,
    assert_error,
    fast_video_polls,
)
from .test_catalog import sample

# The SDK marks the Sora API deprecated; the warning says nothing about the gateway.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
MIB = 1024 * 1024


@pytest.fixture
def sdk(videos_gw: Gateway) -> openai.OpenAI:
    return videos_gw.sdk()


def stored(gateway: Gateway, video_id: str) -> VideoJob:
    """Our record of a job, read from the store the way another replica would."""
    settings = gateway.settings

    async def read() -> VideoJob | None:
        async with open_stores(
            settings.records_url(), settings.store_prefix, redis_url=settings.redis_url
        ) as stores:
            return await stores.jobs.get(video_id)

    job = asyncio.run(read())
    assert job is not None
    return job


def upstream_creates(sim: Sim) -> list[Any]:
    return [c for c in sim.sent("/v1/videos") if c.method == "POST"]


def only_upstream_video(sim: Sim) -> Any:
    videos = list(sim.state.videos.values())
    assert len(videos) == 1
    return videos[0]


def test_create_and_poll_then_download(sdk: openai.OpenAI, videos_gw: Gateway, sim: Sim) -> None:
    video = sdk.videos.create_and_poll(
        model="muse-video", prompt="a lighthouse at dusk", size="1280x720", seconds="8"
    )
    assert video.status == "completed" and video.progress == 100
    assert (video.model, video.size, video.seconds) == ("muse-video", "1280x720", "8")
    assert video.completed_at and video.expires_at and video.error is None
    # Muse keeps its links 7 days: the video's assets expire then.
    assert video.expires_at - video.completed_at == 7 * 86400
    upstream = only_upstream_video(sim)
    assert video.id.startswith("video_") and video.id != upstream.id  # ours, not theirs
    assert upstream.id not in str(video.to_dict())

    [create] = upstream_creates(sim)
    assert create.group == "default"
    assert create.body == {
        "model": "muse-video",
        "prompt": "a lighthouse at dusk",
        "size": "1280x720",
        "seconds": "8",
    }
    content = sdk.videos.download_content(video.id)
    # The upstream's real clip (H.264 in MP4, tests/test_simulator_media.py), byte for byte.
    assert content.content == mp4(upstream.clip)
    assert content.response.headers["content-type"] == "video/mp4"
    assert content.content[4:8] == b"ftyp"

    job = stored(videos_gw, video.id)
    assert (job.upstream_id, job.owner, job.group, job.route) == (
        upstream.id,
        "team-a",
        "default",
        "muse-video",
    )
    assert job.status == "completed" and job.cost == pytest.approx(0.30)  # per video, flat
    assert GROUP_KEYS["default"] not in repr(job)  # a fingerprint, never the key


def test_defaults_are_sent_explicitly_and_poll_pace_is_advised(
    sdk: openai.OpenAI, sim: Sim
) -> None:
    raw = sdk.videos.with_raw_response.create(prompt="[sim:render=5] a slow one")
    video = raw.parse()
    assert video.status in ("queued", "in_progress")
    assert raw.headers["openai-poll-after-ms"] == "50"  # the route's interval (overlaid)
    assert raw.headers["x-mediagate-route"] == "muse-video"
    assert (video.model, video.size, video.seconds) == ("muse-video", "1280x720", "10")
    [create] = upstream_creates(sim)
    assert create.body == {
        "model": "muse-video",
        "prompt": "[sim:render=5] a slow one",
        "size": "1280x720",
        "seconds": "10",
    }
    polled = sdk.videos.with_raw_response.retrieve(video.id)
    assert polled.headers["openai-poll-after-ms"] == "50"


def test_a_finished_job_carries_no_poll_advice(sdk: openai.OpenAI) -> None:
    video = sdk.videos.create_and_poll(prompt="quick")
    raw = sdk.videos.with_raw_response.retrieve(video.id)
    assert raw.parse().status == "completed"
    assert "openai-poll-after-ms" not in raw.headers


def test_json_create_is_sent_upstream_as_multipart(videos_gw: Gateway, sim: Sim) -> None:
    with videos_gw.http() as http:
        response = http.post("/v1/videos", json={"prompt": "json", "seconds": 8, "size": None})
    assert response.status_code == 200, response.text
    assert response.json()["seconds"] == "8"
    [create] = upstream_creates(sim)
    assert create.body["seconds"] == "8" and create.body["size"] == "1280x720"


def test_another_clients_key_sees_nothing(videos_gw: Gateway, sdk: openai.OpenAI, sim: Sim) -> None:
    video = sdk.videos.create_and_poll(prompt="mine")
    other = videos_gw.sdk(api_key=OTHER_CLIENT_KEY)
    calls_before = len(sim.sent())
    for attempt in (
        lambda: other.videos.retrieve(video.id),
        lambda: other.videos.download_content(video.id),
        lambda: other.videos.delete(video.id),
        lambda: other.videos.remix(video.id, prompt="steal"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            attempt()
        assert caught.value.code == "video_not_found"
    assert other.videos.list().data == []
    assert len(sim.sent()) == calls_before  # refused without asking the upstream
    assert sdk.videos.retrieve(video.id).status == "completed"


def test_unknown_ids_are_404_in_the_openai_shape(videos_gw: Gateway, sim: Sim) -> None:
    with videos_gw.http() as http:
        for path in (
            "/v1/videos/video_0123456789abcdef0123456789abcdef",
            "/v1/videos/not-an-id/content",
            "/v1/videos/..%2F..%2Fetc",
        ):
            response = http.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "invalid_request_error"
    assert sim.sent() == []


def test_list_pages_through_the_callers_jobs_only(videos_gw: Gateway, sdk: openai.OpenAI) -> None:
    mine = [sdk.videos.create(prompt=f"[sim:render=5] job {i}").id for i in range(3)]
    videos_gw.sdk(api_key=OTHER_CLIENT_KEY).videos.create(prompt="theirs")

    page = sdk.videos.list(limit=2)
    assert [v.id for v in page.data] == [mine[2], mine[1]]
    assert page.has_more is True
    assert [v.id for v in sdk.videos.list(limit=2)] == mine[::-1]  # the SDK follows last_id
    assert [v.id for v in sdk.videos.list(order="asc")] == mine
    assert all(v.status in ("queued", "in_progress") for v in page.data)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.list(after="video_0123456789abcdef0123456789abcdef")
    assert caught.value.param == "after"


def test_an_upstream_failure_is_a_failed_job_with_its_error(
    sdk: openai.OpenAI, videos_gw: Gateway
) -> None:
    video = sdk.videos.create_and_poll(prompt="[sim:fail=moderation_blocked] nope")
    assert video.status == "failed"
    assert video.error is not None and video.error.code == "moderation_blocked"
    assert video.error.message
    job = stored(videos_gw, video.id)
    assert job.status == "failed" and job.cost == 0.0
    with pytest.raises(openai.BadRequestError):
        sdk.videos.download_content(video.id)


def test_a_refused_create_records_nothing(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.videos.create(prompt="[sim:status=503] down")
    assert caught.value.status_code == 502
    assert sdk.videos.list().data == []


def test_a_job_the_upstream_forgot_is_404(sdk: openai.OpenAI, sim: Sim) -> None:
    video = sdk.videos.create_and_poll(prompt="ephemeral")
    sim.state.forget_videos()
    time.sleep(0.1)  # past the poll interval (50 ms): the next retrieve asks the upstream
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.videos.retrieve(video.id)
    assert caught.value.code == "video_not_found"
    assert isinstance(caught.value.body, dict) and set(caught.value.body) >= {"message", "type"}
    with pytest.raises(openai.NotFoundError):
        sdk.videos.download_content(video.id)


def test_delete(sdk: openai.OpenAI, sim: Sim) -> None:
    # Muse documents no delete: the job is hidden here (its record stays, it was paid for),
    # and the upstream is not asked.
    busy = sdk.videos.create(prompt="[sim:render=5] still working")
    video = sdk.videos.create_and_poll(prompt="short-lived")
    deleted = sdk.videos.delete(video.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
    assert [c for c in sim.sent() if c.method == "DELETE"] == []
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(video.id)
    assert [v.id for v in sdk.videos.list()] == [busy.id]


def test_remix(sdk: openai.OpenAI, sim: Sim) -> None:
    # Muse continues a clip: a new create with the source's link as `video_url`, the model
    # naming the total length, which must exceed the source's.
    source = sdk.videos.create_and_poll(prompt="a fox", model="muse-video", seconds="8")
    remix = sdk.videos.remix(source.id, prompt="the fox, in snow")
    assert remix.remixed_from_video_id == source.id
    assert (remix.size, remix.seconds, remix.model) == ("1280x720", "10", "muse-video")
    done = sdk.videos.poll(remix.id)
    assert done.status == "completed" and done.prompt == "the fox, in snow"
    call = upstream_creates(sim)[-1]
    source_upstream = next(v for v in sim.state.videos.values() if v.prompt == "a fox")
    assert call.body == {
        "model": "muse-video",
        "prompt": "the fox, in snow",
        "video_url": source_upstream.link(),
        "size": "1280x720",
        "seconds": "10",
    }
    assert call.group == "default"
    assert sdk.videos.download_content(done.id).content[4:8] == b"ftyp"
    # A 10 s clip cannot be continued by muse-video (10 s at most): a 400 before any call.
    calls = len(sim.sent())
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.remix(done.id, prompt="longer still")
    assert caught.value.code == "remix_unsupported" and "muse-video-20s" in caught.value.message
    assert len(sim.sent()) == calls


def test_thumbnail_spritesheet_and_ranges(videos_gw: Gateway, sdk: openai.OpenAI, sim: Sim) -> None:
    video = sdk.videos.create_and_poll(prompt="stills", size="1280x720")
    calls = len(sim.sent())
    for variant in ("thumbnail", "spritesheet"):  # Muse makes neither: a clear 404
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.videos.download_content(video.id, variant=variant)  # type: ignore[arg-type]
        assert caught.value.code == "variant_not_available"
    assert len(sim.sent()) == calls

    full = sdk.videos.download_content(video.id).content
    total = len(full)
    assert full == mp4(only_upstream_video(sim).clip)
    with videos_gw.http() as http:
        path = f"/v1/videos/{video.id}/content"
        part = http.get(path, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-199/{total}"
        assert part.headers["content-length"] == "100" and part.content == full[100:200]
        assert part.headers["accept-ranges"] == "bytes"
        tail = http.get(path, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == full[-10:]
        beyond = http.get(path, headers={"Range": f"bytes={total}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{total}"
        bad = http.get(path, params={"variant": "poster"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "variant"


def test_content_before_completion_is_a_400_without_asking_the_upstream(
    sdk: openai.OpenAI, sim: Sim
) -> None:
    video = sdk.videos.create(prompt="[sim:render=5] not yet")
    calls = len(sim.sent())
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.download_content(video.id)
    assert caught.value.code == "video_not_ready"
    assert "queued" in caught.value.message or "in_progress" in caught.value.message
    assert len(sim.sent()) == calls  # the record says it is running: nothing asked upstream


def test_final_state_and_cost_are_recorded_once_across_replicas(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> None:
    overlay = fast_video_polls(tmp_path / "polls.yaml", 0.01)
    replicas = [make_gateway(video_poll_after_ms=10, config=overlay, **job_store) for _ in range(2)]
    first = replicas[0].sdk()
    video = first.videos.create(prompt="[sim:render=0.3] contested", seconds="12")
    errors: list[BaseException] = []

    def poll(gateway: Gateway) -> None:
        try:
            assert gateway.sdk().videos.poll(video.id).status == "completed"
        except BaseException as exc:
            errors.append(exc)

    pollers = [threading.Thread(target=poll, args=(replicas[i % 2],)) for i in range(8)]
    for thread in pollers:
        thread.start()
    for thread in pollers:
        thread.join()
    assert errors == []

    finished = 0.0
    for gateway in replicas:
        text = httpx2.get(f"{gateway.url}/metrics").text
        for line in text.splitlines():
            if line.startswith("mediagate_videos_finished_total{"):
                finished += float(line.rsplit(" ", 1)[1])
    assert finished == 1
    job = stored(replicas[1], video.id)
    assert job.status == "completed" and job.cost == pytest.approx(0.30)


def test_a_job_keeps_using_the_key_that_created_it(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    # Two keys for the group, the second one unknown upstream: a gateway that took the next
    # key in turn for the polls would be refused every other call.
    good = GROUP_KEYS["default"]
    overlay = fast_video_polls(tmp_path / "polls.yaml", 0.02)
    gateway = make_gateway(key_default=f"{good},sk-not-known-upstream", config=overlay)
    sdk = gateway.sdk()
    video = sdk.videos.create_and_poll(prompt="pinned")
    assert video.status == "completed"
    assert sdk.videos.download_content(video.id).content == mp4(only_upstream_video(sim).clip)
    assert all(c.status == 200 for c in sim.sent())


def test_video_metrics_and_models(videos_gw: Gateway, sdk: openai.OpenAI) -> None:
    sdk.videos.create_and_poll(prompt="counted", seconds="8")
    offered = {m.id for m in sdk.models.list().data}
    assert {"muse-video", "muse-video-60s", "seedance-2.0", "wan2.7-i2v"} <= offered
    text = httpx2.get(f"{videos_gw.url}/metrics").text
    finished = 'mediagate_videos_finished_total{model="muse-video",route="muse-video",'
    assert finished + 'status="completed"} 1.0' in text
    assert 'mediagate_video_seconds_total{model="muse-video",route="muse-video"} 8.0' in text
    created = {
        "endpoint": "videos.create",
        "model": "muse-video",
        "route": "muse-video",
        "status": "200",
    }
    assert sample(text, "mediagate_requests_total", **created) == 1.0
    retrieved = {**created, "endpoint": "videos.retrieve"}
    assert (sample(text, "mediagate_requests_total", **retrieved) or 0) >= 1
    # The completed job's cost (Muse: $0.30 a video) is booked to the key that created it.
    assert sample(text, "mediagate_cost_usd_total", model="muse-video") == pytest.approx(0.30)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.fixture
def sqlite_gw(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    return make_gateway(config=fast_video_polls(tmp_path / "polls.yaml", 0.02))


def test_a_large_download_streams_with_flat_memory(sqlite_gw: Gateway) -> None:
    size = 256 * MIB
    sdk = sqlite_gw.sdk()
    video = sdk.videos.create_and_poll(prompt=f"[sim:bytes={size}] long take")
    peak = baseline = rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, rss_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    received = 0
    try:
        # Gateway, simulator and client all live in this process, so its RSS bounds them all.
        with sdk.videos.with_streaming_response.download_content(video.id) as response:
            assert response.headers["content-length"] == str(size)
            for chunk in response.iter_bytes(256 * 1024):
                received += len(chunk)
    finally:
        done.set()
        sampler.join()
    assert received == size
    assert peak - baseline < 64 * MIB, f"RSS grew {(peak - baseline) / MIB:.0f} MiB"


def test_a_client_leaving_mid_download_frees_the_upstream_connection(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    # Two upstream connections in all: if an abandoned download kept its own, the third
    # download would wait for a free connection forever.
    overlay = fast_video_polls(tmp_path / "polls.yaml", 0.02)
    gateway = make_gateway(config=overlay, max_connections=2)
    video = gateway.sdk().videos.create_and_poll(prompt=f"[sim:bytes={64 * MIB}] long")
    with httpx2.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10
    ) as http:
        for _ in range(6):
            with http.stream("GET", f"/v1/videos/{video.id}/content") as response:
                assert response.status_code == 200
                next(response.iter_raw(64 * 1024))  # one chunk, then hang up
        tail = http.get(f"/v1/videos/{video.id}/content", headers={"Range": "bytes=-5"})
        assert tail.status_code == 206 and len(tail.content) == 5


@pytest.fixture(autouse=True)
def _quiet_sdk_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def test_bad_requests_are_400s_that_never_reach_the_upstream(
    videos_gw: Gateway, sdk: openai.OpenAI, sim: Sim
) -> None:
    cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str | None]] = [
        ({"model": "sora-3"}, openai.NotFoundError, "model"),
        ({"model": "gpt-image-1"}, openai.BadRequestError, "model"),
        ({"seconds": "3"}, openai.BadRequestError, "seconds"),  # muse-video: 4-12 map
        ({"seconds": "13"}, openai.BadRequestError, "seconds"),
        ({"seconds": "10", "model": "muse-video-20s"}, openai.BadRequestError, "seconds"),
        ({"size": "big"}, openai.BadRequestError, "size"),
        ({"prompt": "x" * 32001}, openai.BadRequestError, "prompt"),
        ({"prompt": "   "}, openai.BadRequestError, "prompt"),
        ({"model": "wan2.7-t2v", "prompt": "x" * 801}, openai.BadRequestError, "prompt"),
        ({"model": "seedance-2.0", "extra_body": {"seed": "x"}}, openai.BadRequestError, "seed"),
        (
            {"model": "seedance-2.0-mini", "extra_body": {"resolution": "1080p"}},
            openai.BadRequestError,
            "resolution",
        ),
        ({"extra_body": {"last_frame": "ftp://x"}}, openai.BadRequestError, "last_frame"),
    ]
    for overrides, error, param in cases:
        arguments: dict[str, Any] = {"prompt": "fine", **overrides}
        with pytest.raises(error) as caught:
            sdk.videos.create(**arguments)
        assert caught.value.status_code in (400, 404), overrides
        assert caught.value.param == param, overrides
        if overrides.get("model") == "muse-video-20s":  # a fixed length: nothing maps
            assert "muse-video-20s makes exactly 20 seconds." in caught.value.message
    with videos_gw.http() as http:
        for response in (
            http.post("/v1/videos", content=b"prompt=x", headers={"content-type": "text/plain"}),
            http.post(
                "/v1/videos", content=b"{not json", headers={"content-type": "application/json"}
            ),
            http.post("/v1/videos", json=["a list"]),
            http.post("/v1/videos", json={"model": "sora-2"}),
            http.post("/v1/videos", json={"prompt": "x", "input_reference": {"file_id": "f"}}),
            http.post("/v1/videos", json={"prompt": "x", "input_reference": "a string"}),
            # The Node SDK's spelling of a reference object in multipart.
            http.post(
                "/v1/videos",
                files={"prompt": (None, "x"), "input_reference[file_id]": (None, "file_1")},
            ),
            http.get("/v1/videos", params={"limit": "0"}),
            http.get("/v1/videos", params={"limit": "101"}),
            http.get("/v1/videos", params={"order": "sideways"}),
            http.get("/v1/videos", params={"before": "x"}),
        ):
            assert response.status_code == 400, response.text
            assert response.json()["error"]["message"]
    assert sim.sent() == []


def test_an_unknown_field_is_a_400_before_anything_is_sent_or_paid(
    gateway: Gateway, sim: Sim
) -> None:
    """A create naming a field no video route takes is refused, as OpenAI and the image
    endpoints do, before the upstream makes (and charges for) a job: its name used to go into
    x-mediagate-dropped after the paid call, and a name with CR/LF or outside latin-1 broke the
    answer (kept broken under an Idempotency-Key)."""
    evil = b'{"\\r\\nx-evil":1,"prompt":"p","model":"muse-video","seconds":"8"}'
    with gateway.http() as http:
        for attempt in range(2):  # the repeat is the same clean 400
            response = http.post(
                "/v1/videos",
                content=evil,
                headers={"content-type": "application/json", "idempotency-key": "k1"},
            )
            message = assert_error(response, 400, "\\r\\nx-evil", "unknown_parameter")
            assert message == "Unknown parameter: '\\r\\nx-evil'.", attempt
            assert "x-mediagate-dropped" not in response.headers
        long = "\u20ac" + "z" * 500
        body = {"prompt": "p", "model": "muse-video", long: 1}
        response = http.post("/v1/videos", json=body)
        param = "\\u20ac" + "z" * 63 + "..."
        assert_error(response, 400, param, "unknown_parameter")
        # Multipart, as the SDKs send a create with a file: the same rule.
        form = {"prompt": (None, "p"), "fps": (None, "30")}
        assert_error(http.post("/v1/videos", files=form), 400, "fps", "unknown_parameter")
    assert sim.sent() == []

    # An option of another family is still dropped and named (a Wan option on Muse), and the
    # OpenAI fields pass.
    raw = gateway.sdk().videos.with_raw_response.create(
        model="muse-video", prompt="p", seconds="8", extra_body={"negative_prompt": "fog"}
    )
    assert raw.headers["x-mediagate-dropped"] == "negative_prompt"

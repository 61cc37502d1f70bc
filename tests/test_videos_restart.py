"""A job outlives the gateway process: kill -9 right after create returns, start another
gateway on the same store, and the client polls and downloads as if nothing happened."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import openai
import pytest

from mediagate.simulator.videofiles import mp4

from .conftest import CLIENT_KEY, GROUP_KEYS, OTHER_CLIENT_KEY, Sim
from .processes import clean_env, serving

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_job_survives_kill_9_right_after_create(
    sim: Sim, tmp_path: Path, job_store: dict[str, str]
) -> None:
    env = clean_env(
        job_store,
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEY_OPENAIOFFICIAL=GROUP_KEYS["OpenAI Official"],
        MEDIAGATE_API_KEYS=f"team-a:{CLIENT_KEY},team-b:{OTHER_CLIENT_KEY}",
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_VIDEO_POLL_AFTER_MS="50",
        MEDIAGATE_VIDEO_POLL_OVERRIDE_MS="50",  # Muse's own pace is 15 s
    )

    with serving(["serve"], env, tmp_path) as gateway:
        first = gateway.proc
        sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        video = sdk.videos.create(prompt="[sim:render=0.5] survive", seconds="8")
        os.kill(first.pid, signal.SIGKILL)  # no shutdown, no flush: the answer was the promise
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert video.status in ("queued", "in_progress")

    with serving(["serve"], env, tmp_path) as gateway:
        url = gateway.url
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
        done = sdk.videos.poll(video.id)
        assert done.status == "completed" and done.seconds == "8"
        [upstream] = sim.state.videos.values()
        assert sdk.videos.download_content(video.id).content == mp4(upstream.clip)
        assert [v.id for v in sdk.videos.list()] == [video.id]
        other = openai.OpenAI(base_url=f"{url}/v1", api_key=OTHER_CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.videos.retrieve(video.id)
    assert len([c for c in sim.sent("/v1/videos") if c.method == "POST"]) == 1

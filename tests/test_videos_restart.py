"""A job outlives the gateway process: kill -9 right after create returns, start another
gateway on the same store, and the client polls and downloads as if nothing happened."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY, GROUP_KEYS, OTHER_CLIENT_KEY, Sim

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway_process(
    env: dict[str, str], cwd: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    log = (cwd / f"gateway-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (cwd / f"gateway-{port}.log").read_text()
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not start listening"
                time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log.close()


def test_a_job_survives_kill_9_right_after_create(
    sim: Sim, tmp_path: Path, job_store: dict[str, str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGATE_")}
    env.update(
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEY_SORA2OFFICIAL=GROUP_KEYS["Sora2Official"],
        MEDIAGATE_API_KEYS=f"team-a:{CLIENT_KEY},team-b:{OTHER_CLIENT_KEY}",
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_VIDEO_POLL_AFTER_MS="50",
    )
    env.update({f"MEDIAGATE_{name.upper()}": value for name, value in job_store.items()})

    with gateway_process(env, tmp_path) as (first, url):
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
        video = sdk.videos.create(prompt="[sim:render=0.5] survive", seconds="8")
        os.kill(first.pid, signal.SIGKILL)  # no shutdown, no flush: the answer was the promise
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert video.status in ("queued", "in_progress")

    with gateway_process(env, tmp_path) as (_, url):
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
        done = sdk.videos.poll(video.id)
        assert done.status == "completed" and done.seconds == "8"
        assert len(sdk.videos.download_content(video.id).content) == 1024 * 1024
        assert [v.id for v in sdk.videos.list()] == [video.id]
        other = openai.OpenAI(base_url=f"{url}/v1", api_key=OTHER_CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.videos.retrieve(video.id)
    assert len([c for c in sim.sent("/v1/videos") if c.method == "POST"]) == 1

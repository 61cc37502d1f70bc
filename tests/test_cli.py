"""The newcomer's path, as a separate process: `python -m app serve` with nothing configured
serves the simulated upstream offline, and `mediagate simulate` runs the simulator alone."""

from __future__ import annotations

import base64
import gc
import io
import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from PIL import Image

from mediagate.app import create_app
from mediagate.cli import _freeze_heap
from mediagate.servethread import BackgroundServer
from mediagate.simulator import DEFAULT_SIM_KEYS

from .conftest import Sim, gateway_settings
from .processes import clean_env, free_port, serving


# Prompts are logged by default in simulator mode (fake images), unless turned off.
@pytest.mark.parametrize("log_prompts", ["false", None])
def test_serve_with_nothing_configured_runs_offline(
    tmp_path: Path, log_prompts: str | None
) -> None:
    env = clean_env(MEDIAGATE_DATA_DIR=str(tmp_path / "data"))
    if log_prompts is not None:
        env["MEDIAGATE_LOG_PROMPTS"] = log_prompts
    off = log_prompts == "false"
    with serving(["serve"], env, tmp_path) as gateway:
        # The README's five lines: any api_key works because simulator mode has no client keys.
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="anything")
        result = client.images.generate(model="sora_image", prompt="a red panda", size="1024x1536")
        image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
        assert image.size == (1024, 1536)
        offered = {m.id for m in client.models.list().data}
        assert offered >= {"gpt-image-2", "gpt-image-2.5-sunburst", "gpt-image-2.6-sunburst"}
        # The live video families too, each polled at the simulator's pace (not Muse's 15 s).
        assert offered >= {"muse-video", "seedance-2.0", "wan2.7-t2v", "sora-2"}
        if off:
            for model in ("muse-video", "seedance-2.0", "wan2.7-t2v"):
                video = client.videos.create_and_poll(model=model, prompt="a kite", timeout=20)
                assert video.status == "completed", model
                assert client.videos.download_content(video.id).content[4:8] == b"ftyp"
    stderr = gateway.output()
    text = "\n".join(stderr)
    assert "simulated upstream" in text and "authentication is OFF" in text
    records = [json.loads(line) for line in stderr if line.startswith("{")]
    requests = [r for r in records if r.get("msg") == "request"]
    assert any(r["path"] == "/v1/images/generations" and r["status"] == 200 for r in requests)
    logged = [r for r in requests if r.get("prompt") == "a red panda"]
    # Prompts are logged only when the operator turned that on.
    assert len(logged) == (0 if off else 1)
    if off:
        assert all("a red panda" not in line for line in stderr)


def test_serve_refuses_an_unsafe_configuration(tmp_path: Path) -> None:
    env = clean_env(MEDIAGATE_UPSTREAM_URL="http://127.0.0.1:1/v1", MEDIAGATE_KEY_DEFAULT="sk-up")
    proc = subprocess.run(
        [sys.executable, "-m", "mediagate", "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "MEDIAGATE_API_KEYS" in proc.stderr
    assert "sk-up" not in proc.stderr


def test_serve_against_a_separate_simulator_with_keys(tmp_path: Path) -> None:
    group_keys = {group: key for key, group in DEFAULT_SIM_KEYS.items()}
    with serving(["simulate"], clean_env(), tmp_path) as simulator:
        sim_port = simulator.url.rsplit(":", 1)[1]
        env = clean_env(
            MEDIAGATE_UPSTREAM_URL=f"http://127.0.0.1:{sim_port}/v1",
            MEDIAGATE_KEY_DEFAULT=group_keys["default"],
            MEDIAGATE_KEY_OPENAIOFFICIAL=group_keys["OpenAI Official"],
            MEDIAGATE_API_KEYS="team-a:sk-client-a",
            MEDIAGATE_FETCH_ALLOW_HOSTS=f"127.0.0.1:{sim_port}",
            MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        )
        with serving(["serve"], env, tmp_path) as gateway:
            base_url = f"{gateway.url}/v1"
            client = openai.OpenAI(base_url=base_url, api_key="sk-client-a", max_retries=0)
            assert client.images.generate(model="gpt-image-2", prompt="p").data
            assert client.images.generate(model="gpt-4o-image", prompt="p").data
            try:
                openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
                raise AssertionError("an unknown key was accepted")
            except openai.AuthenticationError:
                pass
        logs = "\n".join(gateway.output())
        assert "team-a" in logs  # the key's name is logged...
        for secret in ["sk-client-a", *DEFAULT_SIM_KEYS]:
            assert secret not in logs  # ...never a key


def test_serve_freezes_what_it_built_to_start_after_the_gateway_opens(
    sim: Sim, tmp_path: Path
) -> None:
    # `mediagate serve` passes on_started=_freeze_heap: it must run once the lifespan has
    # opened the gateway, before any request (and the freeze then holds the gateway).
    seen: list[tuple[bool, int]] = []

    def started() -> None:
        seen.append((hasattr(app.state, "gateway"), len(seen)))

    app = create_app(gateway_settings(sim, tmp_path / "data"), on_started=started)
    server = BackgroundServer(app).start()
    try:
        assert seen == [(True, 0)]
        gc.unfreeze()
        gc.disable()  # as `mediagate serve` starts
        _freeze_heap()
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        server.stop()

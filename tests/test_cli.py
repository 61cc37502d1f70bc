"""The newcomer's path, as a separate process: `python -m app serve` with nothing configured
serves the simulated upstream offline, and `mediagate simulate` runs the simulator alone."""

from __future__ import annotations

import base64
import io
import json
import os
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
from PIL import Image

from app.simulator import DEFAULT_SIM_KEYS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGATE_")}
    env.update(extra)
    return env


@contextmanager
def running(args: list[str], env: dict[str, str], port: int, cwd: Path) -> Iterator[list[str]]:
    """Start a process, wait until it answers on the port, yield its stderr lines on exit."""
    proc = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the process did not start listening"
                time.sleep(0.1)
        yield output
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        output.extend(err.splitlines())


@pytest.mark.parametrize("log_prompts", [False, True])
def test_serve_with_nothing_configured_runs_offline(tmp_path: Path, log_prompts: bool) -> None:
    port = free_port()
    env = clean_env(MEDIAGATE_DATA_DIR=str(tmp_path / "data"))
    if log_prompts:
        env["MEDIAGATE_LOG_PROMPTS"] = "true"
    args = [sys.executable, "-m", "app", "serve", "--port", str(port)]
    with running(args, env, port, tmp_path) as stderr:
        # The README's five lines: any api_key works because simulator mode has no client keys.
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="anything")
        result = client.images.generate(model="sora_image", prompt="a red panda", size="1024x1536")
        image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
        assert image.size == (1024, 1536)
        assert {m.id for m in client.models.list().data} >= {"gpt-image-1", "gpt-image-2"}
    text = "\n".join(stderr)
    assert "simulated upstream" in text and "authentication is OFF" in text
    records = [json.loads(line) for line in stderr if line.startswith("{")]
    requests = [r for r in records if r.get("msg") == "request"]
    assert any(r["path"] == "/v1/images/generations" and r["status"] == 200 for r in requests)
    logged = [r for r in requests if r.get("prompt") == "a red panda"]
    # Prompts are logged only when the operator turned that on.
    assert len(logged) == (1 if log_prompts else 0)
    if not log_prompts:
        assert all("a red panda" not in line for line in stderr)


def test_serve_refuses_an_unsafe_configuration(tmp_path: Path) -> None:
    env = clean_env(MEDIAGATE_UPSTREAM_URL="http://127.0.0.1:1/v1", MEDIAGATE_KEY_DEFAULT="sk-up")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
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
    sim_port, gw_port = free_port(), free_port()
    group_keys = {group: key for key, group in DEFAULT_SIM_KEYS.items()}
    sim_args = [sys.executable, "-m", "app", "simulate", "--port", str(sim_port)]
    with running(sim_args, clean_env(), sim_port, tmp_path):
        env = clean_env(
            MEDIAGATE_UPSTREAM_URL=f"http://127.0.0.1:{sim_port}/v1",
            MEDIAGATE_KEY_DEFAULT=group_keys["default"],
            MEDIAGATE_KEY_SORA2OFFICIAL=group_keys["Sora2Official"],
            MEDIAGATE_API_KEYS="team-a:sk-client-a",
            MEDIAGATE_FETCH_ALLOW_HOSTS=f"127.0.0.1:{sim_port}",
            MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        )
        gw_args = [sys.executable, "-m", "app", "serve", "--port", str(gw_port)]
        with running(gw_args, env, gw_port, tmp_path) as stderr:
            base_url = f"http://127.0.0.1:{gw_port}/v1"
            client = openai.OpenAI(base_url=base_url, api_key="sk-client-a", max_retries=0)
            assert client.images.generate(model="gpt-image-2", prompt="p").data
            assert client.images.generate(model="gpt-4o-image", prompt="p").data
            try:
                openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
                raise AssertionError("an unknown key was accepted")
            except openai.AuthenticationError:
                pass
        logs = "\n".join(stderr)
        assert "team-a" in logs  # the key's name is logged...
        for secret in ["sk-client-a", *DEFAULT_SIM_KEYS]:
            assert secret not in logs  # ...never a key

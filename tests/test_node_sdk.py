"""The Node `openai` SDK drives the Videos API through a real gateway: create, poll, download.

tests/node/videos.mjs is what a team's Node code does; this runs it with `node` against a
gateway on a loopback port in front of the simulator. Its npm dependencies are installed into
tests/node when missing (`npm ci`, a few seconds). Without node or npm it skips, except under
CI (CI=true), where a missing toolchain is a failure rather than a silently smaller suite.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .conftest import CLIENT_KEY, Gateway, Sim, fast_video_polls

NODE_DIR = Path(__file__).parent / "node"
# The public models the Node SDK run covers, the extra body fields it sends, and what went
# upstream of them: Muse itself, the retired sora-2 that Muse serves, and Muse's looks and
# camera techniques (a list becomes `skill_preset[]` parts, one field upstream). Each answer
# names the model asked for, as OpenAI does.
NODE_SDK_MODELS: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("muse-video", {}, {}),
    ("sora-2", {}, {"model": "muse-video"}),
    (
        "muse-video",
        {"style_preset": "2d_anime", "skill_preset": ["whip_pan", "cut_on_action"]},
        {"style_preset": "2d_anime", "skill_preset": "whip_pan,cut_on_action"},
    ),
]


def _toolchain() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for the Node SDK test"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return node, npm


@pytest.fixture(scope="session")
def node_sdk() -> str:
    """The node binary, with tests/node's dependencies installed."""
    node, npm = _toolchain()
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").exists():
        command = "ci" if (NODE_DIR / "package-lock.json").exists() else "install"
        subprocess.run(
            [npm, command, "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return node


@pytest.mark.parametrize(("model", "extra", "upstream"), NODE_SDK_MODELS)
def test_node_sdk_creates_polls_and_downloads(
    node_sdk: str,
    make_gateway: Callable[..., Gateway],
    sim: Sim,
    tmp_path: Path,
    model: str,
    extra: dict[str, Any],
    upstream: dict[str, str],
) -> None:
    gateway = make_gateway(config=fast_video_polls(tmp_path / "polls.yaml"))
    reference = tmp_path / "first.png"
    out = io.BytesIO()
    Image.new("RGB", (640, 480), "teal").save(out, format="PNG")  # the gateway fits it
    reference.write_bytes(out.getvalue())
    env = {
        **os.environ,
        "MEDIAGATE_BASE_URL": f"{gateway.url}/v1",
        "MEDIAGATE_API_KEY": CLIENT_KEY,
        "MEDIAGATE_MODEL": model,
        "MEDIAGATE_REFERENCE": str(reference),
        "MEDIAGATE_SIZE": "1280x720",
        "MEDIAGATE_EXTRA": json.dumps(extra),
    }
    run = subprocess.run(
        [node_sdk, "videos.mjs"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["model"] == model
    assert result["size"] == "1280x720"
    assert result["mp4"] is True and result["bytes"] > 0
    assert result["content_type"] == "video/mp4"
    assert result["polls"] is None or result["polls"] >= 1
    # The reference went upstream (fitted), and the download came from the upstream job.
    creates = [c for c in sim.sent() if c.method == "POST" and c.path == "/v1/videos"]
    assert len(creates) == 1 and "input_reference" in creates[0].body
    assert {name: creates[0].body[name] for name in upstream} == upstream

"""Client keys from a keys file: scopes, hot reload, and `mediagate keys create`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from app.cli import main as cli
from app.keys import digest

from .conftest import Gateway, Sim


def keys_file(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


def entry(name: str, key: str, **policy: Any) -> dict[str, Any]:
    return {"name": name, "sha256": digest(key), **policy}


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


@pytest.fixture
def scoped(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    path = keys_file(
        tmp_path / "keys.yaml",
        [
            entry("design", "sk-design", models=["sora_image", "gpt-image-2-*"]),
            entry("video-team", "sk-video", models=["sora-2*"]),
        ],
    )
    return make_gateway(keys_file=path)


def test_a_key_may_only_use_its_models(scoped: Gateway, sim: Sim) -> None:
    client = scoped.sdk(api_key="sk-design")
    assert client.images.generate(model="gpt-image-2-vip", prompt="ok").data
    sim.state.reset()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.images.generate(model="gpt-image-1", prompt="not mine")
    assert caught.value.code == "model_not_allowed"
    assert caught.value.body["param"] == "model"  # type: ignore[index]
    assert sim.sent() == []
    with pytest.raises(openai.PermissionDeniedError):
        scoped.sdk(api_key="sk-video").images.generate(model="sora_image", prompt="x")
    with pytest.raises(openai.PermissionDeniedError):
        client.videos.create(model="sora-2", prompt="not mine either")
    assert sim.sent() == []


def test_models_lists_only_what_the_key_may_use(scoped: Gateway) -> None:
    design = scoped.sdk(api_key="sk-design")
    # A glob is a glob: "gpt-image-2-*" does not match "gpt-image-2" itself.
    assert {m.id for m in design.models.list().data} == {
        "sora_image",
        "gpt-image-2-enterprise",
        "gpt-image-2-web",
        "gpt-image-2-vip",
    }
    with pytest.raises(openai.NotFoundError):
        design.models.retrieve("gpt-image-1")
    assert {m.id for m in scoped.sdk(api_key="sk-video").models.list().data} == {
        "sora-2",
        "sora-2-pro",
    }


def test_env_keys_and_the_keys_file_work_together(scoped: Gateway) -> None:
    # MEDIAGATE_API_KEYS (from the fixture) still works next to the file's keys.
    assert scoped.sdk().models.list().data


def test_keys_file_changes_take_effect_without_a_restart(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    path = keys_file(tmp_path / "keys.yaml", [entry("old", "sk-old")])
    gateway = make_gateway(keys_file=path, api_keys=None)
    assert gateway.sdk(api_key="sk-old").models.list().data

    def works(key: str) -> bool:
        try:
            gateway.sdk(api_key=key).models.list()
            return True
        except openai.AuthenticationError:
            return False

    keys_file(path, [entry("new", "sk-new")])
    wait_for(lambda: works("sk-new") and not works("sk-old"))

    # A broken edit keeps the keys that worked, rather than locking every team out.
    path.write_text("keys: [{name: broken")
    time.sleep(1.5)
    assert works("sk-new")


def test_a_bad_keys_file_stops_the_start(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [{"name": "x", "sha256": "not-a-digest"}]}))
    with pytest.raises(RuntimeError):
        make_gateway(keys_file=path)


def test_keys_create_prints_the_key_once_and_an_entry_with_its_hash(
    capsys: pytest.CaptureFixture[str], make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    assert cli(["keys", "create", "team-x", "--models", "sora_image", "--budget-day", "5"]) == 0
    out = capsys.readouterr().out
    key = next(line[2:] for line in out.splitlines() if line.startswith("# mg-"))
    entries = yaml.safe_load(
        "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    )
    assert entries == [
        {
            "name": "team-x",
            "sha256": digest(key),
            "models": ["sora_image"],
            "budget_usd_per_day": 5.0,
        }
    ]
    assert key not in yaml.safe_dump(entries)
    gateway = make_gateway(keys_file=keys_file(tmp_path / "k.yaml", entries))
    assert {m.id for m in gateway.sdk(api_key=key).models.list().data} == {"sora_image"}

"""Client keys from a keys file: scopes, hot reload, and their lifecycle from the CLI
(`mediagate keys list | create | revoke | rotate`) against a running gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from mediagate.accounting.clients import digest, read_keys_file
from mediagate.cli import main as cli

from .conftest import CLIENT_KEY, Gateway, Sim, wait_until
from .processes import clean_env


def keys_file(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


def entry(name: str, key: str, **policy: Any) -> dict[str, Any]:
    return {"name": name, "sha256": digest(key), **policy}


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
    # The glob takes OpenAI's dated Sora ids too (aliases like the two).
    assert {m.id for m in scoped.sdk(api_key="sk-video").models.list().data} == {
        "sora-2",
        "sora-2-pro",
        "sora-2-2025-10-06",
        "sora-2-2025-12-08",
        "sora-2-pro-2025-10-06",
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
    wait_until(lambda: works("sk-new") and not works("sk-old"))

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
    args = ["keys", "create", "team-x", "--models", "sora_image", "--budget-day", "5", "--print"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    key = next(line[2:] for line in out.splitlines() if line.startswith("# mg-"))
    entries = yaml.safe_load(
        "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    )
    created = entries[0].pop("created")
    assert entries == [
        {
            "name": "team-x",
            "sha256": digest(key),
            "models": ["sora_image"],
            "budget_usd_per_day": 5.0,
        }
    ]
    assert abs(datetime.fromisoformat(created) - datetime.now(UTC)) < timedelta(minutes=1)
    entries[0]["created"] = created
    assert key not in yaml.safe_dump(entries)
    gateway = make_gateway(keys_file=keys_file(tmp_path / "k.yaml", entries))
    assert {m.id for m in gateway.sdk(api_key=key).models.list().data} == {"sora_image"}


# --- `mediagate keys list | create | revoke | rotate`, as an operator runs them ---------------


def keys_cli(
    *args: str, keys_path: Path | None = None, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m mediagate keys ARGS` as its own process (MEDIAGATE_KEYS_FILE=keys_path,
    MEDIAGATE_DATABASE_URL=database_url)."""
    extra = {"MEDIAGATE_KEYS_FILE": str(keys_path)} if keys_path else {}
    if database_url:
        extra["MEDIAGATE_DATABASE_URL"] = database_url
    env = clean_env(**extra)
    return subprocess.run(
        [sys.executable, "-m", "mediagate", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def accepted(gateway: Gateway, key: str) -> bool:
    try:
        gateway.sdk(api_key=key).models.list()
        return True
    except openai.AuthenticationError:
        return False


def test_the_key_lifecycle_from_the_cli_on_a_running_gateway(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    path = tmp_path / "keys.yaml"
    made = keys_cli(
        "create",
        "design",
        "--models",
        "sora_image,gpt-image-2-*",
        "--rpm",
        "30",
        "--budget-day",
        "5",
        "--file",
        str(path),
    )
    assert made.returncode == 0, made.stderr
    design = made.stdout.strip()  # the key alone on stdout, shown once
    assert design.startswith("mg-") and "\n" not in design
    assert "shown once" in made.stderr and design not in made.stderr
    gateway = make_gateway(keys_file=path, api_keys=f"ops:{CLIENT_KEY}")
    assert {m.id for m in gateway.sdk(api_key=design).models.list().data} >= {"sora_image"}

    # A second key while the gateway runs (MEDIAGATE_KEYS_FILE this time): it works at once.
    made = keys_cli("create", "video-team", "--models", "sora-2*", keys_path=path)
    assert made.returncode == 0, made.stderr
    video = made.stdout.strip()
    wait_until(lambda: accepted(gateway, video))

    # The file holds digests only, and reads back as the gateway reads it.
    text = path.read_text()
    assert design not in text and video not in text and digest(design) in text
    assert text.startswith("# mediagate client keys")
    assert [p.name for p in read_keys_file(path)] == ["design", "video-team"]

    # list: names, scopes, limits and dates; never a secret or a digest.
    listed = keys_cli("list", keys_path=path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"design", "video-team"}
    assert "sora_image,gpt-image-2-*" in rows["design"] and "rpm=30" in rows["design"]
    assert "usd/day=5.0" in rows["design"]
    assert datetime.now(UTC).strftime("%Y-%m-%d") in rows["design"]
    as_json = json.loads(keys_cli("list", "--json", keys_path=path).stdout)
    assert [r["name"] for r in as_json] == ["design", "video-team"]
    assert as_json[0]["requests_per_minute"] == 30 and as_json[0]["created"]
    for output in (listed.stdout, json.dumps(as_json)):
        for secret in (design, video, digest(design), digest(video), "sha256"):
            assert secret not in output

    # rotate: a new secret, same scopes; the old one is refused as soon as the file is re-read.
    rotated = keys_cli("rotate", "design", keys_path=path)
    assert rotated.returncode == 0, rotated.stderr
    new_design = rotated.stdout.strip()
    assert new_design.startswith("mg-") and new_design != design
    wait_until(lambda: accepted(gateway, new_design) and not accepted(gateway, design))
    assert {m.id for m in gateway.sdk(api_key=new_design).models.list().data} >= {"sora_image"}
    policy = next(p for p in read_keys_file(path) if p.name == "design")
    assert policy.requests_per_minute == 30 and policy.models == ["sora_image", "gpt-image-2-*"]

    # revoke: refused from the next look at the file on; the other keys are untouched.
    revoked = keys_cli("revoke", "video-team", keys_path=path)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == ""
    wait_until(lambda: not accepted(gateway, video))
    assert accepted(gateway, new_design) and accepted(gateway, CLIENT_KEY)

    # Mistakes are said plainly and change nothing; no temporary file is left behind.
    before = path.read_text()
    for args, message in [
        (("revoke", "nobody"), "no key named 'nobody'"),
        (("rotate", "nobody"), "no key named 'nobody'"),
        (("create", "design"), "a key named 'design' exists already"),
        (("create", "bad name!"), "invalid key entry"),
    ]:
        failed = keys_cli(*args, keys_path=path)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr
        assert failed.stdout == ""
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_key_lifecycle_in_the_database_from_the_cli(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str]
) -> None:
    # Without a keys file, `mediagate keys` works on the records' database, as the admin API.
    gateway = make_gateway(**job_store)
    url = gateway.settings.records_url()

    def quickly(check: Callable[[], bool]) -> None:
        start = time.monotonic()
        wait_until(check, timeout_s=3.0, interval_s=0.02)
        assert time.monotonic() - start < 1.6

    made = keys_cli(
        "create",
        "design",
        "--team",
        "marketing",
        "--models",
        "sora_image,gpt-image-2-*",
        "--rpm",
        "600",
        "--expires",
        "30d",
        database_url=url,
    )
    assert made.returncode == 0, made.stderr
    design = made.stdout.strip()
    assert design.startswith("mg-") and "\n" not in design and design not in made.stderr
    assert "made the team 'marketing'" in made.stderr
    quickly(lambda: accepted(gateway, design))  # the running gateway, within a second
    assert {m.id for m in gateway.sdk(api_key=design).models.list().data} >= {"sora_image"}

    listed = keys_cli("list", database_url=url)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"design", "team-a", "team-b"}  # the gateway's MEDIAGATE_API_KEYS too
    assert "marketing" in rows["design"] and "rpm=600" in rows["design"]
    assert rows["design"].rstrip().endswith("api") and rows["team-a"].rstrip().endswith("env")
    as_json = {
        r["name"]: r for r in json.loads(keys_cli("list", "--json", database_url=url).stdout)
    }
    expires = datetime.fromisoformat(as_json["design"]["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    for output in (listed.stdout, json.dumps(as_json)):
        for secret in (design, digest(design), digest(CLIENT_KEY), "sha256"):
            assert secret not in output

    # rotate --grace: the new secret at once, the old one still, until the grace ends.
    rotated = keys_cli("rotate", "design", "--grace", "1h", database_url=url)
    assert rotated.returncode == 0, rotated.stderr
    new_design = rotated.stdout.strip()
    assert "the old key works until" in rotated.stderr
    quickly(lambda: accepted(gateway, new_design))
    assert accepted(gateway, design)
    # rotate without one: the old secrets are refused from then on.
    newest = keys_cli("rotate", "design", database_url=url).stdout.strip()
    quickly(lambda: accepted(gateway, newest) and not accepted(gateway, new_design))
    assert not accepted(gateway, design)

    revoked = keys_cli("revoke", "design", database_url=url)
    assert revoked.returncode == 0 and revoked.stdout == ""
    quickly(lambda: not accepted(gateway, newest))

    for args, message in [
        (("revoke", "nobody"), "No key named 'nobody'"),
        (("create", "design"), "exists already"),
        (("revoke", "team-a"), "MEDIAGATE_API_KEYS"),
    ]:
        failed = keys_cli(*args, database_url=url)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr
        assert failed.stdout == ""
    unreachable = keys_cli("list", database_url="postgresql://127.0.0.1:1/none")
    assert unreachable.returncode == 2 and "database" in unreachable.stderr


def test_keys_file_mistakes_are_said_plainly(tmp_path: Path) -> None:
    # --grace needs the database: a keys file holds one secret per key.
    path = tmp_path / "keys.yaml"
    assert keys_cli("create", "x", keys_path=path).returncode == 0
    failed = keys_cli("rotate", "x", "--grace", "1h", keys_path=path)
    assert failed.returncode == 2 and "--grace needs the database" in failed.stderr
    # create --print keeps nothing: it prints the key and an entry for the operator to add.
    made = keys_cli("create", "team-x", "--print")
    assert made.returncode == 0 and "# Add this entry" in made.stdout


def test_keys_digest_prints_the_sha256_of_a_key_from_stdin() -> None:
    env = clean_env()
    done = subprocess.run(
        [sys.executable, "-m", "mediagate", "keys", "digest"],
        input="mga-admin-key\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == digest("mga-admin-key") + "\n"
    assert "mga-admin-key" not in done.stdout + done.stderr


def test_a_keys_file_name_that_is_also_an_env_key_name_stops_the_start(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    # team-a is in MEDIAGATE_API_KEYS too (the test gateway's default): two tenants, one name.
    path = keys_file(tmp_path / "keys.yaml", [entry("team-a", "sk-other-team-a")])
    with pytest.raises(RuntimeError):
        make_gateway(keys_file=path)
    # Changed later while running: refused, the previous keys kept.
    path = keys_file(tmp_path / "ok.yaml", [entry("design", "sk-design")])
    gateway = make_gateway(keys_file=path)
    keys_file(path, [entry("design", "sk-design"), entry("team-a", "sk-other-team-a")])
    os.utime(path, (time.time() + 5, time.time() + 5))
    with gateway.http(api_key="sk-other-team-a") as http:
        wait_until(lambda: http.get("/v1/models").status_code == 401)
        time.sleep(1.2)
        assert http.get("/v1/models").status_code == 401

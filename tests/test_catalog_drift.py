"""A catalog that notices when the upstream moves, and that can change without a restart.

- `mediagate catalog check` (a real process) against the simulator, whose `GET /v1/models`
  lists what each token group sells, derived from its own route tables: all listed (exit 0), a
  route unlisted (exit 1, the route named), new image and video models (but not chat models),
  answers that are not per-group, a group that cannot be listed, a bad override (offline).
- The gateway's own check at start and every MEDIAGATE_CATALOG_CHECK_INTERVAL_S:
  `mediagate_catalog_route_listed{route}` and one warning per route that disappeared.
- SIGHUP reloads MEDIAGATE_CONFIG in a real `mediagate serve`: a valid file takes effect for
  new requests, an invalid one is refused with its reason and the old catalog kept, and a video
  job already running keeps the route and price it started with.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml

from mediagate import context
from mediagate.catalog import load_catalog
from mediagate.context import RequestContext
from mediagate.errors import Scrubber
from mediagate.gateway import open_gateway
from mediagate.observability.metrics import Metrics
from mediagate.settings import group_env_name

from .conftest import (
    CLIENT_KEY,
    GROUP_KEYS,
    Gateway,
    Sim,
    fast_video_polls,
    gateway_settings,
    wait_until,
)
from .processes import Served, clean_env, serving

# The groups the bundled catalog has routes in, with the simulator's key of each, and how
# many routes those groups have (what a check with these keys compares).
BUNDLED = load_catalog()
KEYED = tuple(sorted({route.group for route in BUNDLED.routes.values()}))
CATALOG_KEYS = {group_env_name(g).removeprefix("MEDIAGATE_").lower(): GROUP_KEYS[g] for g in KEYED}
ROUTES = sum(1 for route in BUNDLED.routes.values() if route.group in KEYED)


def catalog_check(
    upstream: str | None, cwd: Path, *args: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    """`mediagate catalog check ARGS` as a process, asking the simulator at `upstream` with
    every group's key (no upstream at all with None)."""
    values = dict(settings)
    if upstream is not None:
        values = {"upstream_url": f"{upstream}/v1", **CATALOG_KEYS, **values}
    return subprocess.run(
        [sys.executable, "-m", "mediagate", "catalog", "check", *args],
        env=clean_env(values),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- mediagate catalog check -------------------------------------------------------------------


def test_check_with_every_route_listed_exits_0(sim: Sim, tmp_path: Path) -> None:
    # A model new upstream, and a chat model: only the first is news.
    sim.state.listed += [
        ("default", "gpt-image-3-vip", "image-generation"),
        ("default", "kimi-k3", "openai"),
    ]
    done = catalog_check(sim.url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "RETIRED" not in out
    assert f"{ROUTES} of {ROUTES} routes listed, 0 retired" in out
    assert "new image model 'gpt-image-3-vip' in group 'default'" in out
    # The simulator's Wan tables have a model the catalog has no route for.
    assert "new video model 'wan2.7-videoedit' in group 'Wan'" in out
    assert "kimi-k3" not in out and "gpt-4o-mini" not in out  # chat models are not news
    # One free call per group with a key, each with that group's key.
    listed = sorted(c.group for c in sim.sent("/v1/models"))
    assert listed == sorted(KEYED)
    assert all(c.status == 200 and c.method == "GET" for c in sim.sent("/v1/models"))


def test_check_with_a_route_unlisted_exits_1_naming_it(sim: Sim, tmp_path: Path) -> None:
    sim.state.unlisted.add(("SeeDance2", "doubao-seedance-2-0-fast-260128"))
    done = catalog_check(sim.url, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    retired = [line for line in done.stdout.splitlines() if line.startswith("RETIRED")]
    assert retired == [
        "RETIRED seedance-2.0-fast: group 'SeeDance2' no longer lists "
        "'doubao-seedance-2-0-fast-260128'"
    ]
    assert f"{ROUTES - 1} of {ROUTES} routes listed, 1 retired" in done.stdout


def test_the_simulator_process_leaves_out_what_it_is_told(tmp_path: Path) -> None:
    # `mediagate simulate --unlist GROUP:MODEL`: the same knob for an operator's own trial.
    unlist = ["--unlist", "SeeDance2:doubao-seedance-2-0-fast-260128"]
    with serving(["simulate", *unlist], clean_env(), tmp_path) as simulator:
        done = catalog_check(simulator.url, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "RETIRED seedance-2.0-fast: group 'SeeDance2'" in done.stdout
    assert f"{ROUTES - 1} of {ROUTES} routes listed, 1 retired" in done.stdout


def test_a_list_that_does_not_say_endpoint_types_is_read_by_family(
    sim: Sim, tmp_path: Path
) -> None:
    # Entries without supported_endpoint_types: a model of a catalog family (doubao-seedance)
    # is news, another (a chat model) is not.
    sim.state.listed += [
        ("SeeDance2", "doubao-seedance-3-0-261201", ""),
        ("SeeDance2", "llama-4-maverick", ""),
    ]
    done = catalog_check(sim.url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "new video model 'doubao-seedance-3-0-261201' in group 'SeeDance2'" in done.stdout
    assert "llama-4-maverick" not in done.stdout


def test_a_route_is_checked_against_its_own_groups_list(sim: Sim, tmp_path: Path) -> None:
    # gpt-image-2 is still sold in the default group (the web route), but no longer in the
    # enterprise group: only the enterprise route is retired.
    sim.state.unlisted.add(("OpenAI Official Enterprise", "gpt-image-2"))
    done = catalog_check(sim.url, tmp_path)
    assert done.returncode == 1
    assert "RETIRED gpt-image-2.enterprise:" in done.stdout
    assert "RETIRED gpt-image-2.web" not in done.stdout
    assert "RETIRED gpt-image-2.official" not in done.stdout


def test_answers_that_are_not_per_group_are_said_and_compared_whole(
    sim: Sim, tmp_path: Path
) -> None:
    sim.state.models_whole_list = True
    sim.state.unlisted.add(("Wan", "wan2.7-t2v"))  # gone from the whole list
    done = catalog_check(sim.url, tmp_path)
    assert done.returncode == 1
    assert "do not look per-group" in done.stdout
    retired = [line for line in done.stdout.splitlines() if line.startswith("RETIRED")]
    assert retired == ["RETIRED wan2.7-t2v: group 'Wan' no longer lists 'wan2.7-t2v'"]
    # Compared with the whole list: the videoedit model is news once, for the upstream.
    assert "new video model 'wan2.7-videoedit' in the upstream" in done.stdout


def test_a_group_that_cannot_be_listed_is_said_and_exits_2(sim: Sim, tmp_path: Path) -> None:
    done = catalog_check(sim.url, tmp_path, key_wan="sk-not-a-sim-key")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "could not list group 'Wan'" in done.stdout
    assert "sk-not-a-sim-key" not in done.stdout + done.stderr
    assert "RETIRED" not in done.stdout  # its routes are neither listed nor retired
    others = sum(1 for route in BUNDLED.routes.values() if route.group != "Wan")
    assert f"{others} of {others} routes listed" in done.stdout


def test_a_bad_override_is_refused_offline_with_the_reason(sim: Sim, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": {"heron": {"routes": ["no-such-route"]}}}))
    done = catalog_check(sim.url, tmp_path, "--config", str(bad))
    assert done.returncode == 2
    assert "model heron: unknown routes ['no-such-route']" in done.stderr
    assert sim.sent() == []  # refused before anything is asked

    broken = tmp_path / "broken.yaml"
    broken.write_text("routes: [unclosed\n")
    done = catalog_check(None, tmp_path, "--config", str(broken))
    assert done.returncode == 2
    assert f"{broken}: not valid YAML" in done.stderr

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"models": {"heron": {"routes": ["gpt-image-2.web"]}}}))
    done = catalog_check(None, tmp_path, "--config", str(good))
    assert done.returncode == 0, done.stderr
    assert f"{len(BUNDLED.models) + 1} models" in done.stdout
    assert "checked offline only" in done.stdout


# --- The gateway's periodic check --------------------------------------------------------------


def listed_gauge(gateway: Gateway) -> dict[str, float]:
    with gateway.http(api_key=None) as http:
        text = http.get("/metrics").text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mediagate_catalog_route_listed{"):
            route = line.split('route="', 1)[1].split('"', 1)[0]
            found[route] = float(line.rsplit(" ", 1)[1])
    return found


def test_the_gateway_checks_at_start_and_every_interval(
    sim: Sim, make_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediagate")
    # A short interval stands in for the 6 h default: each check is a round of free calls.
    gateway = make_gateway(catalog_check_interval_s=0.2)
    wait_until(lambda: len(listed_gauge(gateway)) == ROUTES)
    assert set(listed_gauge(gateway).values()) == {1.0}

    sim.state.unlisted.add(("default", "gpt-image-2.5-web"))
    wait_until(lambda: listed_gauge(gateway).get("gpt-image-2.5.web") == 0.0)
    rounds = len(sim.sent("/v1/models"))
    wait_until(lambda: len(sim.sent("/v1/models")) >= rounds + 10)  # two more checks
    gauge = listed_gauge(gateway)
    assert gauge.pop("gpt-image-2.5.web") == 0.0
    assert set(gauge.values()) == {1.0}
    # One warning for the route that disappeared, not one per check.
    warned = [r for r in caplog.records if r.msg == "catalog route no longer listed upstream"]
    assert len(warned) == 1
    fields: dict[str, Any] = getattr(warned[0], "fields", {})
    assert fields["route"] == "gpt-image-2.5.web" and fields["group"] == "default"
    assert warned[0].levelno == logging.WARNING

    sim.state.unlisted.clear()  # listed again
    wait_until(lambda: listed_gauge(gateway).get("gpt-image-2.5.web") == 1.0)


def test_the_check_is_off_at_interval_0(sim: Sim, make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(catalog_check_interval_s=0)
    with gateway.http() as http:
        assert http.get("/v1/models").status_code == 200
    assert listed_gauge(gateway) == {}
    assert sim.sent("/v1/models") == []


# --- Reloading MEDIAGATE_CONFIG on SIGHUP ------------------------------------------------------


def serve_env(sim: Sim, tmp_path: Path, config: Path) -> dict[str, str]:
    return clean_env(
        {
            "upstream_url": f"{sim.url}/v1",
            **CATALOG_KEYS,
            "api_keys": f"team-a:{CLIENT_KEY}",
            "data_dir": str(tmp_path / "data"),
            "config": str(config),
            "catalog_check_interval_s": "0",
            "video_poll_after_ms": "50",
        }
    )


def logged(gateway: Served, message: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in gateway.output() if line.startswith("{")]
    return [r for r in records if r.get("msg") == message]


def offered(gateway: Served) -> set[str]:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    return {model.id for model in client.models.list().data}


def test_sighup_reloads_a_valid_file_and_refuses_an_invalid_one(sim: Sim, tmp_path: Path) -> None:
    config = tmp_path / "catalog.yaml"
    config.write_text(yaml.safe_dump({"models": {"heron": {"routes": ["gpt-image-2.web"]}}}))
    with serving(["serve"], serve_env(sim, tmp_path, config), tmp_path) as gateway:
        assert "heron" in offered(gateway) and "egret" not in offered(gateway)

        # A valid file: in force for the next request, no restart.
        config.write_text(yaml.safe_dump({"models": {"egret": {"routes": ["gpt-image-2.vip"]}}}))
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: bool(logged(gateway, "catalog reloaded")))
        assert "egret" in offered(gateway) and "heron" not in offered(gateway)
        with httpx2.Client(base_url=gateway.url, timeout=30) as http:
            answer = http.post(
                "/v1/images/generations",
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                json={"model": "egret", "prompt": "an egret", "size": "1024x1024"},
            )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-mediagate-route"] == "gpt-image-2.vip"

        # An invalid one: refused with its reason, the catalog in force kept.
        config.write_text(yaml.safe_dump({"models": {"ibis": {"routes": ["no-such-route"]}}}))
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: bool(logged(gateway, "catalog reload refused; the catalog in force is kept"))
        )
        refusal = logged(gateway, "catalog reload refused; the catalog in force is kept")[0]
        assert refusal["level"] == "error"
        assert "model ibis: unknown routes ['no-such-route']" in refusal["reason"]
        models = offered(gateway)
        assert "egret" in models and "ibis" not in models
        assert gateway.proc.poll() is None  # still serving
        with httpx2.Client(base_url=gateway.url, timeout=10) as http:
            metrics = http.get("/metrics").text
        assert 'mediagate_catalog_reloads_total{outcome="applied"} 1.0' in metrics
        assert 'mediagate_catalog_reloads_total{outcome="refused"} 1.0' in metrics


def test_a_running_video_keeps_its_route_and_price_across_a_reload(
    sim: Sim, tmp_path: Path
) -> None:
    config = fast_video_polls(tmp_path / "catalog.yaml")
    overlay = yaml.safe_load(config.read_text())
    with serving(["serve"], serve_env(sim, tmp_path, config), tmp_path) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        # Muse bills $0.30 a video; the job renders for 3 s.
        running = client.videos.create(model="muse-video", prompt="[sim:render=3] a kite")
        assert running.status in ("queued", "in_progress")

        # The operator changes the route's price meanwhile.
        overlay["routes"]["muse-video"]["video"]["price"] = {"per_video": 0.99}
        config.write_text(yaml.safe_dump(overlay))
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: bool(logged(gateway, "catalog reloaded")))
        reloaded = logged(gateway, "catalog reloaded")[0]
        assert reloaded["routes_changed"] == ["muse-video"]

        done = client.videos.poll(running.id, poll_interval_ms=50)
        assert done.status == "completed"
        with httpx2.Client(base_url=gateway.url, timeout=10) as http:
            usage = http.get("/v1/usage", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert usage.json()["totals"]["cost_usd"] == pytest.approx(0.30)  # the price it began at

        # A job created after the reload is priced as the catalog now says.
        after = client.videos.create_and_poll(
            model="muse-video", prompt="a second kite", poll_interval_ms=50
        )
        assert after.status == "completed"
        with httpx2.Client(base_url=gateway.url, timeout=10) as http:
            usage = http.get("/v1/usage", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert usage.json()["totals"]["cost_usd"] == pytest.approx(0.30 + 0.99)


def test_only_what_looks_like_a_model_id_is_taken_from_a_listing() -> None:
    """Upstream text reaches a log line and the operator's terminal: an id with spaces, a URL
    or a mile of text is not a model to report."""
    from mediagate.upstream.listing import parse_listing

    listed = parse_listing(
        {
            "data": [
                {"id": "gpt-image-3-vip"},
                {"id": "fal-ai/flux-pro"},
                {"id": "http://10.0.0.7/internal"},
                {"id": "a model\nwith lines"},
                {"id": "x" * 500},
                {"id": 42},
            ]
        }
    )
    assert sorted(listed) == ["fal-ai/flux-pro", "gpt-image-3-vip"]


def test_a_reload_serves_a_new_group_whose_key_was_set_at_start(sim: Sim, tmp_path: Path) -> None:
    # The bundled catalog has no route in the `vip` group, yet its key is set: a route in it,
    # new in a reloaded file, is served without a restart (its key was read at start).
    assert "vip" not in BUNDLED.groups()
    config = tmp_path / "catalog.yaml"
    config.write_text(yaml.safe_dump({"models": {"heron": {"routes": ["gpt-image-2.web"]}}}))
    env = serve_env(sim, tmp_path, config)
    env[group_env_name("vip")] = GROUP_KEYS["vip"]
    with serving(["serve"], env, tmp_path) as gateway:
        assert "kite-vip" not in offered(gateway)

        bundled = importlib.resources.files("mediagate").joinpath("catalog.yaml").read_text()
        muse = yaml.safe_load(bundled)["routes"]["muse-video"]
        route = {**muse, "group": "vip"}
        overlay = {
            "routes": {"muse-video.vip": route},
            "models": {"kite-vip": {"routes": ["muse-video.vip"]}},
        }
        config.write_text(yaml.safe_dump(overlay))
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: bool(logged(gateway, "catalog reloaded")))
        reloaded = logged(gateway, "catalog reloaded")[0]
        assert reloaded["groups_keyed"] == ["vip"]
        assert "vip" not in reloaded["groups_without_key"]
        assert "kite-vip" in offered(gateway)

        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        video = client.videos.create(model="kite-vip", prompt="a kite")
        assert video.status in ("queued", "in_progress")
        created = [c for c in sim.sent() if c.method == "POST" and "video" in c.path]
        assert [c.group for c in created] == ["vip"]


def test_an_image_planned_before_a_reload_is_billed_with_its_planning_time_multiplier(
    sim: Sim, tmp_path: Path
) -> None:
    # Planned on a catalog where the default group bills x1, answered after a reload to x4
    # (an edit reads its uploads between the two): billed as planned, $0.03 a call.
    config = tmp_path / "catalog.yaml"
    config.write_text(yaml.safe_dump({"groups": {"default": {"multiplier": 1.0}}}))
    settings = gateway_settings(sim, tmp_path / "data", config=config)

    async def run() -> tuple[float, float]:
        async with open_gateway(settings, Metrics(), Scrubber([])) as gw:
            ctx = RequestContext()
            token = context.begin(ctx)
            try:
                body = {"model": "gpt-image-2-web", "prompt": "a heron"}
                job = gw.images.plan_generation(body, "http://gateway.test")
                config.write_text(yaml.safe_dump({"groups": {"default": {"multiplier": 4.0}}}))
                reloaded = gw.reload_catalog()
                policy = gw.clients.policy("team-a")
                assert policy is not None
                answer = await gw.images.answer(policy, job)
                assert answer.body is not None and len(answer.body["data"]) == 1
                return ctx.cost, reloaded.multiplier(job.route)
            finally:
                context.end(token)

    cost, now = asyncio.run(run())
    assert now == 4.0
    assert cost == pytest.approx(0.03)

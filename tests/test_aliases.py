"""Retired model names keep existing client code working (served by their successor, and saying
so), the default model is a live one, and the renamed token groups' old key variables still
work. Through the SDK, a real gateway and the simulated upstream."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from mediagate.settings import Settings
from mediagate.simulator import make_png

from .conftest import GROUP_KEYS, Gateway, Sim, only_call, wait_until
from .test_keys import entry, keys_file

# 2026-11-16, the upstream's retirement of gpt-image-1, as an RFC 9745 structured-field date.
RETIRED_ON = "@1794787200"
ALIAS = "gpt-image-1>gpt-image-2.6-sunburst"


def assert_aliased(headers: Any) -> None:
    assert headers["x-mediagate-alias"] == ALIAS
    assert headers["deprecation"] == RETIRED_ON
    assert headers["link"] == (
        '<https://docs.laozhang.ai/en/models/retired.md>; rel="deprecation"; type="text/html"'
    )


def test_a_retired_name_is_served_by_its_successor_and_says_so(
    client: openai.OpenAI, sim: Sim
) -> None:
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1", prompt="a lighthouse", size="1536x1024", quality="low"
    )
    assert raw.status_code == 200
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-sunburst.official"
    assert_aliased(raw.headers)
    result = raw.parse()
    assert result.data and result.data[0].b64_json and result.size == "1536x1024"
    call = only_call(sim)
    assert (call.group, call.model) == ("OpenAI Official", "gpt-image-2.6-sunburst")
    assert call.body["size"] == "1536x1024" and call.body["quality"] == "low"


def test_an_aliased_edit_keeps_its_mask(client: openai.OpenAI, sim: Sim) -> None:
    png = make_png(64, 64, "photo")
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1",
        image=("a.png", png, "image/png"),
        mask=("m.png", make_png(64, 64, "mask"), "image/png"),
        prompt="add a hat",
    )
    assert_aliased(raw.headers)
    assert [f["field"] for f in only_call(sim).body["files"]] == ["image", "mask"]


def test_an_aliased_request_falls_back_along_the_successors_routes(
    client: openai.OpenAI, sim: Sim
) -> None:
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1", prompt="[sim:burst503=3:official] a wren"
    )
    assert raw.headers["x-mediagate-route"] == "gpt-image-2.6-sunburst.enterprise"
    assert raw.headers["x-mediagate-fallback"].startswith("gpt-image-2.6-sunburst.official=")
    assert_aliased(raw.headers)
    assert [c.group for c in sim.sent()][-1] == "OpenAI Official Enterprise"


def test_errors_and_streams_of_an_aliased_request_say_so_too(
    client: openai.OpenAI, sim: Sim
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gpt-image-1", prompt="p", quality="hd")
    assert_aliased(caught.value.response.headers)
    assert sim.sent() == []
    with client.images.with_streaming_response.generate(
        model="gpt-image-1", prompt="s", stream=True
    ) as streamed:
        assert_aliased(streamed.headers)
        assert b"image_generation.completed" in streamed.read()


def test_a_replayed_answer_keeps_the_alias_headers(gateway: Gateway, sim: Sim) -> None:
    headers = {"Idempotency-Key": "alias-replay-1"}
    with gateway.http() as http:
        body = {"model": "gpt-image-1", "prompt": "once"}
        first = http.post("/v1/images/generations", json=body, headers=headers)
        again = http.post("/v1/images/generations", json=body, headers=headers)
    assert again.headers["x-mediagate-idempotent-replay"] == "true"
    assert_aliased(first.headers)
    assert_aliased(again.headers)
    assert len(sim.sent()) == 1


def test_the_alias_is_in_the_access_log(
    client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediagate")
    client.images.generate(model="gpt-image-1", prompt="logged")
    client.images.generate(model="gpt-image-2.6-sunburst", prompt="logged")

    def images() -> list[dict[str, Any]]:
        lines = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "request"]
        return [f for f in lines if f.get("path") == "/v1/images/generations"]

    # The line is written once the answer is sent: the client may have it a moment earlier.
    wait_until(lambda: len(images()) == 2)
    assert [(f["model"], f.get("alias")) for f in images()] == [
        ("gpt-image-2.6-sunburst", "gpt-image-1"),
        ("gpt-image-2.6-sunburst", None),
    ]


def test_an_operator_can_retire_the_name_instead(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    override = tmp_path / "catalog.yaml"
    override.write_text('aliases:\n  gpt-image-1: {retired: "GPT Image 1 is gone."}\n')
    client = make_gateway(config=override).sdk()
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="gpt-image-1", prompt="p")
    assert caught.value.code == "model_not_found"
    assert caught.value.body["param"] == "model"  # type: ignore[index]
    message = caught.value.body["message"]  # type: ignore[index]
    assert message == (
        "The model 'gpt-image-1' was retired on 2026-11-16: GPT Image 1 is gone. "
        "Use 'gpt-image-2.6-sunburst' instead."
    )
    assert "x-mediagate-alias" not in caught.value.response.headers
    assert "gpt-image-1" not in {m.id for m in client.models.list().data}
    with pytest.raises(openai.NotFoundError, match=r"gpt-image-2\.6-sunburst"):
        client.models.retrieve("gpt-image-1")
    assert sim.sent() == []


def test_a_key_may_use_a_retired_name_it_lists_or_whose_successor_it_may_use(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    path = keys_file(
        tmp_path / "keys.yaml",
        [
            entry("old", "sk-old", models=["gpt-image-1"]),
            entry("new", "sk-new", models=["gpt-image-2.6-*"]),
            entry("other", "sk-other", models=["gpt-image-2.5-*"]),
        ],
    )
    gateway = make_gateway(keys_file=path)
    for key in ("sk-old", "sk-new"):
        assert gateway.sdk(api_key=key).images.generate(model="gpt-image-1", prompt="p").data
    assert {m.id for m in gateway.sdk(api_key="sk-old").models.list().data} == {"gpt-image-1"}
    sim.state.reset()
    with pytest.raises(openai.PermissionDeniedError, match="'gpt-image-1'"):
        gateway.sdk(api_key="sk-other").images.generate(model="gpt-image-1", prompt="p")
    assert sim.sent() == []


def test_a_request_without_a_model_gets_the_live_default(gateway: Gateway, sim: Sim) -> None:
    with gateway.http() as http:
        answer = http.post("/v1/images/generations", json={"prompt": "no model"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-mediagate-route"] == "gpt-image-2.5-sunburst.official"
    assert "deprecation" not in answer.headers
    assert only_call(sim).model == "gpt-image-2.5-sunburst"


def test_a_route_still_naming_a_retired_upstream_id_is_refused_unbilled(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    override = tmp_path / "catalog.yaml"
    override.write_text(
        "routes:\n  old:\n    upstream_model: gpt-image-1\n    group: OpenAI Official\n"
        "    dialect: images\n    accepts: [prompt]\n"
        "    price: {per_image: 0.04}\n"
        "models:\n  house-old: {routes: [old]}\n"
    )
    gateway = make_gateway(config=override)
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.sdk().images.generate(model="house-old", prompt="p")
    assert "gpt-image-2.6-sunburst" in caught.value.message  # the upstream's 404, passed on
    assert float(caught.value.response.headers["x-mediagate-cost-usd"]) == 0
    assert [c.status for c in sim.sent()] == [404]


# --- the renamed token groups ----------------------------------------------------------


def test_the_old_key_variables_still_work_with_one_warning(
    make_gateway: Callable[..., Gateway], sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mediagate")
    gateway = make_gateway(
        key_openaiofficial=None,
        key_openaiofficialenterprise=None,
        key_sora2official=GROUP_KEYS["OpenAI Official"],
        key_gptimage2enterprise=GROUP_KEYS["OpenAI Official Enterprise"],
    )
    client = gateway.sdk()
    client.images.generate(model="gpt-image-2", prompt="p")
    client.images.generate(model="gpt-image-2-enterprise", prompt="p")
    assert [c.group for c in sim.sent()] == ["OpenAI Official", "OpenAI Official Enterprise"]
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warnings == [
        "MEDIAGATE_KEY_SORA2OFFICIAL is deprecated: the token group 'Sora2Official' is now "
        "'OpenAI Official'; set MEDIAGATE_KEY_OPENAIOFFICIAL instead",
        "MEDIAGATE_KEY_GPTIMAGE2ENTERPRISE is deprecated: the token group 'GPTImage2 "
        "Enterprise' is now 'OpenAI Official Enterprise'; set "
        "MEDIAGATE_KEY_OPENAIOFFICIALENTERPRISE instead",
    ]


def test_the_new_key_variable_wins_over_the_old(
    make_gateway: Callable[..., Gateway], sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mediagate")
    client = make_gateway(key_sora2official="sk-stale-not-known-upstream").sdk()
    client.images.generate(model="gpt-image-2", prompt="p")
    assert only_call(sim).status == 200
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == [
        "MEDIAGATE_KEY_SORA2OFFICIAL is deprecated: the token group 'Sora2Official' is now "
        "'OpenAI Official'; it is ignored, MEDIAGATE_KEY_OPENAIOFFICIAL is set"
    ]


def test_key_variables_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAGATE_KEY_OPENAIOFFICIAL", "k-new")
    monkeypatch.setenv("MEDIAGATE_KEY_GPTIMAGE2ENTERPRISE", "k-old")
    monkeypatch.setenv("MEDIAGATE_KEY_GPTIMAGE2SORA2ENTERPRISE", "k-upstreams-old-name")
    settings = Settings()
    assert settings.group_keys("OpenAI Official") == ["k-new"]
    assert settings.group_keys("GPTImage2 Enterprise") == ["k-old"]
    assert settings.group_keys("GPTImage2 Sora2 Enterprise") == ["k-upstreams-old-name"]
    assert set(settings.all_upstream_keys()) == {"k-new", "k-old", "k-upstreams-old-name"}

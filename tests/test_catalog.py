"""The catalog is data; settings come from MEDIAGATE_* variables; metrics count what happened."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mediagate.catalog import CatalogError, from_snapshot, load_catalog, route_snapshot
from mediagate.settings import Settings, group_env_name

from .conftest import CLIENT_KEY, GROUP_KEYS, Gateway, Sim

DEFAULT_MODELS = {
    "gpt-image-1",  # retired: an alias of gpt-image-2.6-sunburst
    "gpt-image-2",
    "gpt-image-2-enterprise",
    "gpt-image-2-web",
    "gpt-image-2-vip",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-flare-vip",
    "gpt-image-2.5-sunburst-vip",
    "gpt-image-2.5-web",
    "gpt-image-2.6-flare",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare-vip",
    "gpt-image-2.6-sunburst-vip",
    "gpt-image-2.6-web",
    # Shut down by OpenAI on 2026-12-01: aliases of gpt-image-2.6-sunburst.
    "gpt-image-1.5",
    "gpt-image-1.5-2025-12-16",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
    "sora_image",
    "gpt-4o-image",
    # Aliases of the retired Sora models (listed, like gpt-image-1).
    "sora-2",
    "sora-2-pro",
    # OpenAI's dated snapshots of them (the SDKs' VideoModel).
    "sora-2-2025-10-06",
    "sora-2-2025-12-08",
    "sora-2-pro-2025-10-06",
    *(f"muse-video{suffix}" for suffix in ("", "-20s", "-30s", "-40s", "-50s", "-60s")),
    "seedance-2.5",
    "seedance-2.0",
    "seedance-2.0-fast",
    "seedance-2.0-mini",
    "doubao-seedance-2-5-260628",
    "doubao-seedance-2-0-260128",
    "doubao-seedance-2-0-fast-260128",
    "doubao-seedance-2-0-mini-260615",
    # Dreamina Seedance (changes-2026-12.md): 2.5 Flash, and the dated ids.
    "seedance-2.5-flash",
    "dreamina-seedance-2-5-260628",
    "dreamina-seedance-2-5-flash-261115",
    "dreamina-seedance-2-0-260128",
    "dreamina-seedance-2-0-fast-260128",
    "dreamina-seedance-2-0-mini-260615",
    "wan2.7-t2v",
    "wan2.7-i2v",
    "wan2.7-r2v",
    "wan3.0-video",
    "wan3.0-video-prime",
}
# Served only in the official groups (GPT Image 2.5 and 2.6 keep their VIP route, and so the
# aliases of 2.6 Sunburst stay served).
OFFICIAL_ONLY = {"gpt-image-2-enterprise"}


def test_models_list_and_retrieve_in_the_openai_shape(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert {m.id for m in models.data} == DEFAULT_MODELS
    assert all(m.object == "model" and m.owned_by and m.created for m in models.data)
    assert client.models.retrieve("gpt-image-2-vip").id == "gpt-image-2-vip"


def test_models_say_what_is_legacy_retired_and_default(client: openai.OpenAI) -> None:
    about = {m.id: (m.model_extra or {})["mediagate"] for m in client.models.list().data}
    assert about["sora_image"] == {"kind": "image", "legacy": True, "default": False}
    assert about["gpt-4o-image"]["legacy"] is True
    assert about["gpt-image-2.5-sunburst"] == {"kind": "image", "legacy": False, "default": True}
    assert about["muse-video"] == {"kind": "video", "legacy": False, "default": True}
    assert about["sora-2"] == {
        "kind": "video",
        "legacy": False,
        "default": False,
        "alias_for": "muse-video",
        "deprecated": "2026-09-24",
    }
    assert about["gpt-image-1"] == {
        "kind": "image",
        "legacy": False,
        "default": False,
        "alias_for": "gpt-image-2.6-sunburst",
        "deprecated": "2026-11-16",
    }
    retrieved = client.models.retrieve("gpt-image-1")
    assert retrieved.id == "gpt-image-1" and retrieved.object == "model"
    assert [m for m, a in about.items() if a["legacy"]] == ["gpt-4o-image", "sora_image"]


def test_the_catalog_is_the_upstream_today() -> None:
    """Every GPT Image route of the upstream's current route matrix, in its group, with a dated,
    sourced price (upstream-2026/image-models.md)."""
    catalog = load_catalog()
    routes = {(r.upstream_model, r.group) for r in catalog.routes.values() if r.kind == "image"}
    official = ("OpenAI Official", "OpenAI Official Enterprise")
    expected = {
        ("gpt-image-2", "default"),
        ("gpt-image-2-vip", "default"),
        ("gpt-image-2.5-flare-vip", "default"),
        ("gpt-image-2.5-sunburst-vip", "default"),
        ("gpt-image-2.5-web", "default"),
        ("gpt-image-2.6-flare-vip", "default"),
        ("gpt-image-2.6-sunburst-vip", "default"),
        ("gpt-image-2.6-web", "default"),
        ("sora_image", "default"),
        ("gpt-4o-image", "default"),
        *(
            (model, group)
            for group in official
            for model in (
                "gpt-image-2",
                "gpt-image-2.5-flare",
                "gpt-image-2.5-sunburst",
                "gpt-image-2.6-flare",
                "gpt-image-2.6-sunburst",
            )
        ),
    }
    assert routes == expected
    for route in catalog.routes.values():
        if route.kind != "image":
            continue
        assert route.price is not None and route.price.source, route.id
        # The legacy chat routes' only price is the spring page's, which gave no date; GPT
        # Image 2.6's VIP and web page is undated too (and says so in its source).
        undated = route.dialect == "chat" or "undated" in (route.price.source or "")
        assert route.price.as_of is not None or undated, route.id
        if route.group in official:
            assert route.price.tokens is not None and "mask" in route.accepts, route.id
        else:
            assert route.price.tokens is None and "mask" not in route.accepts, route.id
    assert catalog.group_info["OpenAI Official Enterprise"].multiplier == 1.2
    assert catalog.default_image_model in catalog.models
    assert "gpt-image-1" not in catalog.models and "gpt-image-1" in catalog.aliases


def test_muse_looks_and_techniques_are_sourced_catalog_data() -> None:
    """Every Muse model takes the documented looks and camera techniques, each list with the
    page it came from (6 of the 7 looks and 8 of the 13 techniques are published)."""
    catalog = load_catalog()
    muse = [r for r in catalog.routes.values() if r.dialect == "muse"]
    assert len(muse) == 6
    for route in muse:
        assert route.video is not None
        options = route.video.options
        looks, skills = options["style_preset"], options["skill_preset"]
        assert looks.values is not None and len(looks.values) == 6, route.id
        assert skills.values is not None and len(skills.values) == 8 + 1, route.id  # and none
        assert (skills.type, skills.alone) == ("ids", ["none"])
        for option in (looks, skills):
            assert option.source and "muse-video-styles-2026-11" in option.source
            assert option.as_of is not None and option.as_of.isoformat() == "2026-11-04"
        assert options["custom_style"].max_chars == options["custom_skill"].max_chars == 2000


BUNDLED = load_catalog()
IMAGE_MODELS = sorted(
    name
    for name, model in BUNDLED.models.items()
    if BUNDLED.routes[model.routes[0]].kind == "image"
)


IMAGE_ALIASES = sorted(name for name, alias in BUNDLED.aliases.items() if alias.to in IMAGE_MODELS)


@pytest.mark.parametrize("model", [*IMAGE_MODELS, *IMAGE_ALIASES])
def test_every_image_model_generates_through_the_sdk(
    client: openai.OpenAI, sim: Sim, model: str
) -> None:
    target, _ = BUNDLED.resolve(model)
    raw = client.images.with_raw_response.generate(model=model, prompt="a heron", size="1024x1536")
    assert raw.headers["x-mediagate-route"] == BUNDLED.models[target].routes[0]
    assert base64.b64decode((raw.parse().data or [])[0].b64_json or "", validate=True)
    assert [c.status for c in sim.sent()] == [200]


def test_a_route_whose_group_has_no_key_is_not_offered(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(key_openaiofficial=None, key_openaiofficialenterprise=None)
    client = gateway.sdk()
    assert {m.id for m in client.models.list().data} == DEFAULT_MODELS - OFFICIAL_ONLY
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="gpt-image-2-enterprise", prompt="p")
    assert sim.sent() == []
    # gpt-image-2 keeps its last route, the default group's web route.
    response = client.images.with_raw_response.generate(model="gpt-image-2", prompt="p")
    assert response.headers["x-mediagate-route"] == "gpt-image-2.web"
    # The 2.5 and 2.6 models keep their per-call VIP route, and so do the retired names 2.6
    # Sunburst serves.
    served = {
        "gpt-image-2.5-flare": "gpt-image-2.5-flare.vip",
        "gpt-image-2.6-flare": "gpt-image-2.6-flare.vip",
        "gpt-image-1": "gpt-image-2.6-sunburst.vip",
        "gpt-image-1.5": "gpt-image-2.6-sunburst.vip",
    }
    for model, route in served.items():
        response = client.images.with_raw_response.generate(model=model, prompt="p")
        assert response.headers["x-mediagate-route"] == route


def test_a_yaml_override_adds_a_model_and_route_without_code(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    override = tmp_path / "catalog.yaml"
    override.write_text(
        """
routes:
  house-square:
    upstream_model: gpt-image-2-vip
    group: default
    dialect: images
    accepts: [prompt, n, size, response_format]
    size: {rule: table, default: 1280x1280, table: {"1:1": [1280x1280, 2880x2880]}}
  sora_image: null          # an operator can remove a route...
models:
  house-style: {routes: [house-square]}
  sora_image: null          # ...and the model that used it
"""
    )
    client = make_gateway(config=override).sdk()
    ids = {m.id for m in client.models.list().data}
    assert "house-style" in ids and "sora_image" not in ids
    raw = client.images.with_raw_response.generate(
        model="house-style", prompt="p", size="1536x1024", quality="high"
    )
    assert raw.headers["x-mediagate-route"] == "house-square"
    assert raw.headers["x-mediagate-mapped"] == "size=1536x1024>1280x1280"
    assert base64.b64decode(raw.parse().data[0].b64_json or "")
    assert sim.sent()[0].body["size"] == "1280x1280"


def test_a_new_group_takes_its_key_from_a_derived_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert group_env_name("OpenAI Official Enterprise") == "MEDIAGATE_KEY_OPENAIOFFICIALENTERPRISE"
    monkeypatch.setenv("MEDIAGATE_KEY_NIGHTLYBETA", "k1, k2")
    monkeypatch.setenv("MEDIAGATE_KEY_DEFAULT", "kd")
    monkeypatch.setenv("MEDIAGATE_KEY_OPENAIOFFICIAL", "ko")
    settings = Settings()
    assert settings.group_keys("Nightly Beta") == ["k1", "k2"]
    assert settings.group_keys("default") == ["kd"]
    assert settings.group_keys("OpenAI Official") == ["ko"]
    assert settings.group_keys("OpenAI Official Enterprise") == []
    assert set(settings.all_upstream_keys()) == {"k1", "k2", "kd", "ko"}


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAGATE_UPSTREAM_URL", "https://upstream.example/v1/")
    monkeypatch.setenv("MEDIAGATE_API_KEYS", "team-a:sk-a, team-b:sk-b")
    monkeypatch.setenv("MEDIAGATE_FETCH_ALLOW_HOSTS", "cdn.internal:443,10.0.0.5:8080")
    monkeypatch.setenv("MEDIAGATE_DATA_DIR", "/var/lib/mediagate")
    settings = Settings()
    assert settings.upstream_url == "https://upstream.example/v1"
    assert settings.client_keys() == {"team-a": "sk-a", "team-b": "sk-b"}
    assert settings.fetch_allow_hosts == ["cdn.internal:443", "10.0.0.5:8080"]
    assert str(settings.data_dir) == "/var/lib/mediagate"
    assert "sk-a" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: {x: {upstream_model: m, group: g, dialect: telepathy}}", "unknown dialect"),
        ("models: {m: {routes: [missing]}}", "unknown routes"),
        ("routes: {x: {group: g, dialect: images}}", "upstream_model"),
        ("routes: {x: {upstream_model: m, group: g, dialect: images, colour: red}}", "colour"),
        ("surprise: 1", "unknown catalog sections"),
        ("[1, 2", "not valid YAML"),
        (
            "routes: {muse-video: {video: {options: {skill_preset: {values: []}}}}}",
            "an ids option needs its values",
        ),
        (
            "routes: {muse-video: {video: {options: {skill_preset: {alone: [never]}}}}}",
            "alone names ids that are not values",
        ),
        (
            "routes: {muse-video: {video: {options: {custom_style: {type: int}}}}}",
            "max_chars applies to string options",
        ),
    ],
)
def test_invalid_catalogs_are_refused_with_a_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_catalog(override)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return None


def test_metrics_count_requests_upstream_calls_and_images(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    client.images.generate(model="gpt-image-2-web", prompt="m", n=2)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="gpt-image-2", prompt="m", n=0)
    with gateway.http(api_key=None) as http:
        text = http.get("/metrics").text
    ok = {"endpoint": "images.generations", "model": "gpt-image-2-web", "key": "team-a"}
    assert sample(text, "mediagate_requests_total", route="gpt-image-2.web", status="200", **ok)
    bad = {
        "model": "gpt-image-2",
        "route": "gpt-image-2.official",
        "status": "400",
        "key": "team-a",
    }
    assert sample(text, "mediagate_requests_total", **bad) == 1.0
    upstream = {"group": "default", "route": "gpt-image-2.web", "status": "200"}
    assert sample(text, "mediagate_upstream_requests_total", **upstream) == 2.0
    web = {"model": "gpt-image-2-web", "route": "gpt-image-2.web"}
    assert sample(text, "mediagate_images_generated_total", **web) == 2.0
    assert sample(text, "mediagate_cost_usd_total", key="team-a", model="gpt-image-2-web") == (
        pytest.approx(0.06)
    )
    assert "mediagate_request_duration_seconds_bucket" in text
    assert "mediagate_upstream_request_duration_seconds_bucket" in text
    for secret in [CLIENT_KEY, *GROUP_KEYS.values()]:
        assert secret not in text


def test_health_needs_no_key(gateway: Gateway) -> None:
    with gateway.http(api_key=None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}


def test_the_shipped_example_catalog_is_valid() -> None:
    example = Path(__file__).parent.parent / "deploy" / "catalog.example.yaml"
    catalog = load_catalog(example)
    assert catalog.route_for("house-style", "image")[1].upstream_model == "gpt-image-2-vip"


def test_dreamina_rates_say_their_basis_and_derived_ones_follow_the_stated_relation() -> None:
    """Each Dreamina rate is given (the page's own figure), derived (the SeeDance2 rate for the
    same model and resolution x 0.89, changes-2026-12.md) or a bound, with its source; the
    derived ones are that product to the cent."""
    catalog = load_catalog()
    twins = {
        "dreamina-seedance-2.5": "seedance-2.5",
        "dreamina-seedance-2.0": "seedance-2.0",
        "dreamina-seedance-2.0-fast": "seedance-2.0-fast",
        "dreamina-seedance-2.0-mini": "seedance-2.0-mini",
        "dreamina-seedance-2.5-flash": None,  # new: no doubao-* twin
    }
    for rid, twin in twins.items():
        for route in (catalog.routes[rid], catalog.routes[f"{rid}.default"]):
            assert route.group in ("Dreamina", "default") and route.dialect == "ark"
            assert route.video is not None and route.video.price is not None
            assert route.video.price.as_of is not None and route.video.price.source
            rates = route.video.price.per_million_output_tokens or {}
            for tier, rate in rates.items():
                assert rate.source, (rid, tier)
                for name in ("without_video", "with_video"):
                    basis = rate.basis_of(name)
                    assert basis in ("given", "derived", "bound"), (rid, tier, name)
                    if basis != "derived":
                        continue
                    assert twin is not None, (rid, tier, name)
                    twin_video = catalog.routes[twin].video
                    assert twin_video is not None and twin_video.price is not None
                    twin_rates = twin_video.price.per_million_output_tokens or {}
                    expected = round(getattr(twin_rates[tier], name) * 0.89, 2)
                    assert getattr(rate, name) == pytest.approx(expected), (rid, tier, name)
    # 4K: in the size table of 2.5 and 2.0, but no rate anywhere: not priced.
    for rid in ("dreamina-seedance-2.5", "dreamina-seedance-2.0"):
        video = catalog.routes[rid].video
        assert video is not None and video.tier("3840x2160") == "4k"
        assert not video.priced("4k") and video.priced("1080p")
    flash = catalog.routes["dreamina-seedance-2.5-flash"].video
    assert flash is not None and {info.resolution for info in flash.sizes.values()} == {
        "480p",
        "720p",
    }


def test_an_override_prices_dreamina_4k(tmp_path: Path) -> None:
    override = tmp_path / "4k.yaml"
    rate = {"without_video": 20, "with_video": 12, "basis": "given", "source": "operator"}
    price = {"price": {"per_million_output_tokens": {"4k": rate}}}
    override.write_text(yaml.safe_dump({"routes": {"dreamina-seedance-2.5": {"video": price}}}))
    video = load_catalog(override).routes["dreamina-seedance-2.5"].video
    assert video is not None and video.priced("4k") and video.priced("720p")
    # The other group's route keeps its own price: an operator prices both.
    default = load_catalog(override).routes["dreamina-seedance-2.5.default"].video
    assert default is not None and not default.priced("4k")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # A tier the route makes, neither priced nor said to be unpriced: a mistake.
        ("{not_priced: []}", "lacks the tiers"),
        ("{per_million_output_tokens: {480p: {basis: {with_video: given}}}}", "basis by rate"),
        ("{per_million_output_tokens: {480p: {basis: guessed}}}", "basis"),
        ("{per_million_output_tokens: {4k: {without_video: 1, with_video: 1}}, "
         "tokens_per_second: {4k: null}}", "tokens_per_second"),
    ],
)  # fmt: skip
def test_invalid_video_prices_are_refused(tmp_path: Path, change: str, message: str) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text(f"routes: {{dreamina-seedance-2.0: {{video: {{price: {change}}}}}}}\n")
    with pytest.raises(CatalogError, match=message):
        load_catalog(override)


def test_a_video_route_without_a_price_is_not_offered(tmp_path: Path) -> None:
    override = tmp_path / "free.yaml"
    override.write_text("routes: {dreamina-seedance-2.0: {video: {price: null}}}\n")
    offered = load_catalog(override).offered(lambda group: True)
    assert "dreamina-seedance-2.0" not in offered.routes
    assert offered.models["seedance-2.0"].routes == [
        "dreamina-seedance-2.0.default",
        "seedance-2.0",
    ]


def test_a_route_snapshot_of_another_version_is_still_read() -> None:
    """A video job keeps the route it started on (catalog.route_snapshot); a snapshot written by
    a replica whose Route has a field this one lacks (a rolling deploy) still gives the route
    and price, so the job is polled and billed, not failed unbilled."""
    catalog = load_catalog()
    for route in catalog.routes.values():
        assert from_snapshot(route_snapshot(route, 1.2)) == (route, 1.2)
    route = catalog.routes["dreamina-seedance-2.5"]
    newer = json.loads(route_snapshot(route, 1.0))
    newer["route"]["max_concurrent_someday"] = 3
    newer["route"]["video"]["price"]["per_frame"] = 0.5
    newer["route"]["video"]["a_new_policy"] = True
    assert from_snapshot(json.dumps(newer)) == (route, 1.0)

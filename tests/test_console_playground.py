"""The console's Playground (issue 26): a form built from the catalog in force, the server's
own estimate, and a finished video played through the console with the user's session, only
for keys the user may act with."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from mediagate.accounting.pricing import estimate_images, video_estimate
from mediagate.catalog import load_catalog
from mediagate.sizes import Size

from .conftest import (
    CLIENT_TLS,
    CONSOLE_VIEWER_KEY,
    Console,
    ConsoleClient,
    Gateway,
    console_admin_keys,
    create_key,
    fast_video_polls,
    two_teams,
    wait_until,
)

_DATA = re.compile(r'<script type="application/json" id="playground-data">(.*?)</script>', re.S)


def page_data(html: str) -> dict[str, Any]:
    found = _DATA.search(html)
    assert found is not None, "no playground data block"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def options(html: str, select_id: str) -> list[str]:
    block = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', html, re.S)
    assert block is not None, f"no select #{select_id}"
    return re.findall(r'<option value="([^"]*)"', block.group(1))


def test_the_form_is_the_catalog_s_for_the_chosen_model(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    create_key(gw, "designer", "marketing")
    c = console(gw)
    catalog = load_catalog()
    page = c.get("/console/playground?model=gpt-image-2")
    assert page.status_code == 200
    assert '<label for="model">Model</label>' in page.text
    assert '<label for="prompt">Prompt</label>' in page.text
    assert '<label for="key">Key</label>' in page.text
    assert ">Generate</button>" in page.text
    assert 'id="result"' in page.text
    data = page_data(page.text)
    official = catalog.routes[catalog.models["gpt-image-2"].routes[0]]
    image = data["models"]["gpt-image-2"]
    assert image["qualities"] == official.values["quality"]
    assert options(page.text, "quality") == official.values["quality"]
    assert options(page.text, "output_format") == official.values["output_format"]
    # A flexible rule: auto and the common sizes its own planning accepts.
    assert image["sizes"][0] == "auto" and "1536x1024" in image["sizes"]
    assert options(page.text, "size") == image["sizes"]
    # A table rule: exactly its table's sizes; a route without sizes: no size field.
    vip = catalog.routes[catalog.models["gpt-image-2-vip"].routes[0]]
    assert vip.size is not None
    table = [size for sizes in vip.size.table.values() for size in sizes]
    assert data["models"]["gpt-image-2-vip"]["sizes"] == table
    vip_page = c.get("/console/playground?model=gpt-image-2-vip").text
    assert options(vip_page, "size") == table and "3520x2336" in table
    assert data["models"]["gpt-image-2-web"]["sizes"] == []
    assert (
        '<div class="field" id="size-field" hidden>'
        in c.get("/console/playground?model=gpt-image-2-web").text
    )
    # A video model: its sizes, durations, reference and Muse's styles, from its route.
    muse = catalog.routes[catalog.models["muse-video"].routes[0]].video
    assert muse is not None
    video = data["models"]["muse-video"]
    assert video["sizes"] == list(muse.sizes) and video["seconds"] == muse.seconds
    assert video["reference"] is True
    assert video["styles"]["style_preset"] == muse.options["style_preset"].values
    muse_page = c.get("/console/playground?model=muse-video")
    assert options(muse_page.text, "seconds") == [str(s) for s in muse.seconds]
    assert 'id="input_reference" name="input_reference" type="file"' in muse_page.text
    assert "cinematic_realistic" in options(muse_page.text, "style-style_preset")
    # An admin may act with any key; the data block carries no secret, only names.
    assert {"name": "designer", "team": "marketing"} in data["keys"]
    assert "team-a" in {k["name"] for k in data["keys"]}  # MEDIAGATE_API_KEYS' too
    assert not data["open"]


def test_every_image_model_takes_what_its_form_offers(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    """The form's choices are ones the API takes: each image model's largest size, first
    quality and format, sent as the page's script sends them."""
    gw = make_gateway(admin_keys=console_admin_keys())
    c = console(gw)
    data = page_data(c.get("/console/playground").text)
    headers = {"x-mediagate-key": "team-a", "x-csrf-token": c.csrf}
    tried = 0
    for name, facts in data["models"].items():
        if facts["kind"] != "image":
            continue
        body: dict[str, Any] = {"model": name, "prompt": "a kite", "n": 1}
        body["response_format"] = "b64_json"
        if facts["sizes"]:
            body["size"] = facts["sizes"][-1]
        if facts["qualities"]:
            body["quality"] = facts["qualities"][0]
        if facts["output_formats"]:
            body["output_format"] = facts["output_formats"][0]
        answer = c.http.post("/v1/images/generations", json=body, headers=headers)
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["data"][0]["b64_json"], name
        tried += 1
    assert tried >= 10
    # Each video model's largest priced size and shortest length. The catalog does not say
    # which routes need a reference image (their upstream refuses the request without one, and
    # charges nothing): those are listed here, so one more is noticed.
    needs_reference: set[str] = set()
    for name, facts in data["models"].items():
        if facts["kind"] != "video":
            continue
        fields = {"model": name, "prompt": "a kite", "size": facts["sizes"][-1]}
        fields["seconds"] = str(facts["seconds"][0])
        made = c.http.post("/v1/videos", json=fields, headers=headers)
        if made.status_code == 400 and made.json()["error"]["code"] == "upstream_rejected":
            needs_reference.add(name)
            continue
        assert made.status_code == 200, (name, made.text)
    assert needs_reference <= {"wan2.7-i2v", "wan2.7-r2v"}, needs_reference


def test_a_member_picks_among_its_team_s_keys_and_a_viewer_has_none(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    secret = two_teams(gw)
    member = console(gw, secret)
    data = page_data(member.get("/console/playground").text)
    assert [k["name"] for k in data["keys"]] == ["designer", "shop-bot"]
    viewer = console(gw, CONSOLE_VIEWER_KEY)
    assert page_data(viewer.get("/console/playground").text)["keys"] == []


def test_an_open_gateway_s_playground_needs_no_key(
    make_gateway: Callable[..., Gateway], console: Console, tmp_path: Path
) -> None:
    overlay = fast_video_polls(tmp_path / "fast.yaml")
    open_gw = make_gateway(api_keys=None, simulator=True, video_poll_after_ms=50, config=overlay)
    local = console(open_gw, None)
    page = local.get("/console/playground")
    data = page_data(page.text)
    assert data["open"] is True and data["keys"] == []
    assert '<div class="field" id="key-field" hidden>' in page.text
    # The requests go without a key, and the video plays without one.
    video = _make_video(local, None)
    played = local.get(f"/console/playground/videos/{video['id']}/content")
    assert played.status_code == 200 and played.content


def test_the_estimate_is_what_pricing_computes(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    gw = make_gateway(admin_keys=console_admin_keys())
    c = console(gw)
    catalog = load_catalog()
    answer = c.get(
        "/console/playground/estimate",
        params={
            "model": "gpt-image-2-enterprise",
            "size": "1536x1024",
            "n": "3",
            "quality": "high",
            "prompt_chars": "40",
        },
    )
    assert answer.status_code == 200, answer.text
    route = catalog.routes[catalog.models["gpt-image-2-enterprise"].routes[0]]
    expected = estimate_images(
        route.price,
        [3],
        "x" * 40,
        size=Size.parse("1536x1024"),
        quality="high",
        multiplier=catalog.multiplier(route),
    )
    assert expected > 0 and catalog.multiplier(route) > 1  # the enterprise group's markup
    assert answer.json()["estimate_usd"] == expected
    # A route of one image per call: n images are n calls, each priced per call.
    web = catalog.routes[catalog.models["gpt-image-2-web"].routes[0]]
    per_call = c.get("/console/playground/estimate", params={"model": "gpt-image-2-web", "n": "2"})
    assert per_call.json()["estimate_usd"] == estimate_images(web.price, [1, 1], "x")
    # A model with fallbacks: the dearest route it may end up on, as admission reserves.
    fallback = c.get("/console/playground/estimate", params={"model": "gpt-image-2", "n": "1"})
    assert fallback.json()["estimate_usd"] >= estimate_images(web.price, [1], "x")
    muse = catalog.routes[catalog.models["muse-video"].routes[0]]
    assert muse.video is not None
    video = c.get(
        "/console/playground/estimate",
        params={"model": "muse-video", "size": "720x1280", "seconds": "8"},
    ).json()
    assert video["estimate_usd"] == video_estimate(muse.video.price, "720x1280", 8)
    assert video["seconds"] == 8
    bad = c.get("/console/playground/estimate", params={"model": "gpt-image-2", "size": "7x7"})
    assert bad.status_code == 400
    assert "size" in bad.json()["error"]["message"]


def _make_video(member: ConsoleClient, key: str | None) -> dict[str, Any]:
    headers = {"x-csrf-token": member.csrf}
    if key is not None:
        headers["x-mediagate-key"] = key
    made = member.http.post(
        "/v1/videos",
        json={"model": "muse-video", "prompt": "a lighthouse", "seconds": "8"},
        headers=headers,
    )
    assert made.status_code == 200, made.text
    video: dict[str, Any] = made.json()

    def done() -> bool:
        nonlocal video
        video = member.http.get(f"/v1/videos/{video['id']}", headers=headers).json()
        return bool(video["status"] == "completed")

    wait_until(done, timeout_s=20)
    return video


def test_a_finished_video_plays_through_the_console_for_the_user_s_keys_only(
    make_gateway: Callable[..., Gateway], console: Console, tmp_path: Path
) -> None:
    overlay = fast_video_polls(tmp_path / "fast.yaml")
    gw = make_gateway(admin_keys=console_admin_keys(), video_poll_after_ms=50, config=overlay)
    secret = create_key(gw, "designer", "marketing")
    create_key(gw, "shop-bot", "marketing")
    research = create_key(gw, "ml", "research")
    member = console(gw, secret)
    video = _make_video(member, "shop-bot")
    url = f"/console/playground/videos/{video['id']}/content"
    played = member.get(url, params={"key": "shop-bot"})
    assert played.status_code == 200, played.text
    assert played.headers["content-type"] == "video/mp4"
    ranged = member.get(url, params={"key": "shop-bot"}, headers={"range": "bytes=0-9"})
    assert ranged.status_code == 206
    assert ranged.content == played.content[:10]
    # Without the session, nothing.
    with httpx2.Client(base_url=gw.url, verify=CLIENT_TLS) as stranger:
        assert stranger.get(url, params={"key": "shop-bot"}).status_code in (303, 401)
    # Another team's video: not found with the member's own keys, forbidden with theirs.
    theirs = gw.sdk(research).videos.create(model="muse-video", prompt="other team", seconds="8")
    other = f"/console/playground/videos/{theirs.id}/content"
    assert member.get(other, params={"key": "shop-bot"}).status_code == 404
    assert member.get(other, params={"key": "ml"}).status_code == 403
    assert member.get(other).status_code == 404

"""The console's Gallery (issue 26): the images and videos the gateway kept
(MEDIAGATE_KEEP_OUTPUTS), listed for the team that made them and served through the console's
cookie-authenticated content route (Range requests included); the retention sweep."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from pathlib import Path

from mediagate.observability.metrics import Metrics
from mediagate.stores.hosted import LocalHostedImages
from mediagate.stores.kept import Keeper
from mediagate.stores.sql import outputs
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.migrate import upgrade

from .conftest import (
    Console,
    Gateway,
    console_admin_keys,
    create_key,
    fast_video_polls,
    wait_until,
)


def _items(page: str) -> list[tuple[str, str]]:
    """(output id, kind) of each output the page shows, in its order."""
    return re.findall(r'<li class="output" id="output-(\d+)" data-kind="(\w+)"', page)


def _kept_gateway(make_gateway: Callable[..., Gateway], tmp_path: Path, **more: object) -> Gateway:
    return make_gateway(
        admin_keys=console_admin_keys(),
        config=fast_video_polls(tmp_path / "fast-polls.yaml"),
        video_poll_after_ms=50,
        log_prompts=True,
        **more,
    )


def test_the_gallery_shows_what_a_team_made_and_serves_its_exact_bytes(
    make_gateway: Callable[..., Gateway], console: Console, tmp_path: Path
) -> None:
    gw = _kept_gateway(make_gateway, tmp_path, keep_outputs=True)
    red = create_key(gw, "red-maker", "red")
    sdk = gw.sdk(red)
    image = sdk.images.generate(
        model="gpt-image-2-web", prompt="a red kite over dunes", response_format="b64_json"
    )
    assert image.data and image.data[0].b64_json
    image_bytes = base64.b64decode(image.data[0].b64_json)
    video = sdk.videos.create_and_poll(prompt="a lighthouse at dusk")
    assert video.status == "completed"
    video_bytes = sdk.videos.download_content(video.id).content

    admin = console(gw)
    wait_until(lambda: len(_items(admin.get("/console/gallery").text)) == 2, timeout_s=20)
    page = admin.get("/console/gallery").text
    (video_id, video_kind), (image_id, image_kind) = _items(page)  # newest first
    assert (video_kind, image_kind) == ("video", "image")
    assert "a red kite over dunes" in page and "a lighthouse at dusk" in page
    assert "gpt-image-2-web" in page and "red-maker" in page
    assert f'<video controls preload="metadata" src="/console/content/{video_id}"' in page
    assert f'src="/console/content/{image_id}"' in page
    assert "Upstream link" in page and "expires in" in page
    assert f'href="/console/content/{image_id}?download=1"' in page

    # A team member (signed in with a key of its team) sees them; the image is what the SDK got.
    member = console(gw, create_key(gw, "red-viewer", "red"))
    assert [i for i, _ in _items(member.get("/console/gallery").text)] == [video_id, image_id]
    served = member.get(f"/console/content/{image_id}")
    assert served.status_code == 200
    assert served.content == image_bytes
    assert served.headers["content-type"].startswith("image/")
    assert served.headers["accept-ranges"] == "bytes"
    whole = member.get(f"/console/content/{video_id}")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.content == video_bytes  # kept whole, as the content route relays it

    # A player's Range requests: slices, suffixes, open ends; past the end, 416.
    size = len(video_bytes)
    for asked, first, last in (
        ("bytes=0-99", 0, 99),
        (f"bytes={size - 10}-", size - 10, size - 1),
        ("bytes=-7", size - 7, size - 1),
        (f"bytes=100-{size + 500}", 100, size - 1),
    ):
        part = member.http.get(f"/console/content/{video_id}", headers={"Range": asked})
        assert part.status_code == 206, asked
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.content == video_bytes[first : last + 1], asked
    past = member.http.get(f"/console/content/{video_id}", headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"

    attachment = member.get(f"/console/content/{image_id}?download=1")
    assert attachment.headers["content-disposition"].startswith("attachment;")

    # Another team's member: not in its gallery, and a 404 by id (URL tampering included).
    blue = console(gw, create_key(gw, "blue-viewer", "blue"))
    assert _items(blue.get("/console/gallery").text) == []
    for ident in (image_id, video_id):
        assert blue.get(f"/console/content/{ident}").status_code == 404
    # Filters: by kind, and by a team that is not the caller's (a member's scope holds).
    assert [k for _, k in _items(admin.get("/console/gallery?kind=image").text)] == ["image"]
    assert _items(admin.get("/console/gallery?team=blue").text) == []
    assert _items(blue.get("/console/gallery?team=red").text) == []
    # Keyset pages: one per page, the second holds the older one.
    first = admin.get("/console/gallery?limit=1").text
    older = re.search(r'href="/console/gallery\?([^"]+)" rel="next"', first)
    assert older is not None and [i for i, _ in _items(first)] == [video_id]
    second = admin.get("/console/gallery?" + older.group(1).replace("&amp;", "&")).text
    assert [i for i, _ in _items(second)] == [image_id]


def test_nothing_is_kept_outside_simulator_mode_by_default(
    make_gateway: Callable[..., Gateway], console: Console, tmp_path: Path
) -> None:
    gw = _kept_gateway(make_gateway, tmp_path)  # MEDIAGATE_KEEP_OUTPUTS unset, a real upstream
    assert gw.settings.outputs_kept() is False
    sdk = gw.sdk(create_key(gw, "red-maker", "red"))
    sdk.images.generate(model="gpt-image-2-web", prompt="not kept", response_format="b64_json")
    page = console(gw).get("/console/gallery").text
    assert "MEDIAGATE_KEEP_OUTPUTS=true" in page
    assert _items(page) == []
    assert not (tmp_path / "data" / "images" / "outputs").exists()

    # A completed video still plays, relayed from its upstream; only for its team.
    video = sdk.videos.create_and_poll(prompt="relayed")
    relayed = sdk.videos.download_content(video.id).content
    page = console(gw).get("/console/gallery").text
    src = f"/console/content/videos/{video.id}"
    assert f'<video controls preload="metadata" src="{src}"' in page
    member = console(gw, create_key(gw, "red-viewer", "red"))
    assert f'src="{src}"' in member.get("/console/gallery").text
    assert member.get(src).content == relayed
    part = member.http.get(src, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == relayed[10:20]
    blue = console(gw, create_key(gw, "blue-viewer", "blue"))
    assert f'src="{src}"' not in blue.get("/console/gallery").text
    assert blue.get(src).status_code == 404


def test_the_sweep_removes_outputs_past_their_days_then_the_oldest_past_the_cap(
    tmp_path: Path, database_url: str
) -> None:
    now = [1_000_000.0]

    async def scenario() -> tuple[list[int], list[int], int]:
        database = await Database.open(database_url)
        try:
            await upgrade(database)
            store = LocalHostedImages(tmp_path / "outputs", retention_s=10 * 86400)
            keeper = Keeper(store, database, Metrics(), days=2, max_bytes=250, clock=lambda: now[0])

            async def png(size: int) -> tuple[bytes, str]:
                return b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8), "image/png"

            for age_days, size in ((3, 100), (1.5, 100), (1, 100), (0, 100)):
                now[0] = 1_000_000.0 - age_days * 86400
                keeper.image(lambda size=size: png(size), {"team": "red"})  # type: ignore[misc]
                await keeper.drain()
            now[0] = 1_000_000.0
            before = await database.run(
                lambda tx: outputs.page(tx, outputs.OutputFilter(), None, 10)
            )
            removed = await keeper.sweep()
            after = await database.run(
                lambda tx: outputs.page(tx, outputs.OutputFilter(), None, 10)
            )
            files = len(list((tmp_path / "outputs").iterdir()))
            return [r["id"] for r in before], [r["id"] for r in after], removed * 100 + files
        finally:
            await database.close()

    before, after, counts = asyncio.run(scenario())
    assert before == [4, 3, 2, 1]
    # 1 is past 2 days; then 400 - 100 = 300 bytes is past the 250 cap: 2, the oldest, goes.
    assert after == [4, 3]
    assert counts == 2 * 100 + 2  # two removed, two files left


def test_a_streamed_answers_and_a_links_images_are_kept(
    make_gateway: Callable[..., Gateway], console: Console, tmp_path: Path
) -> None:
    gw = _kept_gateway(make_gateway, tmp_path, keep_outputs=True)
    sdk = gw.sdk(create_key(gw, "red-maker", "red"))
    made = []
    # An emulated stream (the route answers JSON) and a relayed one (the upstream's events).
    for model, partials in (("gpt-image-2-web", 0), ("gpt-image-2", 2)):
        events = list(
            sdk.images.generate(
                model=model, prompt=f"streamed {model}", stream=True, partial_images=partials
            )
        )
        [done] = [e for e in events if e.type == "image_generation.completed"]
        made.append(base64.b64decode(done.b64_json))
    # A `url` answer: the gateway's own hosted copy, kept as the client can fetch it.
    linked = sdk.images.generate(model="gpt-image-2-web", prompt="linked", response_format="url")
    assert linked.data and linked.data[0].url
    with gw.http(None) as http:
        made.append(http.get(linked.data[0].url).content)
    admin = console(gw)
    wait_until(lambda: len(_items(admin.get("/console/gallery").text)) == 3, timeout_s=20)
    ids = [i for i, _ in _items(admin.get("/console/gallery").text)]
    assert [admin.get(f"/console/content/{i}").content for i in ids] == made[::-1]


def test_a_store_that_fails_is_a_metric_never_the_clients_error(
    make_gateway: Callable[..., Gateway], console: Console, tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    gw = _kept_gateway(make_gateway, tmp_path, keep_outputs=True, image_store_url=f"file:{blocked}")
    sdk = gw.sdk(create_key(gw, "red-maker", "red"))
    image = sdk.images.generate(model="gpt-image-2-web", prompt="x", response_format="b64_json")
    assert image.data and image.data[0].b64_json

    def failed() -> bool:
        with gw.http(None) as http:
            metrics = http.get("/metrics").text
        return 'mediagate_outputs_total{kind="image",outcome="failed"} 1.0' in metrics

    wait_until(failed, timeout_s=20)
    assert _items(console(gw).get("/console/gallery").text) == []

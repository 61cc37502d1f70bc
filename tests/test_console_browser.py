"""The console in a real browser (issue 26): Chromium driven by Playwright against a gateway on
the simulator. Signing in and out through the form, by mouse and by keyboard alone; every page
at 1280 px and 390 px wide (screenshots, no sideways scrolling, the accessibility basics of
tests/a11y.py); then the pages' own journeys: the playground generates an image that the
gallery and request log show, a request-log filter is a URL that can be shared, a member
cannot open another team's request, a finished video plays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from . import a11y, screenshots
from .conftest import (
    CLIENT_KEY,
    CONSOLE_ADMIN_KEY,
    PHONE,
    Gateway,
    console_admin_keys,
    create_key,
    fast_video_polls,
    sign_in_page,
    wait_for_status,
    wait_until,
)

MakeGateway = Callable[..., Gateway]
NewPage = Callable[..., Page]
SignedIn = Callable[..., Page]


@pytest.fixture
def gw(make_gateway: MakeGateway) -> Gateway:
    # Outputs kept (on by default only in simulator mode): the playground's land in the gallery.
    return make_gateway(admin_keys=console_admin_keys(), keep_outputs=True)


def open_page(page: Page, gw: Gateway, path: str) -> Page:
    """`path` on `page`, answered 200."""
    answer = page.goto(gw.url + path)
    assert answer is not None and answer.ok, f"{path}: {answer and answer.status}"
    return page


def horizontal_overflow(page: Page) -> int:
    """How many pixels the document is wider than the viewport (0: no sideways scrolling)."""
    overflow: int = page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth"
    )
    return overflow


# --- Signing in and out ------------------------------------------------------------------------


def test_an_admin_signs_in_through_the_form_and_out_again(
    gw: Gateway, browser_page: NewPage
) -> None:
    page = browser_page()
    page.goto(f"{gw.url}/console/requests")
    page.wait_for_url(re.compile(r"/console/login\?next="))  # no session: sent to sign in
    page.get_by_label("Key").fill(CONSOLE_ADMIN_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{gw.url}/console/requests")  # and back where it was going
    expect(page.get_by_text("ops · admin")).to_be_visible()
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{gw.url}/console/login")
    page.goto(f"{gw.url}/console")
    page.wait_for_url(re.compile(r"/console/login"))  # the session is gone
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_signing_in_by_keyboard_alone(gw: Gateway, browser_page: NewPage) -> None:
    page = browser_page()
    page.goto(f"{gw.url}/console/login")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "key":
            break
    else:
        pytest.fail("Tab never reached the Key field")
    page.keyboard.type(CONSOLE_ADMIN_KEY)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{gw.url}/console")
    expect(page.get_by_text("ops · admin")).to_be_visible()


def test_a_wrong_key_shows_the_error_on_the_form(gw: Gateway, browser_page: NewPage) -> None:
    page = browser_page()
    page.goto(f"{gw.url}/console/login")
    page.get_by_label("Key").fill("sk-not-a-key-of-this-gateway")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).not_to_be_empty()
    assert page.url.startswith(f"{gw.url}/console/login")
    # The form is there again, ready for another try, and the key is not echoed back.
    expect(page.get_by_label("Key")).to_have_value("")
    page.get_by_label("Key").fill(CONSOLE_ADMIN_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{gw.url}/console")


# --- Every page: screenshots, 390 px, accessibility ---------------------------------------------


def test_every_page_at_both_widths(
    gw: Gateway, browser_page: NewPage, signed_in_page: SignedIn, tmp_path: Path
) -> None:
    """Each page at 1280 and 390 px: a screenshot (SCREENSHOTS_DIR, else a temporary folder),
    no sideways scrolling at 390 px, and the accessibility checker's basics at both widths."""
    for prompt in ("a lighthouse at dusk", "a red kite over hills"):  # something to show
        assert gw.generate(prompt).status_code == 200
    assert gw.generate("no such model", model="no-such-model").status_code >= 400
    with gw.http() as http:  # a video job for the jobs page
        assert http.post("/v1/videos", json={"prompt": "waves on a beach"}).status_code == 200
    sdk = gw.sdk()  # a batch for the batches page
    body = {"model": "gpt-image-2-web", "prompt": "a kite"}
    line = {"custom_id": "kite", "method": "POST", "url": "/v1/images/generations", "body": body}
    upload = sdk.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/images/generations", completion_window="24h"
    )
    into = screenshots.folder(tmp_path / "screenshots")
    problems: list[str] = []
    for width in screenshots.WIDTHS:
        height = screenshots.HEIGHTS[width]
        signed_out = browser_page(width, height)
        signed_in = signed_in_page(gw, width=width, height=height)
        for name, path in screenshots.PAGES.items():
            page = signed_out if name == "login" else signed_in
            answer = page.goto(gw.url + path)
            assert answer is not None and answer.ok, f"{path}: {answer and answer.status}"
            shot = screenshots.take(page, name, width, into)
            with Image.open(shot) as image:
                assert image.size == (width, height)
            if width == PHONE[0] and (overflow := horizontal_overflow(page)):
                problems.append(f"{path} at {width} px: {overflow} px of sideways scrolling")
            problems.extend(f"{path} at {width} px: {v}" for v in a11y.violations(page))
    assert not problems, "\n".join(problems)
    assert len(list(into.glob("console-*.png"))) >= 2 * len(screenshots.PAGES)


def test_every_page_is_usable_by_keyboard(
    gw: Gateway, browser_page: NewPage, signed_in_page: SignedIn
) -> None:
    """Tab reaches each page's controls, each showing where the focus is."""
    signed_out, signed_in = browser_page(), signed_in_page(gw)
    problems: list[str] = []
    for name, path in screenshots.PAGES.items():
        page = signed_out if name == "login" else signed_in
        page.goto(gw.url + path)
        problems.extend(f"{path}: {v}" for v in a11y.keyboard_violations(page))
    assert not problems, "\n".join(problems)


def test_the_checker_finds_what_it_checks(browser_page: NewPage) -> None:
    """The checker itself: a page with each fault is reported for each, a clean one is not."""
    page = browser_page()
    page.set_content(
        "<style>.pale{color:#999}.dark{background:#222}.dark p{color:#333}"
        "button:focus{outline:none}</style>"
        '<main><input id="a"><label>Named <input id="b"></label><button></button>'
        '<a href="/x"></a><p class="pale">grey on white</p>'
        '<div class="dark"><p>dark on dark</p></div><p>fine text</p></main>'
    )
    found = a11y.violations(page)
    assert any(v.startswith("no label: input#a") for v in found), found
    assert not any("input#b" in v for v in found), found
    assert sum(v.startswith("no accessible name") for v in found) == 2, found
    assert any(v.startswith("contrast 2.85:1") and "grey on white" in v for v in found), found
    assert any("dark on dark" in v for v in found), found
    assert not any("fine text" in v for v in found), found
    assert "no visible focus indicator: button" in "\n".join(a11y.keyboard_violations(page))


# --- The pages' journeys --------------------------------------------------------------------------


def choose(page: Page, selector: str, value: str) -> None:
    """Set a field that may be a <select> (by its option's value or label) or a text input."""
    field = page.locator(selector)
    if field.evaluate("el => el.tagName") == "SELECT":
        labels = field.locator("option").all_inner_texts()
        field.select_option(label=value) if value in labels else field.select_option(value)
    else:
        field.fill(value)


def test_the_playground_generates_an_image_the_gallery_and_request_log_show(
    gw: Gateway, signed_in_page: SignedIn
) -> None:
    secret = create_key(gw, "designer", "marketing")
    create_key(gw, "shop-bot", "marketing")
    page = open_page(signed_in_page(gw, secret), gw, "/console/playground")
    expect(page.get_by_label("Model")).to_be_visible()
    expect(page.get_by_label("Prompt")).to_be_visible()
    choose(page, "#model", "gpt-image-2-web")
    choose(page, "#key", "shop-bot")
    page.get_by_label("Prompt").fill("a paper boat on a pond")
    page.get_by_role("button", name="Generate").click()
    made = page.locator("#result img, #result video").first
    expect(made).to_be_visible(timeout=30_000)
    assert made.evaluate("el => el.tagName === 'IMG' ? el.naturalWidth > 0 : true")

    page = open_page(page, gw, "/console/gallery")
    images = page.locator("main img")
    expect(images.first).to_be_visible()
    with gw.http(CONSOLE_ADMIN_KEY) as admin:  # the request log writes in batches
        wait_until(lambda: admin.get("/admin/v1/requests?key=shop-bot").json()["data"] != [])
    page = open_page(page, gw, "/console/requests")
    expect(page.locator("main").get_by_text("gpt-image-2-web").first).to_be_visible()
    expect(page.locator("main").get_by_text("shop-bot").first).to_be_visible()


def wait_recorded(gw: Gateway, *request_ids: str) -> None:
    """Until the request log has written these rows (it writes in batches, off the request
    path, every MEDIAGATE_REQUEST_LOG_FLUSH_S)."""
    with gw.http(CONSOLE_ADMIN_KEY) as admin:
        for request_id in request_ids:
            path = f"/admin/v1/requests/{request_id}"
            wait_until(lambda path=path: admin.get(path).status_code == 200)


def test_a_request_log_filter_is_a_url_to_share(
    gw: Gateway, signed_in_page: SignedIn, browser_page: NewPage
) -> None:
    with gw.http() as http:
        ok = http.post("/v1/images/generations", json={"model": "gpt-image-2-web", "prompt": "ok"})
        bad = http.post("/v1/images/generations", json={"model": "no-such-model", "prompt": "x"})
    assert ok.status_code == 200 and bad.status_code >= 400
    ok_id, bad_id = ok.headers["x-request-id"], bad.headers["x-request-id"]
    wait_recorded(gw, ok_id, bad_id)
    page = open_page(signed_in_page(gw), gw, "/console/requests")
    expect(page.locator(f'main a[href*="{ok_id}"]').first).to_be_visible()

    status = page.locator("form [name=status]")
    choose(page, "form [name=status]", "4xx")
    status.evaluate("el => el.form.requestSubmit()")  # a GET form: the filter becomes the URL
    page.wait_for_url(re.compile(r"[?&]status=4xx"))
    shared = page.url
    for seen in (page, sign_in_page(browser_page(), gw)):  # and someone else opening that URL
        seen.goto(shared)
        expect(seen.locator(f'main a[href*="{bad_id}"]').first).to_be_visible()
        expect(seen.locator(f'main a[href*="{ok_id}"]')).to_have_count(0)
        expect(seen.locator("form [name=status]")).to_have_value("4xx")


def test_a_member_cannot_open_another_team_s_request(gw: Gateway, signed_in_page: SignedIn) -> None:
    mine, theirs = create_key(gw, "mine", "team-x"), create_key(gw, "theirs", "team-y")
    with gw.http(theirs) as http:
        made = http.post(
            "/v1/images/generations", json={"model": "gpt-image-2-web", "prompt": "secret plans"}
        )
    assert made.status_code == 200, made.text
    wait_recorded(gw, made.headers["x-request-id"])
    path = f"/console/requests/{made.headers['x-request-id']}"

    owner = open_page(signed_in_page(gw, theirs), gw, "/console/requests")
    answer = owner.goto(gw.url + path)  # its own team's member sees it
    assert answer is not None and answer.status == 200
    expect(owner.locator("main")).to_contain_text(made.headers["x-request-id"])

    other = signed_in_page(gw, mine)
    answer = other.goto(gw.url + path)
    assert answer is not None and answer.status == 404
    assert "secret plans" not in other.content()
    other.goto(f"{gw.url}/console/requests")
    expect(other.locator(f'main a[href*="{made.headers["x-request-id"]}"]')).to_have_count(0)


def test_a_finished_video_plays_in_the_console(
    make_gateway: MakeGateway, signed_in_page: SignedIn, tmp_path: Path
) -> None:
    gw = make_gateway(
        admin_keys=console_admin_keys(),
        video_poll_after_ms=50,
        config=fast_video_polls(tmp_path / "fast-polls.yaml"),
    )
    with gw.http(CLIENT_KEY) as http:
        made = http.post("/v1/videos", json={"prompt": "waves on a beach", "seconds": "4"})
        assert made.status_code == 200, made.text
        wait_for_status(http, f"/v1/videos/{made.json()['id']}", "completed")
    page = open_page(signed_in_page(gw), gw, "/console/gallery")
    video = page.locator("main video").first
    expect(video).to_be_attached()
    video.evaluate("v => { v.muted = true; v.preload = 'auto'; v.load(); }")
    page.wait_for_function(
        "v => v.readyState >= 2 && !v.error", arg=video.element_handle(), timeout=15_000
    )


def test_an_admin_makes_a_key_in_the_console_that_the_sdk_then_uses(
    gw: Gateway, signed_in_page: SignedIn
) -> None:
    page = open_page(signed_in_page(gw), gw, "/console/keys")
    page.get_by_label("Name").first.fill("from-the-browser")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret-value")
    expect(secret).to_be_visible()
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    made = gw.sdk(secret.input_value()).images.generate(model="gpt-image-2-web", prompt="a key")
    assert made.data and made.data[0].b64_json
    page = open_page(page, gw, "/console/keys")  # the secret was shown once: never again
    expect(page.locator("main")).to_contain_text("from-the-browser")
    assert page.locator("#secret-value").count() == 0


def test_a_video_made_in_the_playground_completes_and_plays(
    make_gateway: MakeGateway, signed_in_page: SignedIn, tmp_path: Path
) -> None:
    gw = make_gateway(
        admin_keys=console_admin_keys(),
        video_poll_after_ms=50,
        config=fast_video_polls(tmp_path / "fast-polls.yaml"),
    )
    create_key(gw, "studio", "film")
    page = open_page(signed_in_page(gw), gw, "/console/playground")
    video_model = page.evaluate(
        "() => [...document.querySelectorAll('#model option')]"
        ".map(o => o.value).find(v => v.startsWith('muse-video'))"
    )
    assert video_model, "the playground offers no Muse video model"
    choose(page, "#model", video_model)
    choose(page, "#key", "studio")
    expect(page.locator("#seconds")).to_be_visible()
    page.get_by_label("Prompt").fill("waves on a beach at dusk")
    page.get_by_role("button", name="Generate").click()
    player = page.locator("#result video")
    expect(player).to_be_attached(timeout=30_000)
    player.evaluate("v => { v.muted = true; v.preload = 'auto'; v.load(); }")
    page.wait_for_function(
        "v => v.readyState >= 2 && !v.error", arg=player.element_handle(), timeout=15_000
    )

"""The console's Batches pages (/console/batches, /console/batches/{id}): real batches made
through the SDK on the simulator, then shown with their status, counts and costs, their lines
linked to the request log and their files downloadable through the console; a member sees its
team's batches only; a viewer may look but not cancel; an admin's cancel stops a slow batch."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any, Final

import openai
from openai.types import Batch
from playwright.sync_api import Page, expect

from mediagate.console.web import usd

from . import a11y
from .conftest import (
    CONSOLE_VIEWER_KEY,
    DESKTOP,
    PHONE,
    Console,
    Gateway,
    Sim,
    console_admin_keys,
    create_key,
    two_teams,
    wait_until,
)

ROW = re.compile(r'<tr id="batch-(batch_[0-9a-zA-Z]+)"')
IMAGES: Final = "/v1/images/generations"


def batch_gateway(make_gateway: Callable[..., Gateway], **extra: Any) -> Gateway:
    return make_gateway(admin_keys=console_admin_keys(), batch_poll_interval_s=0.05, **extra)


def image_line(custom_id: str, prompt: str) -> dict[str, Any]:
    body = {"model": "gpt-image-2-web", "prompt": prompt}
    return {"custom_id": custom_id, "method": "POST", "url": IMAGES, "body": body}


def make_batch(sdk: openai.OpenAI, lines: list[dict[str, Any]]) -> Batch:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = sdk.files.create(file=("input.jsonl", data), purpose="batch")
    return sdk.batches.create(input_file_id=upload.id, endpoint=IMAGES, completion_window="24h")


def ended(sdk: openai.OpenAI, batch_id: str, status: str = "completed") -> Batch:
    wait_until(lambda: sdk.batches.retrieve(batch_id).status == status, timeout_s=20)
    return sdk.batches.retrieve(batch_id)


def rows(text: str) -> list[str]:
    return ROW.findall(text)


def row_of(text: str, batch_id: str) -> str:
    start = text.index(f'<tr id="batch-{batch_id}"')
    return text[start : text.index("</tr>", start)]


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def cost_of(batch: Batch) -> float:
    extra = batch.model_extra or {}
    return float(extra["cost_usd"])


def test_batches_listed_with_counts_and_costs_lines_files_and_a_members_own_only(
    make_gateway: Callable[..., Gateway], console: Console, job_store: dict[str, str]
) -> None:
    gw = batch_gateway(make_gateway, **job_store)  # the records on SQLite, then PostgreSQL
    designer_key = two_teams(gw)  # marketing
    researcher_key = create_key(gw, "researcher", "research")
    designer, researcher = gw.sdk(api_key=designer_key), gw.sdk(api_key=researcher_key)
    theirs = ended(researcher, make_batch(researcher, [image_line("r-1", "a microscope")]).id)
    made = make_batch(
        designer,
        [
            image_line("poster-1", "a lighthouse at dusk"),
            image_line("poster-2", "a red kite over hills"),
            image_line("poster-3", "[sim:burst400=1:refused] a refused one"),
        ],
    )
    mine = ended(designer, made.id)
    assert mine.request_counts is not None
    assert (mine.request_counts.completed, mine.request_counts.failed) == (2, 1)
    assert mine.output_file_id and mine.error_file_id and theirs.output_file_id
    admin = console(gw)

    # The list: newest first, every batch for an admin, with counts, progress and costs.
    page = admin.get("/console/batches")
    assert page.status_code == 200, page.text
    assert rows(page.text) == [mine.id, theirs.id]
    row = row_of(page.text, mine.id)
    assert 'badge ok">completed<' in row
    assert '<progress max="3" value="3"' in row and "3 of 3" in row
    assert re.findall(r'<td class="num">(\d+)</td>', row) == ["2", "1", "3"]
    assert cost_of(mine) > 0 and usd(cost_of(mine)) in row
    estimate = (mine.model_extra or {})["estimate_usd"]
    assert estimate > 0 and usd(estimate) in row
    assert "designer" in row and "marketing" in row and IMAGES in row
    assert "hx-get" not in row  # finished: no polling
    # Filters: status (a bogus one refused), key, team; empty fields filter nothing.
    assert rows(admin.get("/console/batches?status=completed").text) == [mine.id, theirs.id]
    assert rows(admin.get("/console/batches?status=in_progress").text) == []
    assert admin.get("/console/batches?status=bogus").status_code == 400
    assert rows(admin.get("/console/batches?team=research").text) == [theirs.id]
    assert rows(admin.get("/console/batches?key=designer&team=").text) == [mine.id]
    assert rows(admin.get("/console/batches?status=&key=&team=").text) == [mine.id, theirs.id]
    # Keyset pages: the next page's link carries the last batch shown.
    first = admin.get("/console/batches?limit=1").text
    assert rows(first) == [mine.id]
    older = re.search(r'<a href="(/console/batches\?[^"]+)" rel="next">', first)
    assert older is not None and f"after={mine.id}" in older.group(1)
    second = admin.get(html.unescape(older.group(1))).text
    assert rows(second) == [theirs.id] and 'rel="next"' not in second
    assert admin.get("/console/batches?after=batch_nosuch").status_code == 400

    # One batch: its record, its lines linked to their requests, its files.
    detail = admin.get(f"/console/batches/{mine.id}")
    assert detail.status_code == 200
    text = detail.text
    for custom_id in ("poster-1", "poster-2", "poster-3"):
        assert f'<td class="mono">{custom_id}</td>' in text
    request_ids = re.findall(r'href="/console/requests/([^"]+)"', text)
    assert len(request_ids) == 3
    assert text.count('badge ok">done<') == 2 and 'badge bad">failed<' in text
    # The request log is written off the request's path: each line's request lands there.
    wait_until(
        lambda: all(admin.get(f"/console/requests/{r}").status_code == 200 for r in request_ids)
    )
    line_request = admin.get(f"/console/requests/{request_ids[0]}").text
    assert "lighthouse" in line_request or request_ids[0] in line_request
    assert f"<dt>Cost booked</dt><dd>{usd(cost_of(mine))}</dd>" in text
    assert "Cancel batch" not in text  # completed: nothing to cancel
    late = admin.post(f"/console/batches/{mine.id}/cancel")  # a form left open: said why
    assert late.status_code == 409 and "only a batch in progress" in late.text
    # Lines in pages of LINE_ROWS: none after the last.
    assert "No more lines." in admin.get(f"/console/batches/{mine.id}?after_line=3").text
    # Its files, through the console: the bytes the Files API serves, and nothing else.
    for file_id in (mine.output_file_id, mine.error_file_id, mine.input_file_id):
        assert f'href="/console/batches/{mine.id}/files/{file_id}"' in text
        got = admin.get(f"/console/batches/{mine.id}/files/{file_id}")
        assert got.status_code == 200, got.text
        assert got.content == designer.files.content(file_id).content
    output = jsonl(admin.get(f"/console/batches/{mine.id}/files/{mine.output_file_id}").text)
    assert sorted(o["custom_id"] for o in output) == ["poster-1", "poster-2"]
    (error,) = jsonl(admin.get(f"/console/batches/{mine.id}/files/{mine.error_file_id}").text)
    assert error["custom_id"] == "poster-3"
    assert {o["response"]["request_id"] for o in [*output, error]} == set(request_ids)
    # The failed line's answer, as its row shows it: status and error code.
    failed_row = text[text.index('<tr id="line-3"') :].split("</tr>")[0]
    status, code = error["response"]["status_code"], error["response"]["body"]["error"]["code"]
    assert f'<span class="badge bad">{status}</span>' in failed_row and code in failed_row
    assert admin.get(f"/console/batches/{mine.id}/files/{theirs.output_file_id}").status_code == 404
    assert admin.get(f"/console/batches/{mine.id}/files/file-nosuch").status_code == 404
    assert admin.get("/console/batches/batch_nosuch").status_code == 404

    # A member: its team's batches only; another team's batch, row and files are 404s.
    member = console(gw, designer_key)
    assert rows(member.get("/console/batches").text) == [mine.id]
    assert rows(member.get("/console/batches?team=research").text) == [mine.id]  # its own team
    assert member.get(f"/console/batches/{mine.id}").status_code == 200
    refused_paths = (
        f"/console/batches/{theirs.id}",
        f"/console/batches/{theirs.id}/row",
        f"/console/batches/{theirs.id}/files/{theirs.output_file_id}",
    )
    for path in refused_paths:
        refused = member.get(path)
        assert refused.status_code == 404, path
        assert "microscope" not in refused.text
    assert member.post(f"/console/batches/{theirs.id}/cancel").status_code == 404
    # A viewer sees every batch.
    viewer = console(gw, CONSOLE_VIEWER_KEY)
    assert rows(viewer.get("/console/batches").text) == [mine.id, theirs.id]


def test_a_viewer_may_not_cancel_and_an_admins_cancel_stops_a_slow_batch(
    make_gateway: Callable[..., Gateway], console: Console, sim: Sim
) -> None:
    # One line at a time: the cancel lands while the first is in flight, the rest unsent.
    gw = batch_gateway(make_gateway, batch_concurrency=1)
    designer_key = two_teams(gw)
    designer = gw.sdk(api_key=designer_key)
    lines = [image_line(f"slow-{n}", f"[sim:slowstart=2] slow {n}") for n in range(4)]
    made = make_batch(designer, lines)
    admin, viewer = console(gw), console(gw, CONSOLE_VIEWER_KEY)

    running = row_of(admin.get("/console/batches").text, made.id)
    assert 'badge warn">in_progress<' in running
    assert f'hx-get="/console/batches/{made.id}/row"' in running  # refreshes while it runs
    fragment = admin.get(f"/console/batches/{made.id}/row")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert f'<tr id="batch-{made.id}"' in fragment.text

    # The viewer sees the batch, without a Cancel button, and its POST is refused.
    seen = viewer.get(f"/console/batches/{made.id}")
    assert seen.status_code == 200 and "Cancel batch" not in seen.text
    assert 'class="batch-progress" hx-get=' in seen.text
    refused = viewer.post(f"/console/batches/{made.id}/cancel")
    assert refused.status_code == 403, refused.text
    # Without the session's CSRF token even an admin's POST is refused.
    forged = admin.http.post(f"/console/batches/{made.id}/cancel", data={"csrf_token": "x"})
    assert forged.status_code == 403
    assert designer.batches.retrieve(made.id).status == "in_progress"

    detail = admin.get(f"/console/batches/{made.id}").text
    assert "Cancel batch" in detail
    cancelled = admin.post(f"/console/batches/{made.id}/cancel", follow_redirects=False)
    assert cancelled.status_code == 303, cancelled.text
    assert cancelled.headers["location"] == f"/console/batches/{made.id}"
    assert designer.batches.retrieve(made.id).status in ("cancelling", "cancelled")
    done = ended(designer, made.id, "cancelled")
    assert done.request_counts is not None
    counts = done.request_counts
    assert counts.total == 4 and counts.completed + counts.failed == 4
    # The line in flight finished (and was billed); the rest were never sent, and end failed.
    # (One, unless the machine took over 2 s between the create and the cancel.)
    assert counts.completed == len(sim.sent(IMAGES)) < 4 and counts.failed >= 1
    assert done.error_file_id is not None
    unsent = jsonl(admin.get(f"/console/batches/{made.id}/files/{done.error_file_id}").text)
    assert [line["error"]["code"] for line in unsent] == ["batch_cancelled"] * counts.failed
    page = admin.get(f"/console/batches/{made.id}").text
    assert '<span class="badge">cancelled</span>' in page and "Cancel batch" not in page
    assert "batch_cancelled" in page  # the unsent lines' error code
    assert "hx-get" not in page


def test_a_batch_page_in_a_browser_is_accessible_and_cancels_by_its_button(
    make_gateway: Callable[..., Gateway], signed_in_page: Callable[..., Page]
) -> None:
    """The batch's page (not in the every-page list: its address is a batch's) at both widths:
    no sideways scrolling at 390 px, the accessibility checker's basics, Tab reaching its
    controls; then its Cancel button, confirmed, cancels the batch."""
    gw = batch_gateway(make_gateway, batch_concurrency=1)
    sdk = gw.sdk(api_key=two_teams(gw))
    lines = [image_line(f"slow-{n}", f"[sim:slowstart=2] slow {n}") for n in range(3)]
    made = make_batch(sdk, lines)
    path = f"/console/batches/{made.id}"
    problems: list[str] = []
    for width, height in (DESKTOP, PHONE):
        page = signed_in_page(gw, width=width, height=height)
        answer = page.goto(gw.url + path)
        assert answer is not None and answer.ok
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if width == PHONE[0] and overflow > 0:
            problems.append(f"{width} px: {overflow} px of sideways scrolling")
        problems.extend(f"{width} px: {v}" for v in a11y.violations(page))
        problems.extend(f"{width} px: {v}" for v in a11y.keyboard_violations(page))
    assert not problems, "\n".join(problems)

    page.on("dialog", lambda dialog: dialog.accept())  # "Cancel …?": yes
    page.get_by_role("button", name="Cancel batch").click()
    page.wait_for_url(gw.url + path)
    expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
    assert sdk.batches.retrieve(made.id).status in ("cancelling", "cancelled")
    # The page refreshes itself until the batch has ended.
    expect(page.locator(".batch-progress .badge").first).to_have_text("cancelled", timeout=15_000)

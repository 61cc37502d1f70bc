"""The console's Video jobs pages (/console/jobs, /console/jobs/{id}): real videos made through
the SDK on the simulator, then shown with their status, progress, cost and history; stuck and
failed jobs first; a member sees its team's jobs only, and another team's job is a 404 page."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import (
    CONSOLE_ADMIN_KEY,
    Console,
    Gateway,
    console_admin_keys,
    create_key,
    fast_video_polls,
    wait_until,
)

ROW = re.compile(r'<tr id="job-(video_[0-9a-f]+)"( class="first")?')


def video_gateway(make_gateway: Callable[..., Gateway], tmp_path: Path, **extra: Any) -> Gateway:
    overlay = fast_video_polls(tmp_path / "fast-polls.yaml")
    return make_gateway(
        admin_keys=console_admin_keys(), video_poll_after_ms=50, config=overlay, **extra
    )


def rows(html: str) -> list[tuple[str, bool]]:
    """The jobs the list shows, in order, and whether each is listed first (needs attention)."""
    return [(m.group(1), bool(m.group(2))) for m in ROW.finditer(html)]


def row_of(html: str, job_id: str) -> str:
    start = html.index(f'<tr id="job-{job_id}"')
    return html[start : html.index("</tr>", start)]


def test_jobs_show_status_progress_and_cost_failed_first_and_a_members_own_only(
    make_gateway: Callable[..., Gateway],
    console: Console,
    tmp_path: Path,
    job_store: dict[str, str],
) -> None:
    gw = video_gateway(make_gateway, tmp_path, **job_store)
    designer_key = create_key(gw, "designer", "marketing")
    analyst_key = create_key(gw, "analyst", "finance")
    designer, analyst = gw.sdk(api_key=designer_key), gw.sdk(api_key=analyst_key)
    # The failed one is made first: newest first alone would list it last.
    failed = analyst.videos.create(prompt="[sim:fail] a storm that never renders")
    wait_until(lambda: analyst.videos.retrieve(failed.id).status == "failed", timeout_s=30)
    made = designer.videos.create(prompt="[sim:render=3] waves on a pier")
    admin = console(gw)

    # Its cost is reserved in the request log (written off the request's path) until it settles.
    def reserved_shown() -> bool:
        return "$" in row_of(admin.get("/console/jobs").text, made.id)

    wait_until(reserved_shown, timeout_s=10)
    page = admin.get("/console/jobs")
    assert page.status_code == 200, page.text
    running = row_of(page.text, made.id)
    assert re.search(r"badge warn\">(queued|in_progress)<", running)
    assert '<progress max="100" value="' in running
    assert f'hx-get="/console/jobs/{made.id}/row"' in running  # refreshes while it runs
    assert made.model in running and "designer" in running
    reserved = re.findall(r'class="num">\$([0-9.]+)<', running)
    assert reserved and float(reserved[0]) > 0
    assert rows(page.text) == [(failed.id, True), (made.id, False)]
    assert "1 job needs attention" in page.text

    wait_until(lambda: designer.videos.retrieve(made.id).status == "completed", timeout_s=30)
    page = admin.get("/console/jobs")
    done = row_of(page.text, made.id)
    assert 'badge ok">completed<' in done and 'value="100"' in done
    assert "hx-get" not in done  # finished: no more polling
    assert rows(page.text)[0] == (failed.id, True)
    fragment = admin.get(f"/console/jobs/{made.id}/row")
    assert fragment.status_code == 200 and 'badge ok">completed<' in fragment.text
    assert "<html" not in fragment.text

    # Filters are the admin API's query names.
    only_failed = admin.get("/console/jobs?status=failed")
    assert [job for job, _ in rows(only_failed.text)] == [failed.id]
    by_key = admin.get("/console/jobs?key=designer")
    assert [job for job, _ in rows(by_key.text)] == [made.id]
    assert [job for job, _ in rows(admin.get("/console/jobs?team=finance").text)] == [failed.id]
    assert admin.get("/console/jobs?status=bogus").status_code == 400
    # The filter form sends every field, empty ones too: those filter nothing.
    empty = admin.get("/console/jobs?status=&model=&team=&key=&start=&end=")
    assert empty.status_code == 200 and [job for job, _ in rows(empty.text)] == [failed.id, made.id]
    # Keyset pages, as the admin API's: the first page lists the failed job first, then its
    # page of the rest (newest first); the next page (the cursor in its link) the older ones.
    first = admin.get("/console/jobs?limit=1&key=").text  # an empty field: no filter
    with gw.http(CONSOLE_ADMIN_KEY) as http:
        api = http.get("/admin/v1/jobs", params={"limit": 1}).json()
    newest = api["data"][0]["id"]
    assert rows(first) == [(failed.id, True)] + ([(made.id, False)] if newest == made.id else [])
    older = re.search(r'<a href="(/console/jobs\?[^"]+)" rel="next">', first)
    assert older is not None and "after=" in older.group(1)
    second = admin.get(html.unescape(older.group(1))).text
    oldest = ({failed.id, made.id} - {newest}).pop()
    assert rows(second) == [(oldest, False)]  # later pages: newest first only
    assert 'rel="next"' not in second

    # One job: its record, cost, history and links.
    detail = admin.get(f"/console/jobs/{made.id}")
    assert detail.status_code == 200
    with gw.http(designer_key) as http:
        record = http.get(f"/admin/v1/jobs/{made.id}").json()
    assert record["upstream_id"] and record["upstream_id"] in detail.text
    assert record["route"] in detail.text
    history = record["history"]
    assert history
    for entry in history:
        assert f'href="/console/requests/{entry["request_id"]}"' in detail.text
    assert f'href="/console/requests?job_id={made.id}"' in detail.text
    assert "/console/gallery?job_id=" in detail.text
    booked = re.search(r"<dt>Cost booked</dt><dd>\$([0-9.]+)</dd>", detail.text)
    assert booked is not None and float(booked.group(1)) == record["cost_usd"] > 0
    failed_detail = admin.get(f"/console/jobs/{failed.id}").text
    assert 'badge bad">failed<' in failed_detail
    with gw.http(analyst_key) as http:
        error = http.get(f"/admin/v1/jobs/{failed.id}").json()["error"]
    assert error["code"] in failed_detail

    # A member: its team's jobs only; another team's job is a 404 page, its row too.
    member = console(gw, designer_key)
    assert [job for job, _ in rows(member.get("/console/jobs").text)] == [made.id]
    assert rows(member.get("/console/jobs?team=finance").text) == []
    assert member.get(f"/console/jobs/{made.id}").status_code == 200
    for path in (f"/console/jobs/{failed.id}", f"/console/jobs/{failed.id}/row"):
        refused = member.get(path)
        assert refused.status_code == 404, path
        assert failed.id in refused.text and "storm" not in refused.text
    assert admin.get("/console/jobs/video_doesnotexist").status_code == 404


def test_a_job_that_stopped_moving_is_stuck_and_listed_first(
    make_gateway: Callable[..., Gateway], console: Console, tmp_path: Path
) -> None:
    gw = video_gateway(make_gateway, tmp_path, console_stuck_after_s=0.5)
    key = create_key(gw, "designer", "marketing")
    sdk = gw.sdk(api_key=key)
    slow = sdk.videos.create(prompt="[sim:render=600] a very slow sunrise")
    done = sdk.videos.create(prompt="[sim:render=0.2] a quick one")
    wait_until(lambda: sdk.videos.retrieve(done.id).status == "completed", timeout_s=30)
    admin = console(gw)

    def stuck_first() -> bool:
        html = admin.get("/console/jobs").text
        return rows(html) == [(slow.id, True), (done.id, False)] and (
            'badge bad" title="no change for' in row_of(html, slow.id)
        )

    # The simulator's progress moves by whole percents: 600 s of render moves one in 6 s.
    wait_until(stuck_first, timeout_s=10)
    assert "stuck" in admin.get(f"/console/jobs/{slow.id}").text
    # Not stuck, not failed: a completed job is never listed first.
    assert "stuck" not in row_of(admin.get("/console/jobs").text, done.id)

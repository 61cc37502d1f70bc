"""The console's Requests and Export pages (issue 26): real traffic through the SDK (some of
it failing upstream), then the request log as pages: filtered by the admin API's parameters,
searched, paged, its histogram, one request's record; a member confined to its team; and the
exports, byte for byte the admin API's."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from mediagate.console.requests import trace_link, window
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.migrate import upgrade
from mediagate.stores.sql.reports import Histogram, Reports, RequestFilter, Scope

from .conftest import (
    CLIENT_KEY,
    CONSOLE_ADMIN_KEY,
    GROUP_KEYS,
    Console,
    Gateway,
    Sim,
    console_admin_keys,
    create_key,
    wait_until,
)
from .resilience import catalog

OFFICIAL = GROUP_KEYS["OpenAI Official"]
ROW_LINK = re.compile(r'<a class="mono" href="/console/requests/([^"]+)">')


@dataclass
class Traffic:
    gw: Gateway
    member_key: str
    ok: list[str]  # request ids, by what happened
    rate_limited: list[str]  # 429s (the member's)
    failed: list[str]  # 502s (team-a's)
    fallback: str  # served by the second route (team-a's)
    member_ids: set[str]  # every request of the member's team
    setup: list[str]  # the admin API's own 404 while making the member's team (logged too)


def request_id(raw: object) -> str:
    headers = getattr(raw, "headers")  # noqa: B009
    value = headers.get("x-request-id")
    assert value, "no x-request-id"
    return str(value)


def generate(sdk: openai.OpenAI, prompt: str, model: str = "gpt-image-2-web", **body: str) -> str:
    try:
        raw = sdk.images.with_raw_response.generate(model=model, prompt=prompt, **body)  # type: ignore[arg-type]
    except openai.APIStatusError as error:
        return request_id(error.response)
    return request_id(raw)


@pytest.fixture
def traffic(make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path) -> Traffic:
    gw = make_gateway(
        admin_keys=console_admin_keys(),
        config=catalog(tmp_path),
        request_log_flush_s=0.05,
        log_prompts=True,
    )
    member_key = create_key(gw, "designer", "marketing")
    with gw.http(CONSOLE_ADMIN_KEY) as admin:
        wait_until(lambda: len(admin.get("/admin/v1/requests").json()["data"]) == 1)
        setup = [row["request_id"] for row in admin.get("/admin/v1/requests").json()["data"]]
    member, team_a = gw.sdk(member_key), gw.sdk(CLIENT_KEY)
    ok = [generate(member, "a lighthouse"), generate(team_a, "a harbour")]
    rate_limited = [
        generate(member, f"[sim:burst429=9:m{i}] [sim:retryafter=0.01] a storm") for i in range(2)
    ]
    failed = [generate(team_a, "[sim:burst503=9:t] fog")]
    sim.state.faults.set(by_key={OFFICIAL: "503"})
    fallback = generate(team_a, "a quay", model="gpt-image-2", size="1024x1536", quality="low")
    sim.state.faults.reset()
    everything = [*setup, *ok, *rate_limited, *failed, fallback]
    with gw.http(CONSOLE_ADMIN_KEY) as admin:
        wait_until(
            lambda: len(admin.get("/admin/v1/requests").json()["data"]) == len(everything),
            timeout_s=10,
        )
        # The rollups too (an image's count and cost may land after its row).
        made = {"requests": len(everything), "images": 3}
        wait_until(
            lambda: made.items() <= admin.get("/admin/v1/usage").json()["totals"].items(),
            timeout_s=10,
        )
    member_ids = {ok[0], *rate_limited}
    return Traffic(gw, member_key, ok, rate_limited, failed, fallback, member_ids, setup)


def listed(page: str) -> list[str]:
    """The request ids of a Requests page's table, in order."""
    table = page.split('<table id="requests">', 1)[1]
    return ROW_LINK.findall(table)


def links(page: str, text: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(rf'<a[^>]*href="([^"]+)"[^>]*>{text}</a>', page)]


def histogram(page: str) -> dict[str, int]:
    """The histogram's table: the sum of each column."""
    table = page.split('<table id="histogram-table">', 1)[1].split("</table>", 1)[0]
    sums = {"ok": 0, "4xx": 0, "5xx": 0}
    for row in re.findall(r"<tr><td>.*?</tr>", table, re.S):
        counts = [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row)]
        for name, count in zip(("ok", "4xx", "5xx"), counts, strict=True):
            sums[name] += count
    return sums


def test_the_log_filtered_by_status_lists_exactly_the_failures(
    traffic: Traffic, console: Console
) -> None:
    admin = console(traffic.gw)
    page = admin.get("/console/requests?status=4xx")
    assert page.status_code == 200
    assert set(listed(page.text)) == {*traffic.rate_limited, *traffic.setup}
    assert "rate_limit_exceeded" in page.text and "team_not_found" in page.text
    assert histogram(page.text) == {"ok": 0, "4xx": 3, "5xx": 0}
    page = admin.get("/console/requests?status=5xx")
    assert listed(page.text) == traffic.failed
    everything = admin.get("/console/requests")
    assert len(listed(everything.text)) == 7
    # Unfiltered: ok from the hour rollups, 4xx and 5xx from the log; a day's window by the
    # log alone; the same counts.
    assert histogram(everything.text) == {"ok": 3, "4xx": 3, "5xx": 1}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    day = admin.get(f"/console/requests?start={today}T00:00:01Z").text
    assert histogram(day) == {"ok": 3, "4xx": 3, "5xx": 1}
    # The filters are the admin API's: the same rows, newest first.
    with traffic.gw.http(CONSOLE_ADMIN_KEY) as http:
        api = http.get("/admin/v1/requests", params={"status": "4xx"}).json()["data"]
    assert listed(admin.get("/console/requests?status=4xx").text) == [r["request_id"] for r in api]
    # A bad filter is the error page naming it, as the API's 400.
    bad = admin.get("/console/requests?status=abc")
    assert bad.status_code == 400
    assert "Invalid &#39;status&#39;" in bad.text


def test_the_filters_round_trip_through_the_url_and_the_pages(
    traffic: Traffic, console: Console
) -> None:
    admin = console(traffic.gw)
    page = admin.get("/console/requests?key=team-a&status=5xx").text
    assert 'name="key" value="team-a"' in page
    assert '<option value="5xx" selected>' in page
    assert listed(page) == traffic.failed
    # The export link carries the same filters.
    (export,) = links(page, "Export these requests")
    assert export == "/console/export?key=team-a&status=5xx"
    # Paged two at a time: "Older" keeps the filters and walks every row once, in order.
    seen: list[str] = []
    path: str | None = "/console/requests?key=team-a&limit=2"
    while path is not None:
        page = admin.get(path).text
        seen += listed(page)
        older = links(page, "Older")
        if older:
            assert "key=team-a" in older[0] and "limit=2" in older[0]
        path = older[0] if older else None
    expected = [traffic.fallback, *traffic.failed, traffic.ok[1]]
    assert seen == expected


def test_search_finds_a_request_by_its_id(traffic: Traffic, console: Console) -> None:
    admin = console(traffic.gw)
    page = admin.get("/console/requests", params={"q": traffic.fallback}).text
    assert listed(page) == [traffic.fallback]
    assert listed(admin.get("/console/requests", params={"q": "req_nothing"}).text) == []


def test_one_request_shows_the_routes_tried_and_what_it_cost(
    traffic: Traffic, console: Console
) -> None:
    admin = console(traffic.gw)
    page = admin.get(f"/console/requests/{traffic.fallback}")
    assert page.status_code == 200
    tried = page.text.split('id="routes-tried"', 1)[1].split("</ol>", 1)[0]
    assert re.findall(r'<span class="mono">([^<]+)</span>', tried) == [
        "gpt-image-2.official",
        "gpt-image-2.enterprise",
    ]
    assert "upstream_error" in tried
    assert "a quay" in page.text  # the prompt, recorded on this gateway
    with traffic.gw.http(CONSOLE_ADMIN_KEY) as http:
        record = http.get(f"/admin/v1/requests/{traffic.fallback}").json()
    assert f"${record['cost_usd']:,.2f}" in page.text or f"${record['cost_usd']:.4f}" in page.text
    assert record["dropped"] is None or all(d in page.text for d in record["dropped"])
    missing = admin.get("/console/requests/req_not_there")
    assert missing.status_code == 404
    assert "No request" in missing.text


def test_a_member_sees_its_team_only_and_another_teams_request_is_not_found(
    traffic: Traffic, console: Console
) -> None:
    member = console(traffic.gw, traffic.member_key)
    mine = member.get("/console/requests").text
    assert set(listed(mine)) == traffic.member_ids
    assert histogram(mine) == {"ok": 1, "4xx": 2, "5xx": 0}  # its team's, from the rollups
    assert listed(member.get("/console/requests?key=team-a").text) == []
    assert listed(member.get("/console/requests", params={"q": traffic.fallback}).text) == []
    tampered = member.get(f"/console/requests/{traffic.fallback}")
    assert tampered.status_code == 404
    assert traffic.fallback in tampered.text and "a quay" not in tampered.text
    own = member.get(f"/console/requests/{traffic.ok[0]}")
    assert own.status_code == 200 and "a lighthouse" in own.text


def admin_export(gw: Gateway, path: str, params: dict[str, str]) -> bytes:
    with gw.http(CONSOLE_ADMIN_KEY) as http:
        answer = http.get(f"/admin/v1/export/{path}", params=params)
        assert answer.status_code == 200, answer.text
        return answer.content


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_the_exports_are_the_admin_apis_byte_for_byte(
    traffic: Traffic, console: Console, kind: str
) -> None:
    admin = console(traffic.gw)
    page = admin.get("/console/export?status=4xx&group_by=team").text
    (requests_link,) = links(page, f"Requests as {'CSV' if kind == 'csv' else 'JSON Lines'}")
    assert requests_link == f"/console/export/requests?status=4xx&format={kind}"
    mine = admin.get(requests_link)
    assert mine.status_code == 200
    assert mine.content == admin_export(traffic.gw, "requests", {"status": "4xx", "format": kind})
    assert mine.headers["content-disposition"].startswith('attachment; filename="requests-')
    rows = mine.content.decode().splitlines()
    assert len(rows) == len(traffic.rate_limited) + len(traffic.setup) + (kind == "csv")
    (usage_link,) = links(page, f"Usage as {'CSV' if kind == 'csv' else 'JSON Lines'}")
    assert usage_link == f"/console/export/usage?group_by=team&format={kind}"
    usage = admin.get(usage_link).content
    assert usage == admin_export(traffic.gw, "usage", {"group_by": "team", "format": kind})
    assert b"marketing" in usage

    # A member's export is its team's: the admin's export of that team, and nothing of others.
    member = console(traffic.gw, traffic.member_key)
    own = member.get(f"/console/export/requests?format={kind}").content
    assert own == admin_export(traffic.gw, "requests", {"team": "marketing", "format": kind})
    found = set(re.findall(rb"req_[A-Za-z0-9_-]+", own))
    assert {f.decode() for f in found} >= traffic.member_ids
    assert traffic.fallback.encode() not in own
    other = member.get(f"/console/export/requests?key=team-a&format={kind}").content
    assert len(other.decode().splitlines()) == (1 if kind == "csv" else 0)
    usage = member.get(f"/console/export/usage?group_by=team&format={kind}").content
    assert b"marketing" in usage
    if kind == "jsonl":
        assert {json.loads(line)["team"] for line in usage.splitlines()} == {"marketing"}


def test_the_histograms_window_has_a_bounded_number_of_buckets() -> None:
    start, step, count = window(RequestFilter(), now=1_800_000_100.0)  # 100 s into an hour
    assert step == 3600 and count == 49 and start == 1_800_000_000.0 - 2 * 86400
    assert start % 3600 == 0  # whole hours: the rollups serve it
    start, step, count = window(RequestFilter(start=0.0, end=400 * 86400.0), now=0)
    assert count <= 49 and start + step * count >= 400 * 86400.0


def test_a_trace_id_links_to_the_tracing_ui_escaped() -> None:
    template = "https://tempo.example/trace/{trace_id}?x=1"
    assert trace_link(template, "ab/c d") == "https://tempo.example/trace/ab%2Fc%20d?x=1"
    assert trace_link(None, "abc") is None
    assert trace_link(template, None) is None


def test_the_histogram_query_counts_alike_from_the_log_and_from_the_rollups(
    database_url: str,
) -> None:
    """On each engine: rows at known times and statuses (and their hour rollups, as the
    gateway writes them), counted per bucket by the log alone and by the rollups plus the
    log's errors: the same counts, in the right buckets (PostgreSQL's bucket number rounded
    down, not to nearest)."""
    hour = 1_800_000_000.0  # a whole hour (8 a.m. UTC)
    day_start = hour - hour % 86400
    rows = [  # (at, team, status)
        (hour + 10, "red", 200),
        (hour + 3599.9, "red", 200),  # the last instant of the first hour
        (hour + 3600, "red", 429),
        (hour + 5400, "blue", 502),
        (hour + 3 * 3600 + 1, "red", 201),
        (hour + 3 * 3600 + 2, "blue", 404),
    ]
    rollups: dict[tuple[str, str, str], list[int]] = {}
    for at, team, status in rows:
        bucket = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H")
        day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
        for grain, key in (("hour", bucket), ("day", day)):
            sums = rollups.setdefault((grain, key, team), [0, 0])
            sums[0] += 1
            sums[1] += status >= 400

    async def run() -> dict[str, Histogram]:
        db = await Database.open(database_url)
        try:
            await upgrade(db)

            def work(tx: Any) -> None:
                tx.executemany(
                    "INSERT INTO request_log (request_id, at, key, team, endpoint, status) "
                    "VALUES (?, ?, ?, ?, 'images.generations', ?)",
                    [
                        (f"req_{i}", at, f"{team}-key", team, s)
                        for i, (at, team, s) in enumerate(rows)
                    ],
                )
                tx.executemany(
                    "INSERT INTO usage_rollups (grain, bucket, key, team, model, route, requests,"
                    " errors) VALUES (?, ?, ?, ?, 'm', 'r', ?, ?)",
                    [(g, b, f"{t}-key", t, n, e) for (g, b, t), (n, e) in rollups.items()],
                )

            await db.transaction(work)
            store = Reports(db)
            everyone = RequestFilter()
            return {
                # Whole hours, no row-level filter: the rollups' path.
                "rollups": await store.histogram(everyone, Scope(), hour, 3600, 4),
                # A half-hour step: the log's path.
                "log": await store.histogram(everyone, Scope(), hour, 1800, 8),
                "red": await store.histogram(everyone, Scope(team="red"), hour, 3600, 4),
                # Whole days: the day rollups (the rows' day holds them all).
                "days": await store.histogram(everyone, Scope(), day_start, 86400, 2),
                "blue 5xx": await store.histogram(
                    RequestFilter(status=(500, 600)), Scope(team="blue"), hour, 3600, 4
                ),
            }
        finally:
            await db.close()

    found = asyncio.run(run())
    by_hour = found["rollups"]
    assert (by_hour.ok, by_hour.client_errors, by_hour.server_errors) == (
        [2, 0, 0, 1],
        [0, 1, 0, 1],
        [0, 1, 0, 0],
    )
    by_half = found["log"]
    assert by_half.ok == [1, 1, 0, 0, 0, 0, 1, 0]
    assert by_half.client_errors == [0, 0, 1, 0, 0, 0, 1, 0]
    assert by_half.server_errors == [0, 0, 0, 1, 0, 0, 0, 0]
    red = found["red"]
    assert (red.ok, red.client_errors, red.server_errors) == (
        [2, 0, 0, 1],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
    )
    days = found["days"]
    assert (days.ok, days.client_errors, days.server_errors) == ([3, 0], [2, 0], [1, 0])
    blue = found["blue 5xx"]
    assert (blue.ok, blue.client_errors, blue.server_errors) == (
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 1, 0, 0],
    )

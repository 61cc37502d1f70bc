"""The console's Overview page (issue 26): real traffic through the SDK, then the page's
numbers are the rollups' (as the admin API's /usage sums them), its chart's data the same
numbers by model or team, each number a link to the list behind it, a member's its team's."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from mediagate.console.web import usd
from mediagate.stores.jobs import VideoJob
from mediagate.stores.sql.db import Database
from mediagate.stores.sql.jobs import SqlJobStore

from .conftest import (
    CLIENT_KEY,
    CONSOLE_ADMIN_KEY,
    Console,
    Gateway,
    Sim,
    console_admin_keys,
    create_key,
    wait_until,
)
from .resilience import catalog

TOTALS = {"requests": 5, "errors": 2, "images": 3}


def value(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert found is not None, element_id
    return html.unescape(found.group(1)).strip()


def href(page: str, element_id: str) -> str:
    found = re.search(rf'<a[^>]*id="{element_id}" href="([^"]+)"', page)
    assert found is not None, element_id
    return html.unescape(found.group(1))


def chart(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="spend-data">(.*?)</script>', page, re.S)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def usage(gw: Gateway, **params: str) -> dict[str, Any]:
    with gw.http(CONSOLE_ADMIN_KEY) as http:
        answer = http.get("/admin/v1/usage", params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


@pytest.fixture
def busy(make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path) -> tuple[Gateway, str]:
    gw = make_gateway(
        admin_keys=console_admin_keys(), config=catalog(tmp_path), request_log_flush_s=0.05
    )
    member_key = create_key(gw, "designer", "marketing", budget_usd_per_day=1)
    for key, prompts in ((member_key, 2), (CLIENT_KEY, 1)):
        sdk = gw.sdk(key)
        for i in range(prompts):
            sdk.images.generate(model="gpt-image-2-web", prompt=f"a kite {i}")
    with pytest.raises(openai.APIStatusError):
        gw.sdk(CLIENT_KEY).images.generate(model="gpt-image-2-web", prompt="[sim:burst503=9:o] fog")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    # Five: the three images, the failure, and the admin API's own 404 as create_key found
    # the team missing (the admin API's answers are counted too).
    # An image's cost and count may land in the rollups after its request: wait for them.
    wait_until(lambda: TOTALS.items() <= usage(gw, start=today)["totals"].items(), timeout_s=10)
    return gw, member_key


def test_the_overview_is_the_rollups_sums(busy: tuple[Gateway, str], console: Console) -> None:
    gw, _ = busy
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    totals = usage(gw, start=today)["totals"]
    assert totals["cost_usd"] > 0
    page = console(gw).get("/console").text
    assert value(page, "spend-today") == usd(totals["cost_usd"])
    month = usage(gw, start=today[:8] + "01")["totals"]
    assert value(page, "spend-month") == usd(month["cost_usd"])
    assert value(page, "requests-today") == "5" == str(totals["requests"])
    assert value(page, "errors-today") == "2" == str(totals["errors"])
    assert value(page, "error-rate-24h") == "40.0%"
    assert value(page, "jobs-running") == "0"
    # Each number links to the list behind it.
    assert href(page, "errors-24h").startswith("/console/requests?start=")
    assert href(page, "errors-24h").endswith("&status=5xx")
    assert href(page, "jobs-running") == "/console/jobs?status=in_progress"
    assert href(page, "spend-today") == f"/console/requests?start={today}T00%3A00%3A00Z"
    # The teams' spend and the member's day budget ($1) as a meter.
    by_team = usage(gw, start=today, group_by="team")["data"]
    spent = {row["team"]: row["cost_usd"] for row in by_team if row["team"]}
    assert set(spent) == {"marketing"}  # team-a is a key without a team
    teams = page.split('<table id="teams">', 1)[1].split("</table>", 1)[0]
    for team, cost in spent.items():
        assert f'href="/console/requests?team={team}">{team}</a>' in teams
        assert f">{usd(cost)}</a>" in teams
    assert "of the day&#39;s budget of $1.00" in page
    # The chart's data: today's bucket sums to today's spend, by model.
    data = chart(page)
    assert data["x"][-1] == int(datetime.fromisoformat(today + "T00:00:00+00:00").timestamp())
    assert [s["label"] for s in data["series"]] == ["gpt-image-2-web"]
    assert sum(s["values"][-1] for s in data["series"]) == pytest.approx(totals["cost_usd"])
    # ...and the same numbers in the table beside it, for a page without JavaScript.
    assert f'<td class="num">{usd(totals["cost_usd"])}</td>' in page.split('id="spend-table"')[1]


def test_the_chart_by_team_over_48_hours(busy: tuple[Gateway, str], console: Console) -> None:
    gw, _ = busy
    page = console(gw).get("/console?granularity=hour&by=team").text
    data = chart(page)
    assert len(data["x"]) == 48
    assert data["x"][1] - data["x"][0] == 3600
    first = datetime.fromtimestamp(data["x"][0], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_team = usage(gw, granularity="hour", start=first, group_by="team")["data"]
    expected: dict[str, float] = {}
    for row in by_team:
        name = row["team"] or "(none)"  # the key without a team
        expected[name] = expected.get(name, 0.0) + row["cost_usd"]
    found = {s["label"]: sum(s["values"]) for s in data["series"]}
    assert found == pytest.approx(expected)
    assert set(found) == {"marketing", "(none)"}
    assert '<option value="hour" selected>' in page and '<option value="team" selected>' in page


def test_a_member_sees_its_teams_numbers_only(busy: tuple[Gateway, str], console: Console) -> None:
    gw, member_key = busy
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    mine = usage(gw, start=today, team="marketing")["totals"]
    page = console(gw, member_key).get("/console?by=team").text
    assert value(page, "spend-today") == usd(mine["cost_usd"])
    assert value(page, "requests-today") == "2"
    assert value(page, "errors-today") == "0"
    assert "team-a" not in page
    assert [s["label"] for s in chart(page)["series"]] == ["marketing"]


def test_video_jobs_running_are_counted_per_team(
    make_gateway: Callable[..., Gateway], console: Console
) -> None:
    """Jobs the job store holds (written through it, as the gateway writes them): everyone's
    from its counts, a member's team's from its jobs."""
    gw = make_gateway(admin_keys=console_admin_keys())
    member_key = create_key(gw, "designer", "marketing")
    now = int(time.time())
    owners = [("designer", "in_progress"), ("designer", "queued"), ("team-a", "in_progress")]
    owners += [("team-a", "in_progress"), ("designer", "completed")]

    async def insert() -> None:
        db = await Database.open(gw.settings.records_url())
        try:
            store = SqlJobStore(db)
            for i, (owner, status) in enumerate(owners):
                await store.insert(
                    VideoJob(
                        id=f"video_{i:04d}",
                        upstream_id=f"task_{i}",
                        owner=owner,
                        model="sora-2",
                        route="sora-2.muse",
                        group="default",
                        key_fp="ab" * 32,
                        prompt="waves",
                        size="720x1280",
                        seconds=8,
                        status=status,
                        created_at=now - 60 + i,
                        updated_at=now,
                    )
                )
        finally:
            await db.close()

    asyncio.run(insert())
    page = console(gw).get("/console").text
    assert value(page, "jobs-running") == "3"
    assert value(page, "jobs-queued") == "1 queued"
    mine = console(gw, member_key).get("/console").text
    assert value(mine, "jobs-running") == "1"
    assert value(mine, "jobs-queued") == "1 queued"

"""The admin API's reads (/admin/v1): usage from the rollups, the request log, video jobs,
exports, catalog and health, on each engine, through a real gateway over HTTP.

The request log's, the rollups' and the video jobs' writers are other parts of the gateway:
these tests put rows in the records' database with plain SQL (the rows the writers write), then
read them back through the API (`video_jobs` as the job store's migration 0003 makes it).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openapi_spec_validator import validate

from mediagate.app import admin_openapi
from mediagate.http.admin_reads import (
    OPENAPI_DOCUMENT,
    CatalogView,
    HealthList,
    JobDetail,
    JobList,
    RequestDetail,
    RequestList,
    UsageList,
)
from mediagate.stores.sql.db import Database

from .conftest import CLIENT_KEY, Gateway, Sim, fast_video_polls, wait_until

ADMIN = "mga-admin-reads-0123456789"
VIEWER = "mga-viewer-reads-0123456789"
DESIGNER = "sk-designer-0123456789"  # team marketing
ANALYST = "sk-analyst-0123456789"  # team finance
SAVED = Path(__file__).parent.parent / "mediagate" / "http" / OPENAPI_DOCUMENT


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def start_gateway(make_gateway: Callable[..., Gateway], tmp_path: Path, **extra: Any) -> Gateway:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(
        "keys:\n"
        f"  - {{name: designer, team: marketing, sha256: {sha(DESIGNER)}, "
        "budget_usd_per_day: 5, budget_usd_per_month: 100}\n"
        f"  - {{name: analyst, team: finance, sha256: {sha(ANALYST)}}}\n"
    )
    return make_gateway(
        admin_keys=f"ops:admin:{sha(ADMIN)},auditor:viewer:{sha(VIEWER)}",
        keys_file=keys_file,
        **extra,
    )


# What each read answers, as the OpenAPI document describes it. The routes render their answers
# without running these models, so every answer of these tests is checked against them.
ANSWERS: list[tuple[str, Any]] = [
    ("/admin/v1/requests/", RequestDetail),
    ("/admin/v1/requests", RequestList),
    ("/admin/v1/jobs/", JobDetail),
    ("/admin/v1/jobs", JobList),
    ("/admin/v1/usage", UsageList),
    ("/admin/v1/catalog", CatalogView),
    ("/admin/v1/health", HealthList),
]
CHECKED: list[str] = []  # the paths whose answers were checked


def described(response: httpx2.Response) -> None:
    """A 200 of a JSON read is what its path's model documents (extra fields refused)."""
    path = response.request.url.path
    model = next((m for prefix, m in ANSWERS if path.startswith(prefix)), None)
    if response.status_code == 200 and model is not None:
        response.read()
        model.model_validate(response.json())
        CHECKED.append(path)


def admin_http(gw: Gateway, key: str | None) -> httpx2.Client:
    http = gw.http(key)
    http.event_hooks["response"].append(described)
    return http


def sql(url: str, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
    """Run statements (each with its rows) in one transaction on the records' database."""

    async def run() -> None:
        db = await Database.open(url)
        try:

            def work(tx: Any) -> None:
                for statement, rows in statements:
                    if rows:
                        tx.executemany(statement, rows)
                    else:
                        tx.execute(statement)

            await db.transaction(work)
        finally:
            await db.close()

    asyncio.run(run())


LOG_COLUMNS = [
    "request_id",
    "at",
    "key",
    "team",
    "endpoint",
    "method",
    "model",
    "route",
    "routes_tried",
    "token_group",
    "mapped",
    "dropped",
    "status",
    "error_code",
    "latency_ms",
    "upstream_ms",
    "cost_micros",
    "cost_state",
    "images",
    "video_seconds",
    "job_id",
    "upstream_task_id",
    "batch_id",
    "replayed",
    "prompt",
]
INSERT_LOG = (
    f"INSERT INTO request_log ({', '.join(LOG_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in LOG_COLUMNS)})"
)

KEYS = (("designer", "marketing"), ("analyst", "finance"), ("team-a", ""))
MODELS = (("gpt-image-2", "gpt-image-2.official"), ("sora-2", "muse-video"))


def log_rows(count: int, now: float) -> list[dict[str, Any]]:
    """`count` request-log rows over the last ~2 days, several per second (ties in `at`)."""
    rows = []
    for i in range(count):
        key, team = KEYS[i % 3]
        model, route = MODELS[(i // 3) % 2]
        status = (200, 200, 429, 400, 502, 200, 200)[i % 7]
        rows.append(
            {
                "request_id": f"req_{i:06d}",
                "at": float(int(now - 60 - (i // 3) * 97)),  # three rows share each second
                "key": key,
                "team": team,
                "endpoint": "/v1/images/generations",
                "method": "POST",
                "model": model,
                "route": route,
                "routes_tried": json.dumps([{"route": route, "outcome": status}]),
                "token_group": "default",
                "mapped": json.dumps({"size": "1024x1024"}),
                "dropped": json.dumps(["style"]) if i % 5 == 0 else None,
                "status": status,
                "error_code": {429: "rate_limit_exceeded", 400: "invalid_value"}.get(status),
                "latency_ms": float(10 + i % 100),
                "upstream_ms": float(5 + i % 50),
                "cost_micros": 40_000 + i if status == 200 else 0,
                "cost_state": "booked" if status == 200 else "none",
                "images": 1 if status == 200 else 0,
                "video_seconds": 0,
                "job_id": f"video_{i // 10:04d}" if model == "sora-2" else None,
                "upstream_task_id": f"task_{i}" if model == "sora-2" else None,
                "batch_id": "batch_1" if i % 11 == 0 else None,
                "replayed": 0,
                "prompt": f"a lighthouse #{i}",
            }
        )
    return rows


def seed_log(url: str, rows: list[dict[str, Any]]) -> None:
    sql(url, [(INSERT_LOG, [[row[c] for c in LOG_COLUMNS] for row in rows])])


def newest_first(rows: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(rows, key=lambda r: (r["at"], r["request_id"]), reverse=True)
    return [r["request_id"] for r in ordered]


def all_pages(gw: Gateway, key: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a list, following next_cursor."""
    seen: list[dict[str, Any]] = []
    after = None
    with admin_http(gw, key) as http:
        for _ in range(10_000):
            query = {**params, **({"after": after} if after else {})}
            answer = http.get(path, params=query)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["object"] == "list"
            seen += body["data"]
            if not body["has_more"]:
                assert body["next_cursor"] is None
                return seen
            after = body["next_cursor"]
            assert after
    raise AssertionError("no last page")


def ids(items: list[dict[str, Any]], field: str = "request_id") -> list[str]:
    return [item[field] for item in items]


# --- the request log --------------------------------------------------------------------------


def test_requests_filter_page_and_show_one_record(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> None:
    gw = start_gateway(make_gateway, tmp_path, **job_store)
    now = time.time()
    rows = log_rows(150, now)
    seed_log(gw.settings.records_url(), rows)

    # Pages of 7 through everything: newest first, no row twice, none missed (ties included).
    listed = all_pages(gw, ADMIN, "/admin/v1/requests", {"limit": 7})
    assert ids(listed) == newest_first(rows)

    def expect(params: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> None:
        got = ids(all_pages(gw, VIEWER, "/admin/v1/requests", {**params, "limit": 11}))
        want = newest_first([r for r in rows if keep(r)])
        assert got == want, params
        assert want, f"the filter {params} should match some rows"

    expect({"team": "marketing"}, lambda r: r["team"] == "marketing")
    expect({"key": "analyst"}, lambda r: r["key"] == "analyst")
    expect({"model": "sora-2"}, lambda r: r["model"] == "sora-2")
    expect({"route": "gpt-image-2.official"}, lambda r: r["route"] == "gpt-image-2.official")
    expect({"status": "429"}, lambda r: r["status"] == 429)
    expect({"status": "4xx"}, lambda r: 400 <= r["status"] < 500)
    expect(
        {"status": "5XX", "team": "finance"},
        lambda r: r["status"] >= 500 and r["team"] == "finance",
    )
    expect({"error_code": "invalid_value"}, lambda r: r["error_code"] == "invalid_value")
    expect({"request_id": "req_000042"}, lambda r: r["request_id"] == "req_000042")
    expect({"job_id": "video_0001"}, lambda r: r["job_id"] == "video_0001")
    expect({"upstream_task_id": "task_4"}, lambda r: r["upstream_task_id"] == "task_4")
    expect({"batch_id": "batch_1"}, lambda r: r["batch_id"] == "batch_1")
    # start inclusive, end exclusive, as ISO 8601 times.
    start, end = rows[90]["at"], rows[30]["at"]
    iso = {
        "start": datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z"),
        "end": datetime.fromtimestamp(end, UTC).isoformat(),
    }
    expect(iso, lambda r: start <= r["at"] < end)
    # A date is its midnight (UTC).
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()
    if any(r["at"] < midnight for r in rows) and any(r["at"] >= midnight for r in rows):
        expect({"end": today.isoformat()}, lambda r: r["at"] < midnight)

    # The default page: 50, with a cursor that continues exactly after it.
    with admin_http(gw, ADMIN) as http:
        first = http.get("/admin/v1/requests").json()
        assert len(first["data"]) == 50 and first["has_more"]
        item = first["data"][0]
        assert set(item) >= {"request_id", "cost_usd", "routes_tried", "status", "team"}
        assert "cost_micros" not in item and "prompt" not in item
        second = http.get("/admin/v1/requests", params={"after": first["next_cursor"]}).json()
        assert ids(first["data"] + second["data"]) == newest_first(rows)[:100]

        # One request's full record: JSON fields decoded, money in USD, the prompt.
        record = http.get("/admin/v1/requests/req_000005").json()
        source = rows[5]
        assert record["object"] == "admin.request"
        assert record["routes_tried"] == [{"route": source["route"], "outcome": source["status"]}]
        assert record["mapped"] == {"size": "1024x1024"} and record["dropped"] == ["style"]
        assert record["cost_usd"] == round(source["cost_micros"] / 1e6, 6) == 0.040005
        assert record["prompt"] == "a lighthouse #5" and record["replayed"] is False
        missing = http.get("/admin/v1/requests/req_nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    # A member sees its own team's requests only, whatever the URL says.
    marketing = newest_first([r for r in rows if r["team"] == "marketing"])
    assert ids(all_pages(gw, DESIGNER, "/admin/v1/requests", {"limit": 20})) == marketing
    assert all_pages(gw, DESIGNER, "/admin/v1/requests", {"team": "finance"}) == []
    assert all_pages(gw, DESIGNER, "/admin/v1/requests", {"key": "analyst"}) == []
    finance_id = next(r["request_id"] for r in rows if r["team"] == "finance")
    marketing_id = marketing[0]
    with admin_http(gw, DESIGNER) as http:
        assert http.get(f"/admin/v1/requests/{finance_id}").status_code == 404
        assert http.get(f"/admin/v1/requests/{marketing_id}").status_code == 200
    # A member of no team: its own key's rows only.
    own = newest_first([r for r in rows if r["key"] == "team-a"])
    assert ids(all_pages(gw, CLIENT_KEY, "/admin/v1/requests", {"limit": 50})) == own


def test_bad_filters_are_a_400_naming_the_parameter(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = start_gateway(make_gateway, tmp_path)
    cases = [
        ("/admin/v1/requests", {"start": "yesterday"}, "start"),
        ("/admin/v1/requests", {"end": "2026-13-01"}, "end"),
        ("/admin/v1/requests", {"start": "2026-12-02", "end": "2026-12-01"}, "end"),
        ("/admin/v1/requests", {"status": "4x"}, "status"),
        ("/admin/v1/requests", {"status": "600"}, "status"),
        ("/admin/v1/requests", {"after": "not-a-cursor"}, "after"),
        ("/admin/v1/requests", {"limit": "0"}, "limit"),
        ("/admin/v1/requests", {"limit": "1001"}, "limit"),
        ("/admin/v1/requests", {"limit": "ten"}, "limit"),
        ("/admin/v1/jobs", {"status": "stuck"}, "status"),
        ("/admin/v1/jobs", {"after": "W10"}, "after"),  # base64 of []: not this list's cursor
        ("/admin/v1/usage", {"granularity": "week"}, "granularity"),
        ("/admin/v1/usage", {"group_by": "team,colour"}, "group_by"),
        ("/admin/v1/usage", {"group_by": "team,team"}, "group_by"),
        ("/admin/v1/usage", {"start": "01/12/2026"}, "start"),
        ("/admin/v1/export/requests", {"format": "xml"}, "format"),
        ("/admin/v1/export/usage", {"format": "csv", "group_by": "colour"}, "group_by"),
    ]
    unknown = [
        ("/admin/v1/requests", {"teem": "marketing"}, "teem"),
        ("/admin/v1/usage", {"status": "429"}, "status"),  # not a usage filter
        ("/admin/v1/health", {"route": "x"}, "route"),
    ]
    with admin_http(gw, ADMIN) as http:
        for path, params, param in cases + unknown:
            answer = http.get(path, params=params)
            assert answer.status_code == 400, (path, params, answer.text)
            error = answer.json()["error"]
            assert error["param"] == param, (path, params, error)
            assert error["type"] == "invalid_request_error" and error["message"]
            code = "unknown_parameter" if (path, params, param) in unknown else "invalid_value"
            assert error["code"] == code, (path, params, error)
    with admin_http(gw, None) as http:
        for path in ("/admin/v1/requests", "/admin/v1/usage", "/admin/v1/health"):
            assert http.get(path).status_code == 401
    with admin_http(gw, "sk-not-a-key") as http:
        assert http.get("/admin/v1/catalog").status_code == 401


# --- exports ----------------------------------------------------------------------------------


def test_exports_stream_what_the_lists_show(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> None:
    gw = start_gateway(make_gateway, tmp_path, **job_store)
    rows = log_rows(2300, time.time())  # more than two export chunks of 1000
    seed_log(gw.settings.records_url(), rows)
    listed = all_pages(gw, ADMIN, "/admin/v1/requests", {"limit": 1000})
    assert len(listed) == 2300

    with admin_http(gw, ADMIN) as http:
        answer = http.get("/admin/v1/export/requests", params={"format": "csv"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/csv")
        disposition = answer.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="requests-') and ".csv" in disposition
        table = list(csv.DictReader(io.StringIO(answer.text)))
        assert [row["request_id"] for row in table] == ids(listed)
        header = answer.text.split("\n", 1)[0].split(",")
        assert header == list(listed[0])  # the list's fields, in order
        for got, item in zip(table, listed, strict=True):
            assert got == {k: as_cell(v) for k, v in item.items()}

        answer = http.get(
            "/admin/v1/export/requests", params={"format": "jsonl", "team": "finance"}
        )
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in answer.text.splitlines()]
        assert lines == [item for item in listed if item["team"] == "finance"]

        # A filter nothing matches: the header alone.
        empty = http.get("/admin/v1/export/requests", params={"format": "csv", "team": "nobody"})
        assert empty.text.strip().split(",")[0] == "request_id" and empty.text.count("\n") == 1

    # A member's export is its team's rows only.
    with admin_http(gw, DESIGNER) as http:
        mine = http.get("/admin/v1/export/requests", params={"format": "jsonl", "team": "finance"})
        assert mine.status_code == 200 and mine.text == ""
        mine = http.get("/admin/v1/export/requests", params={"format": "jsonl"})
        assert [json.loads(x) for x in mine.text.splitlines()] == [
            item for item in listed if item["team"] == "marketing"
        ]


def as_cell(value: Any) -> str:
    """How a list's value reads in the CSV export."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value)
    return str(value)


# --- usage ------------------------------------------------------------------------------------

INSERT_ROLLUP = (
    "INSERT INTO usage_rollups (grain, bucket, key, team, model, route, requests, errors, reads, "
    "images, video_seconds, cost_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def rollups(today: str) -> list[tuple[Any, ...]]:
    """Rollups of three days and the days' hours, for three keys, two models."""
    out = []
    month = today[:7]
    days = [f"{month}-01", f"{month}-02", today] if today[8:] > "02" else [today]
    for d, day in enumerate(dict.fromkeys(days)):
        for k, (key, team) in enumerate(KEYS):
            for m, (model, route) in enumerate(MODELS):
                cost = 1_000_000 * (d + 1) + 10_000 * k + 100 * m
                requests = 10 + d + k + m
                out.append(("day", day, key, team, model, route, requests, 1, 2, 3, 4, cost))
                for hour in (9, 10):
                    out.append(
                        (
                            "hour",
                            f"{day}T{hour:02d}",
                            key,
                            team,
                            model,
                            route,
                            requests,
                            0,
                            1,
                            1,
                            2,
                            cost // 2,
                        )
                    )
    return out


def test_usage_reads_the_rollups_grouped_and_filtered(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> None:
    gw = start_gateway(make_gateway, tmp_path, **job_store)
    now = datetime.now(UTC)
    today = now.strftime("%Y-%m-%d")
    seeded = rollups(today)
    sql(gw.settings.records_url(), [(INSERT_ROLLUP, seeded)])
    # Request-log rows that disagree with the rollups: usage never reads the log.
    seed_log(gw.settings.records_url(), log_rows(30, time.time()))
    days = [r for r in seeded if r[0] == "day"]
    month_start = f"{today[:7]}-01"

    def totals(rows: list[tuple[Any, ...]], *dims: int) -> dict[tuple[Any, ...], tuple[int, int]]:
        out: dict[tuple[Any, ...], tuple[int, int]] = {}
        for r in rows:
            group = tuple(r[i] for i in dims)
            requests, cost = out.get(group, (0, 0))
            out[group] = (requests + r[6], cost + r[11])
        return out

    with admin_http(gw, ADMIN) as http:
        # The month by team and model (day buckets from the month's first day, end exclusive).
        answer = http.get(
            "/admin/v1/usage",
            params={"start": month_start, "end": "2999-01-01", "group_by": "team,model"},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["granularity"] == "day" and body["group_by"] == ["team", "model"]
        got = {
            (row["bucket"], row["team"], row["model"]): (row["requests"], row["cost_usd"])
            for row in body["data"]
        }
        want = {g: (req, round(cost / 1e6, 6)) for g, (req, cost) in totals(days, 1, 3, 4).items()}
        assert got == want
        # The sums over every page, on the first.
        assert body["totals"] == {
            "requests": sum(r[6] for r in days),
            "errors": sum(r[7] for r in days),
            "reads": sum(r[8] for r in days),
            "images": sum(r[9] for r in days),
            "video_seconds": sum(r[10] for r in days),
            "cost_usd": round(sum(r[11] for r in days) / 1e6, 6),
        }
        assert all("key" not in row or row["key"] is None for row in body["data"])
        assert body["data"][0]["start"] == f"{body['data'][0]['bucket']}T00:00:00Z"

        # end exclusive: today's bucket is not in [.., today).
        body = http.get(
            "/admin/v1/usage", params={"start": month_start, "end": today, "group_by": "model"}
        ).json()
        assert today not in {row["bucket"] for row in body["data"]}
        # Hours, filtered by a dimension.
        body = http.get(
            "/admin/v1/usage",
            params={
                "start": f"{today}T10:00:00Z",
                "end": f"{today}T11:00:00+00:00",
                "granularity": "hour",
                "model": "sora-2",
                "group_by": "key",
            },
        ).json()
        assert {(r["bucket"], r["key"]) for r in body["data"]} == {
            (f"{today}T10", key) for key, _ in KEYS
        }
        hour = [r for r in seeded if r[0] == "hour" and r[1] == f"{today}T10" and r[4] == "sora-2"]
        assert sum(r["cost_usd"] for r in body["data"]) == pytest.approx(
            sum(r[11] for r in hour) / 1e6
        )
        # Budget status per key where grouped by key: designer has 5/day and 100/month.
        budget = body["budgets"]["key"]["designer"]
        spent_today = sum(r[11] for r in days if r[1] == today and r[2] == "designer") / 1e6
        spent_month = sum(r[11] for r in days if r[2] == "designer") / 1e6
        assert budget["day"]["limit_usd"] == 5 and budget["month"]["limit_usd"] == 100
        assert budget["day"]["spent_usd"] == pytest.approx(spent_today)
        assert budget["month"]["spent_usd"] == pytest.approx(spent_month)
        assert budget["day"]["remaining_usd"] == pytest.approx(max(0, 5 - spent_today))
        assert body["budgets"]["key"]["analyst"] == {"day": None, "month": None}

        # Pages of usage rows follow each other without repeats (a cursor over the groups).
        everything = all_pages(
            gw,
            ADMIN,
            "/admin/v1/usage",
            {"start": month_start, "group_by": "key,model", "limit": 4},
        )
        keys = [(r["bucket"], r["key"], r["model"]) for r in everything]
        assert keys == sorted(set(keys)) and len(keys) == len(days)

        # The usage export: the same rows as the list.
        for kind in ("csv", "jsonl"):
            answer = http.get(
                "/admin/v1/export/usage",
                params={"start": month_start, "group_by": "key,model", "format": kind},
            )
            assert answer.status_code == 200
            assert "attachment" in answer.headers["content-disposition"]
            if kind == "jsonl":
                assert [json.loads(x) for x in answer.text.splitlines()] == [
                    {k: v for k, v in r.items() if k not in ("team", "route")} for r in everything
                ]
            else:
                table = list(csv.DictReader(io.StringIO(answer.text)))
                assert [
                    (r["bucket"], r["key"], r["model"], float(r["cost_usd"])) for r in table
                ] == [(r["bucket"], r["key"], r["model"], r["cost_usd"]) for r in everything]

    # A member: its team's rollups only, whatever it asks.
    with admin_http(gw, DESIGNER) as http:
        body = http.get("/admin/v1/usage", params={"start": month_start, "group_by": "team"}).json()
        assert {r["team"] for r in body["data"]} == {"marketing"}
        body = http.get("/admin/v1/usage", params={"start": month_start, "team": "finance"}).json()
        assert body["data"] == []


# --- video jobs -------------------------------------------------------------------------------

JOB_COLUMNS = [
    "id",
    "upstream_id",
    "owner",
    "model",
    "route",
    '"group"',
    "key_fp",
    "prompt",
    "size",
    "seconds",
    "status",
    "created_at",
    "updated_at",
    "progress",
    "completed_at",
    "expires_at",
    "error",
    "cost",
    "route_snapshot",
]
INSERT_JOB = (
    f"INSERT INTO video_jobs ({', '.join(JOB_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in JOB_COLUMNS)})"
)
STATUSES = ("queued", "in_progress", "completed", "failed")


def test_jobs_list_and_one_job_with_its_history(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> None:
    gw = start_gateway(make_gateway, tmp_path, **job_store)
    now = int(time.time())
    jobs = []
    for i in range(40):
        owner = KEYS[i % 3][0]
        status = STATUSES[i % 4]
        error = (
            json.dumps({"code": "moderation_blocked", "message": "no"})
            if status == "failed"
            else None
        )
        jobs.append(
            (
                f"video_{i:04d}",
                f"task_{i}",
                owner,
                ("sora-2", "sora-2-pro")[i % 2],
                "muse-video",
                "default",
                "ab" * 32,
                f"waves {i}",
                "720x1280",
                8,
                status,
                now - 3600 + (i // 2) * 60,
                now,
                100 if status == "completed" else 10,
                now if status == "completed" else None,
                None,
                error,
                0.5 if status == "completed" else None,
                json.dumps({"multiplier": 1.0}),
            )
        )
    url = gw.settings.records_url()
    sql(url, [(INSERT_JOB, jobs)])
    seed_log(url, log_rows(40, time.time()))  # rows with job_id video_0000..video_0003

    def newest(keep: Callable[[tuple[Any, ...]], bool]) -> list[str]:
        return [j[0] for j in sorted(jobs, key=lambda j: (j[11], j[0]), reverse=True) if keep(j)]

    assert ids(all_pages(gw, ADMIN, "/admin/v1/jobs", {"limit": 3}), "id") == newest(lambda j: True)
    for params, keep in [
        ({"status": "failed"}, lambda j: j[10] == "failed"),
        ({"model": "sora-2-pro"}, lambda j: j[3] == "sora-2-pro"),
        (
            {"key": "analyst", "status": "completed"},
            lambda j: j[2] == "analyst" and j[10] == "completed",
        ),
        ({"team": "marketing"}, lambda j: j[2] == "designer"),
    ]:
        got = ids(all_pages(gw, VIEWER, "/admin/v1/jobs", {**params, "limit": 4}), "id")
        assert got == newest(keep) and got, params
    start = datetime.fromtimestamp(now - 3600 + 300, UTC).isoformat()
    got = ids(all_pages(gw, ADMIN, "/admin/v1/jobs", {"start": start}), "id")
    assert got == newest(lambda j: j[11] >= now - 3600 + 300)

    with admin_http(gw, ADMIN) as http:
        job = http.get("/admin/v1/jobs/video_0001").json()
        assert job["object"] == "admin.job" and job["owner"] == "analyst"
        assert job["status"] == "in_progress" and job["route_snapshot"] == {"multiplier": 1.0}
        history = [r["request_id"] for r in job["history"]]
        logged = log_rows(40, 0)
        assert sorted(history) == sorted(
            r["request_id"] for r in logged if r["job_id"] == "video_0001"
        )
        assert history
        failed = http.get("/admin/v1/jobs/video_0003").json()
        assert failed["error"] == {"code": "moderation_blocked", "message": "no"}
        done = http.get("/admin/v1/jobs/video_0002").json()
        assert done["cost_usd"] == 0.5
        assert http.get("/admin/v1/jobs/video_9999").status_code == 404

    # A member: its team's keys' jobs; another team's job is a 404.
    mine = ids(all_pages(gw, DESIGNER, "/admin/v1/jobs", {}), "id")
    assert mine == newest(lambda j: j[2] == "designer")
    assert all_pages(gw, DESIGNER, "/admin/v1/jobs", {"key": "analyst"}) == []
    assert all_pages(gw, DESIGNER, "/admin/v1/jobs", {"team": "finance"}) == []
    with admin_http(gw, DESIGNER) as http:
        assert http.get("/admin/v1/jobs/video_0001").status_code == 404  # analyst's
        assert http.get("/admin/v1/jobs/video_0000").status_code == 200  # designer's


def test_a_video_made_through_the_gateway_is_on_record(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> None:
    """No seeding: a real create through the SDK, read back from the job store's table."""
    overlay = fast_video_polls(tmp_path / "fast-polls.yaml")
    gw = start_gateway(make_gateway, tmp_path, config=overlay, **job_store)
    video = gw.sdk(api_key=DESIGNER).videos.create(prompt="[sim:render=5] the admin sees me")
    with admin_http(gw, VIEWER) as http:
        listed = http.get("/admin/v1/jobs", params={"key": "designer"}).json()["data"]
        assert [job["id"] for job in listed] == [video.id]
        job = http.get(f"/admin/v1/jobs/{video.id}").json()
        assert job["owner"] == "designer" and job["prompt"] == "[sim:render=5] the admin sees me"
        assert job["status"] in ("queued", "in_progress") and job["model"] == video.model
    with admin_http(gw, DESIGNER) as http:  # its own team's job
        assert http.get(f"/admin/v1/jobs/{video.id}").status_code == 200
    with admin_http(gw, ANALYST) as http:  # another team's: not there
        assert http.get(f"/admin/v1/jobs/{video.id}").status_code == 404
        assert http.get("/admin/v1/jobs").json()["data"] == []


# --- catalog and health -----------------------------------------------------------------------


def test_catalog_says_prices_and_what_the_upstream_lists(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    from mediagate.catalog import load_catalog

    full = load_catalog(None)
    gone = full.routes["gpt-image-2.official"]
    sim.state.unlisted.add((gone.group, gone.upstream_model))
    gw = start_gateway(make_gateway, tmp_path, catalog_check_interval_s=3600)
    with admin_http(gw, VIEWER) as http:
        body = http.get("/admin/v1/catalog").json()
        assert body["object"] == "admin.catalog" and body["listing_checked"] is True
        routes = {r["id"]: r for r in body["routes"]}
        route = routes["gpt-image-2.official"]
        assert route["group"] == gone.group and route["upstream_model"] == gone.upstream_model
        assert route["price"] is not None and route["price_as_of"] == str(gone.price.as_of)
        assert route["price_source"] == gone.price.source
        assert "gpt-image-2" in route["models"]
        assert {m["id"] for m in body["models"]} >= {"gpt-image-2", "muse-video"}

        def checked() -> bool:
            found = {r["id"]: r["listed"] for r in http.get("/admin/v1/catalog").json()["routes"]}
            return found["gpt-image-2.official"] is False

        wait_until(checked, timeout_s=15)
        found = {r["id"]: r["listed"] for r in http.get("/admin/v1/catalog").json()["routes"]}
        assert any(listed is True for listed in found.values())


def test_health_per_route_over_the_last_hour(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> None:
    gw = start_gateway(make_gateway, tmp_path, **job_store)
    now = time.time()
    rows = []
    for i in range(100):
        rows.append(
            {
                **log_rows(1, now)[0],
                "request_id": f"h_{i}",
                "at": now - 10 - i,
                "route": "gpt-image-2.official",
                "team": ("marketing", "finance")[i % 2],
                "status": 429 if i % 10 == 0 else (502 if i % 10 == 1 else 200),
                "latency_ms": float(i + 1),
            }
        )
    # Older than the hour: not counted.
    rows.append({**rows[0], "request_id": "h_old", "at": now - 7200, "latency_ms": 99999.0})
    seed_log(gw.settings.records_url(), rows)
    with admin_http(gw, ADMIN) as http:
        body = http.get("/admin/v1/health").json()
        found = {r["route"]: r for r in body["data"]}
        route = found["gpt-image-2.official"]
        assert route["requests"] == 100 and route["rate_limited"] == 10
        assert route["success_rate"] == 0.8
        assert route["p50_ms"] == 50.0 and route["p95_ms"] == 95.0
        assert route["breaker"] == "closed"
        idle = found["muse-video"]
        assert idle["requests"] == 0 and idle["success_rate"] is None and idle["p50_ms"] is None
    with admin_http(gw, DESIGNER) as http:  # a member: its team's requests only
        route = {r["route"]: r for r in http.get("/admin/v1/health").json()["data"]}
        assert route["gpt-image-2.official"]["requests"] == 50


# --- the admin API's document -----------------------------------------------------------------


def test_the_saved_openapi_document_is_the_codes(gateway: Gateway) -> None:
    """The CI check: `make admin-openapi` regenerates the saved file when routes change."""
    generated = admin_openapi()
    saved = json.loads(SAVED.read_text("utf-8"))
    assert saved == json.loads(json.dumps(generated)), "run `make admin-openapi`"
    validate(saved)  # a valid OpenAPI document
    paths = set(saved["paths"])
    assert {
        "/admin/v1/usage",
        "/admin/v1/requests",
        "/admin/v1/requests/{request_id}",
        "/admin/v1/jobs",
        "/admin/v1/jobs/{job_id}",
        "/admin/v1/export/requests",
        "/admin/v1/export/usage",
        "/admin/v1/catalog",
        "/admin/v1/health",
    } <= paths
    assert all(path.startswith("/admin/v1/") for path in paths)
    params = {p["name"] for p in saved["paths"]["/admin/v1/requests"]["get"]["parameters"]}
    assert params >= {"start", "end", "status", "job_id", "batch_id", "after", "limit"}
    with admin_http(gateway, CLIENT_KEY) as http:
        assert http.get("/admin/v1/health").status_code == 200
        assert CHECKED and CHECKED[-1] == "/admin/v1/health"  # the answers' check runs
        served = http.get("/admin/v1/openapi.json")
        assert served.status_code == 200 and served.json() == saved

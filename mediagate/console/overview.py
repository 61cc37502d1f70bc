"""The console's Overview page (`/console`): spend today and this month (UTC) against the
budgets, per team and per key; spend over time by model or by team (`?by=model|team`), the
last 30 days by day or 48 hours by hour (`?granularity=day|hour`), drawn by uPlot with the
same numbers in a table; requests and the error rate today and over 24 hours; video jobs
running. Every number links to the list behind it.

All of it from the usage rollups and the job counts (`Reports`), never the request log: the
page costs the same on a day of ten requests as on a day of a million. A member sees its own
team's numbers only (`scope_of`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import HTMLResponse

from mediagate.console.web import PREFIX, Viewer, render
from mediagate.http.admin_reads import budgets, reports, usd
from mediagate.http.routes import Routes
from mediagate.stores.sql.reports import Reports, Scope, UsageQuery

pages = Routes()

TOP = 20  # the teams and keys listed, by this month's spend
SERIES = 8  # the chart's lines; the rest summed as "other"
CHART_ROWS = 10000  # 48 buckets x 200 models or teams
GRAINS: dict[str, tuple[Literal["hour", "day"], int]] = {"day": ("day", 30), "hour": ("hour", 48)}


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def meter(spent: float, limit: float | None) -> dict[str, Any] | None:
    """A budget's bar: its share spent (in 5 % steps for the width class), whether over."""
    if limit is None:
        return None
    share = spent / limit if limit > 0 else 1.0
    return {
        "limit": limit,
        "percent": round(share * 100),
        "width": min(100, max(0, round(share * 20) * 5)),
        "over": spent >= limit,
    }


async def spenders(
    store: Reports,
    column: Literal["key", "team"],
    day: str,
    month: str,
    scope: Scope,
    limits: dict[str, Any],
) -> list[dict[str, Any]]:
    rows = await store.top_spend(column, day, month, scope, TOP)
    out = []
    for name, today, this_month in rows:
        if not name:
            continue
        status = limits.get(column, {}).get(name, {})
        day_limit = (status.get("day") or {}).get("limit_usd")
        month_limit = (status.get("month") or {}).get("limit_usd")
        out.append(
            {
                "name": name,
                "day": usd(today),
                "month": usd(this_month),
                "day_meter": meter(usd(today), day_limit),
                "month_meter": meter(usd(this_month), month_limit),
            }
        )
    return out


def chart(
    rows: list[Any], by: str, grain: str, first: datetime, count: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The spend series (uPlot's data: x in Unix seconds, one line per name, USD) and the same
    numbers as table rows (one per bucket)."""
    step = timedelta(days=1) if grain == "day" else timedelta(hours=1)
    buckets = [first + i * step for i in range(count)]
    labels = [_day(b) if grain == "day" else _hour(b) for b in buckets]
    index = {label: i for i, label in enumerate(labels)}
    by_name: dict[str, list[int]] = {}
    for row in rows:
        i = index.get(row["bucket"])
        if i is None:
            continue
        name = row[by] or "(none)"
        by_name.setdefault(name, [0] * count)[i] += int(row["cost_micros"] or 0)
    # The names that spent anything in the window (a chart of spend), most first.
    ranked = sorted((n for n in by_name if any(by_name[n])), key=lambda n: (-sum(by_name[n]), n))
    shown = ranked[:SERIES]
    series = {name: by_name[name] for name in shown}
    if len(ranked) > SERIES:
        other = [0] * count
        for name in ranked[SERIES:]:
            other = [a + b for a, b in zip(other, by_name[name], strict=True)]
        series["other"] = other
    data = {
        "x": [int(b.timestamp()) for b in buckets],
        "series": [
            {"label": name, "values": [usd(v) for v in values]} for name, values in series.items()
        ],
    }
    table = [
        {
            "bucket": labels[i],
            "start": _iso(buckets[i]),
            "end": _iso(buckets[i] + step),
            "values": [usd(values[i]) for values in series.values()],
            "total": usd(sum(values[i] for values in series.values())),
        }
        for i in range(count)
    ]
    return data, table


@pages.get(PREFIX + "", name="console.overview", include_in_schema=False)
async def overview_page(
    request: Request, session: Viewer, granularity: str = "day", by: str = "model"
) -> HTMLResponse:
    grain, count = GRAINS.get(granularity, GRAINS["day"])
    by = by if by in ("model", "team") else "model"
    gw, store, scope = reports(request, session.principal)
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)
    day, month = _day(today), now.strftime("%Y-%m")
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    since_24h = this_hour - timedelta(hours=23)

    today_q = UsageQuery(grain="day", start_bucket=day, end_bucket=_day(tomorrow))
    month_q = UsageQuery(grain="day", start_bucket=f"{month}-01", end_bucket=_day(tomorrow))
    last_24h_q = UsageQuery(
        grain="hour",
        start_bucket=_hour(since_24h),
        end_bucket=_hour(this_hour + timedelta(hours=1)),
    )
    today_sums = await store.usage_totals(today_q, scope)
    month_sums = await store.usage_totals(month_q, scope)
    last_24h = await store.usage_totals(last_24h_q, scope)

    # The budgets of the teams and keys with spend this month (admin_reads.budgets: the same
    # status /admin/v1/usage gives).
    teams_spent = await store.top_spend("team", day, month, scope, TOP)
    keys_spent = await store.top_spend("key", day, month, scope, TOP)
    named = [{"team": n, "key": None} for n, _, _ in teams_spent]
    named += [{"team": None, "key": n} for n, _, _ in keys_spent]
    limits = await budgets(
        gw,
        store,
        UsageQuery(grain="day", start_bucket=day, end_bucket=day, group_by=("key", "team")),
        named,
    )
    teams = await spenders(store, "team", day, month, scope, limits)
    keys = await spenders(store, "key", day, month, scope, limits)

    step = timedelta(days=1) if grain == "day" else timedelta(hours=1)
    last = today if grain == "day" else this_hour
    first = last - (count - 1) * step
    label = _day if grain == "day" else _hour
    chart_q = UsageQuery(
        grain=grain, start_bucket=label(first), end_bucket=label(last + step), group_by=(by,)
    )
    rows = await store.usage(chart_q, scope, None, CHART_ROWS)
    data, table = chart(rows[:CHART_ROWS], by, grain, first, count)

    jobs = await store.unfinished_jobs(scope)
    requests_24h = int(last_24h["requests"] or 0)
    errors_24h = int(last_24h["errors"] or 0)
    requests_today = int(today_sums["requests"] or 0)
    errors_today = int(today_sums["errors"] or 0)
    return render(
        request,
        session,
        "overview.html",
        title="Overview",
        grain=grain,
        by=by,
        spend_today=usd(today_sums["cost_micros"]),
        spend_month=usd(month_sums["cost_micros"]),
        requests_today=requests_today,
        errors_today=errors_today,
        requests_24h=requests_24h,
        errors_24h=errors_24h,
        rate_today=errors_today / requests_today if requests_today else None,
        rate_24h=errors_24h / requests_24h if requests_24h else None,
        today_start=_iso(today),
        month_start=f"{month}-01",
        since_24h=_iso(since_24h),
        teams=teams,
        keys=keys,
        chart=data,
        table=table,
        names=[s["label"] for s in data["series"]],
        jobs=jobs,
        member=session.principal.role == "member",
        team=session.principal.team,
    )

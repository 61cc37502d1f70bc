"""The request log: one row per request in `request_log`, its counts in `usage_rollups`,
written off the request path in batches (mediagate.accounting.requestlog), on each engine.

The gateways here flush only when told (MEDIAGATE_REQUEST_LOG_FLUSH_S at its longest), so a
test says when a batch is written and reads exactly what it wrote."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from fastapi import FastAPI

from mediagate.accounting.requestlog import RequestLog, micros
from mediagate.app import create_app
from mediagate.errors import StoreUnavailable
from mediagate.gateway import Gateway as Composed
from mediagate.servethread import BackgroundServer
from mediagate.settings import Settings
from mediagate.stores.sql.db import Database, Tx
from mediagate.stores.sql.requestlog import complete_rows, write_batch

from .conftest import GROUP_KEYS, Gateway, Sim, gateway_settings
from .otlp import OtlpReceiver
from .otlp import otlp as otlp  # a fixture
from .resilience import catalog

OFFICIAL = GROUP_KEYS["OpenAI Official"]


@dataclass
class Logged:
    """A gateway whose app the test holds: its request log and its database."""

    gateway: Gateway
    app: FastAPI
    server: BackgroundServer

    @property
    def composed(self) -> Composed:
        gw: Composed = self.app.state.gateway
        return gw

    @property
    def log(self) -> RequestLog:
        log = self.composed.request_log
        assert log is not None
        return log

    def flush(self) -> int:
        return self.log.blocking(self.log.flush)

    def sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        def work(tx: Tx) -> list[dict[str, Any]]:
            return [
                dict(zip(r.keys(), tuple(r), strict=True))
                for r in tx.execute(sql, params).fetchall()
            ]

        return self.composed.database.blocking(work, atomic=False)

    def row(self, request_id: str) -> dict[str, Any]:
        # By the id the test sent (X-Request-ID): the client's, kept beside ours.
        (row,) = self.sql("SELECT * FROM request_log WHERE client_request_id = ?", (request_id,))
        return row

    def transaction(self, work: Callable[[Tx], Any]) -> Any:
        return self.composed.database.blocking(work)


@pytest.fixture
def make_logged(
    sim: Sim, tmp_path: Path, job_store: dict[str, str]
) -> Iterator[Callable[..., Logged]]:
    servers: list[BackgroundServer] = []

    def make(**overrides: Any) -> Logged:
        values: dict[str, Any] = {
            "config": catalog(tmp_path),
            "video_poll_after_ms": 50,
            "request_log_flush_s": 60,  # written when the test flushes (or at 500 rows)
            **job_store,
            **overrides,
        }
        settings = gateway_settings(sim, tmp_path / "data", **values)
        app = create_app(settings)
        server = BackgroundServer(app).start()
        servers.append(server)
        return Logged(Gateway(server.url, settings), app, server)

    yield make
    for server in servers:
        server.stop()


def _tried(row: dict[str, Any]) -> Any:
    return json.loads(row["routes_tried"]) if row["routes_tried"] else None


def _totals(logged: Logged, grain: str) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    rows = logged.sql(
        "SELECT key, team, model, route, SUM(requests) AS r, SUM(errors) AS e FROM usage_rollups"
        " WHERE grain = ? GROUP BY key, team, model, route",
        (grain,),
    )
    return {
        (r["key"], r["team"], r["model"], r["route"]): (int(r["r"]), int(r["e"]))
        for r in rows
        if r["r"] or r["e"]
    }


def _logged_totals(logged: Logged) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    rows = logged.sql(
        "SELECT key, team, COALESCE(model, '') AS model, COALESCE(route, '') AS route,"
        " COUNT(*) AS r, SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS e FROM request_log"
        " GROUP BY key, team, COALESCE(model, ''), COALESCE(route, '')"
    )
    return {(r["key"], r["team"], r["model"], r["route"]): (int(r["r"]), int(r["e"])) for r in rows}


def _reads(logged: Logged, grain: str) -> int:
    rows = logged.sql("SELECT SUM(reads) AS n FROM usage_rollups WHERE grain = ?", (grain,))
    return int(rows[0]["n"] or 0)


def _dropped(url: str) -> float:
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("mediagate_request_log_dropped_total "):
            return float(line.split()[1])
    raise AssertionError("mediagate_request_log_dropped_total is not exported")


def test_each_request_is_one_row_with_its_facts_and_the_rollups_count_them(
    make_logged: Callable[..., Logged], sim: Sim
) -> None:
    logged = make_logged()
    sdk = logged.gateway.sdk()

    ok = sdk.images.with_raw_response.generate(
        model="gpt-image-2",
        prompt="a fox",
        size="1024x1024",
        quality="low",
        n=2,
        extra_headers={"X-Request-ID": "rl-ok"},
    )
    cost = float(ok.headers["x-mediagate-cost-usd"])
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.images.generate(
            model="gpt-image-2",
            prompt="a fox",
            size="13x13",
            extra_headers={"X-Request-ID": "rl-bad"},
        )
    sim.state.faults.set(by_key={OFFICIAL: "503"})
    sdk.images.generate(
        model="gpt-image-2",
        prompt="a fox",
        size="1024x1536",
        extra_headers={"X-Request-ID": "rl-fb"},
    )
    sim.state.faults.clear()
    video = sdk.videos.create(prompt="a kite", extra_headers={"X-Request-ID": "rl-video"})
    # Reads: counted, not logged; a failed one is a row.
    reads = 0
    while sdk.videos.retrieve(video.id).status not in ("completed", "failed"):
        reads += 1
    sdk.videos.list()
    reads += 2
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve("video_0123456789abcdef", extra_headers={"X-Request-ID": "rl-404"})

    assert logged.flush() == 5
    assert logged.flush() == 0  # nothing twice

    row = logged.row("rl-ok")
    assert {k: row[k] for k in ("key", "team", "endpoint", "method", "model", "alias")} == {
        "key": "team-a",
        "team": "",
        "endpoint": "images.generations",
        "method": "POST",
        "model": "gpt-image-2",
        "alias": None,
    }
    assert (row["route"], row["token_group"]) == ("gpt-image-2.official", "OpenAI Official")
    assert (row["tier"], row["quality"], row["n"], row["seconds"]) == ("1024x1024", "low", 2, None)
    assert (row["status"], row["error_code"], row["images"], row["video_seconds"]) == (
        200,
        None,
        2,
        0,
    )
    assert (row["cost_micros"], row["cost_state"]) == (micros(cost), "booked")
    assert row["cost_micros"] > 0
    assert _tried(row) == [{"route": "gpt-image-2.official", "outcome": "ok"}]
    assert row["latency_ms"] >= row["upstream_ms"] > 0
    assert (row["replayed"], row["trace_id"], row["prompt"], row["principal"]) == (
        0,
        None,
        None,
        None,
    )
    assert row["job_id"] is None and row["batch_id"] is None and row["custom_id"] is None

    row = logged.row("rl-bad")
    code = bad.value.body["code"] if isinstance(bad.value.body, dict) else None
    assert (row["status"], row["error_code"]) == (400, code)
    assert code
    assert (row["cost_micros"], row["cost_state"], row["images"], _tried(row)) == (
        0,
        "none",
        0,
        None,
    )

    row = logged.row("rl-fb")
    assert (row["status"], row["route"]) == (200, "gpt-image-2.enterprise")
    assert _tried(row) == [
        {"route": "gpt-image-2.official", "outcome": "upstream_error"},
        {"route": "gpt-image-2.enterprise", "outcome": "ok"},
    ]

    row = logged.row("rl-video")
    assert (row["endpoint"], row["status"], row["job_id"]) == ("videos.create", 200, video.id)
    assert row["upstream_task_id"] and row["seconds"] and row["tier"]
    # Reserved (the estimate) until the job's settlement books it: polled to its end above, it
    # has settled, and the row (whichever was written first) carries the booked cost.
    assert row["cost_state"] == "booked" and row["cost_micros"] > 0 and row["video_seconds"] > 0

    row = logged.row("rl-404")
    assert (row["endpoint"], row["status"], row["error_code"]) == (
        "videos.retrieve",
        404,
        "video_not_found",
    )
    assert row["cost_state"] == "none"

    # No row for a successful read; the rollups count the rows and the reads.
    assert len(logged.sql("SELECT request_id FROM request_log")) == 5
    for grain in ("hour", "day"):
        assert _totals(logged, grain) == _logged_totals(logged)
        assert _reads(logged, grain) == reads


def test_a_video_row_is_booked_whichever_comes_first_row_or_settlement(
    make_logged: Callable[..., Logged],
) -> None:
    logged = make_logged()
    sdk = logged.gateway.sdk()
    first = sdk.videos.create(prompt="a kite", extra_headers={"X-Request-ID": "rl-v1"})
    second = sdk.videos.create(prompt="a kite", extra_headers={"X-Request-ID": "rl-v2"})
    # The ledger's settlement, as it writes it: the settlement row and, in the same
    # transaction, the rows already logged (complete_rows).

    def settle(job_id: str, cost_micros: int, seconds: int) -> Callable[[Tx], int]:
        def work(tx: Tx) -> int:
            tx.execute(
                "INSERT INTO settlements (id, at, key, model, cost_micros, video_seconds)"
                " VALUES (?, ?, 'team-a', 'sora-2', ?, ?)",
                (job_id, time.time(), cost_micros, seconds),
            )
            return complete_rows(tx, job_id, cost_micros, 0, seconds)

        return work

    # The second job settles before its row is written: the writer completes the row.
    assert logged.transaction(settle(second.id, 200_000, 8)) == 0
    assert logged.flush() == 2
    assert logged.row("rl-v1")["cost_state"] == "reserved"
    booked = logged.row("rl-v2")
    assert (booked["cost_state"], booked["cost_micros"], booked["video_seconds"]) == (
        "booked",
        200_000,
        8,
    )
    # The first settles after its row: the settlement completes it.
    assert logged.transaction(settle(first.id, 100_000, 4)) == 1
    booked = logged.row("rl-v1")
    assert (booked["cost_state"], booked["cost_micros"], booked["video_seconds"]) == (
        "booked",
        100_000,
        4,
    )
    # After settlement, the log sums to the settlements.
    total = logged.sql("SELECT SUM(cost_micros) AS c FROM request_log")[0]["c"]
    assert int(total) == 300_000


def test_an_unusable_database_keeps_the_queue_to_its_bound_and_writes_once_back(
    make_logged: Callable[..., Logged],
) -> None:
    logged = make_logged(request_log_queue=5)
    # The database refuses the log's writes: its table is away (on both engines, at once).
    logged.transaction(lambda tx: tx.execute("ALTER TABLE request_log RENAME TO request_log_away"))
    with logged.gateway.http() as http:
        for i in range(8):
            answer = http.post(
                "/v1/images/generations",
                json={"model": "gpt-image-2", "prompt": "x", "size": "13x13"},
                headers={"X-Request-ID": f"rl-down-{i}"},
            )
            assert answer.status_code == 400
            if i == 2:  # a batch tried (and failed) while the queue fills
                with pytest.raises(StoreUnavailable):
                    logged.flush()
        assert http.get("/v1/videos").status_code == 200  # a read, counted once back
    with pytest.raises(StoreUnavailable):
        logged.flush()
    assert logged.log.queued() == 5
    assert _dropped(logged.gateway.url) == 3
    logged.transaction(lambda tx: tx.execute("ALTER TABLE request_log_away RENAME TO request_log"))
    assert logged.flush() == 5
    assert logged.flush() == 0
    ids = [
        r["client_request_id"]
        for r in logged.sql("SELECT client_request_id FROM request_log ORDER BY at")
    ]
    assert ids == [f"rl-down-{i}" for i in range(5)]
    for grain in ("hour", "day"):
        assert _totals(logged, grain) == _logged_totals(logged)
        assert _reads(logged, grain) == 1
    # A batch written again (its commit's answer lost) adds neither rows nor counts.
    row = logged.row("rl-down-0")
    again = tuple(row.values())
    assert logged.transaction(lambda tx: write_batch(tx, [again], {})) == []
    assert _totals(logged, "day") == _logged_totals(logged)


def test_a_graceful_stop_writes_what_is_queued(make_logged: Callable[..., Logged]) -> None:
    logged = make_logged()
    with logged.gateway.http() as http:
        for i in range(3):
            http.get("/v1/videos/video_0123456789abcdef", headers={"X-Request-ID": f"rl-end-{i}"})
    assert logged.log.queued() == 3
    url = logged.gateway.settings.records_url()
    logged.server.stop()

    async def count() -> int:
        database = await Database.open(url)
        try:
            return int(await database.run(lambda tx: tx.scalar("SELECT COUNT(*) FROM request_log")))
        finally:
            await database.close()

    assert asyncio.run(count()) == 3


def test_rows_past_retention_are_swept(make_logged: Callable[..., Logged]) -> None:
    logged = make_logged(request_log_days=30)
    now = time.time()
    with logged.gateway.http() as http:
        logged.log.clock = lambda: now - 31 * 86400  # rows of a month ago
        http.get("/v1/videos/video_0123456789abcdef", headers={"X-Request-ID": "rl-old"})
        logged.log.clock = lambda: now
        http.get("/v1/videos/video_0123456789abcdef", headers={"X-Request-ID": "rl-new"})
    assert logged.flush() == 2
    assert logged.log.blocking(logged.log.sweep) == 1
    kept = logged.sql("SELECT client_request_id FROM request_log")
    assert [r["client_request_id"] for r in kept] == ["rl-new"]


def test_prompts_are_recorded_only_where_the_setting_says(
    make_logged: Callable[..., Logged],
) -> None:
    # Default: on in the offline simulator mode, off otherwise.
    assert Settings(simulator=True).prompts_logged()
    assert not Settings().prompts_logged()
    assert not Settings(simulator=True, log_prompts=False).prompts_logged()
    logged = make_logged(log_prompts=True)
    sdk = logged.gateway.sdk()
    sdk.images.generate(
        model="gpt-image-2", prompt="a red panda", extra_headers={"X-Request-ID": "rl-p"}
    )
    sdk.videos.create(prompt="a kite at dusk", extra_headers={"X-Request-ID": "rl-pv"})
    assert logged.flush() == 2
    assert logged.row("rl-p")["prompt"] == "a red panda"
    assert logged.row("rl-pv")["prompt"] == "a kite at dusk"


def test_a_streamed_answer_is_logged_with_its_cost_once_the_stream_ends(
    make_logged: Callable[..., Logged],
) -> None:
    logged = make_logged()
    sdk = logged.gateway.sdk()
    events = list(
        sdk.images.generate(
            model="gpt-image-2", prompt="a fox", stream=True, extra_headers={"X-Request-ID": "rl-s"}
        )
    )
    assert events[-1].type == "image_generation.completed"
    assert logged.flush() == 1
    row = logged.row("rl-s")
    assert (row["status"], row["images"], row["cost_state"]) == (200, 1, "booked")
    assert row["cost_micros"] > 0


def test_the_log_can_be_turned_off(make_logged: Callable[..., Logged]) -> None:
    logged = make_logged(request_log=False)
    assert logged.composed.request_log is None
    logged.gateway.sdk().images.generate(model="gpt-image-2", prompt="a fox")
    assert logged.sql("SELECT COUNT(*) AS n FROM request_log")[0]["n"] == 0


def test_a_row_carries_its_trace_id_and_whether_it_was_a_replay(
    make_logged: Callable[..., Logged], otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url)
    logged = make_logged(otel=True)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with logged.gateway.http() as http:
        for request_id in ("rl-first", "rl-replay"):
            answer = http.post(
                "/v1/images/generations",
                json={"model": "gpt-image-2", "prompt": "a fox"},
                headers={
                    "X-Request-ID": request_id,
                    "Idempotency-Key": "rl-once",
                    "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
                },
            )
            assert answer.status_code == 200
    assert logged.flush() == 2
    first, replay = logged.row("rl-first"), logged.row("rl-replay")
    assert first["trace_id"] == replay["trace_id"] == trace_id
    assert (first["replayed"], first["cost_state"]) == (0, "booked")
    assert first["cost_micros"] > 0
    # The replay was not billed again: no cost on its row.
    assert (replay["replayed"], replay["cost_state"], replay["cost_micros"]) == (1, "none", 0)


def test_a_batch_counts_only_the_rows_it_inserted(database_url: str) -> None:
    """The store alone, on each engine: a request id twice in a batch, or already written, is
    one row and one count; a read is counted in `reads` under its own key."""
    from mediagate.stores.sql.migrate import upgrade
    from mediagate.stores.sql.requestlog import COLUMNS

    at = 1_780_000_000.0  # 2026-05-28T20:26:40Z

    def row(request_id: str, status: int) -> tuple[Any, ...]:
        values = dict.fromkeys(COLUMNS)
        values |= {"request_id": request_id, "at": at, "key": "k", "team": "t", "model": "m"}
        values |= {"endpoint": "images.generations", "method": "POST", "status": status}
        values |= {"route": "r", "cost_micros": 0, "cost_state": "none", "images": 0}
        values |= {"video_seconds": 0, "replayed": 0}
        return tuple(values[c] for c in COLUMNS)

    async def run() -> list[dict[str, Any]]:
        database = await Database.open(database_url)
        try:
            await upgrade(database)
            reads = {("hour", "2026-05-28T20", "k", "t", "m", "r"): 2}
            first = [row("a", 200), row("b", 500), row("a", 200)]
            inserted = await database.transaction(lambda tx: write_batch(tx, first, reads))
            assert sorted(inserted) == ["a", "b"]
            again = [row("b", 500), row("c", 404)]
            inserted = await database.transaction(lambda tx: write_batch(tx, again, {}))
            assert inserted == ["c"]
            rows = await database.run(
                lambda tx: tx.execute(
                    "SELECT grain, bucket, requests, errors, reads FROM usage_rollups"
                    " ORDER BY grain, bucket"
                ).fetchall()
            )
            return [dict(zip(r.keys(), tuple(r), strict=True)) for r in rows]
        finally:
            await database.close()

    assert asyncio.run(run()) == [
        {"grain": "day", "bucket": "2026-05-28", "requests": 3, "errors": 2, "reads": 0},
        {"grain": "hour", "bucket": "2026-05-28T20", "requests": 3, "errors": 2, "reads": 2},
    ]


def test_a_flush_writes_what_was_queued_when_called_not_what_keeps_arriving(
    database_url: str,
) -> None:
    """Under a steady stream of polls a read is counted while each batch commits: a flush that
    took those too never ended (one transaction after another, each with its fsync, instead of
    one every MEDIAGATE_REQUEST_LOG_FLUSH_S). A read counted during a flush waits for the
    next one."""
    from mediagate.context import RequestContext
    from mediagate.observability.metrics import Metrics
    from mediagate.stores.sql.migrate import upgrade

    def read() -> RequestContext:
        ctx = RequestContext(key_name="k", model="m")
        ctx.endpoint = "videos.retrieve"
        return ctx

    async def run() -> tuple[int, int, int]:
        database = await Database.open(database_url)
        try:
            await upgrade(database)
            log = RequestLog(Metrics())
            log.attach(database)

            async def reads() -> int:
                rows = await database.run(
                    lambda tx: tx.execute(
                        "SELECT SUM(reads) AS n FROM usage_rollups WHERE grain = 'hour'"
                    ).fetchall()
                )
                return int(rows[0]["n"] or 0)

            log.record(read(), 200, 0.001, "GET")
            flushing = asyncio.ensure_future(log.flush())
            await asyncio.sleep(0)  # its transaction under way
            log.record(read(), 200, 0.001, "GET")  # a poll answered meanwhile
            await flushing
            first = await reads()
            await log.flush()
            second = await reads()
            await log.flush()
            return first, second, await reads()
        finally:
            await database.close()

    assert asyncio.run(run()) == (1, 2, 2)


def test_the_admin_api_is_not_the_usage_it_reports(make_logged: Callable[..., Logged]) -> None:
    admin = "mga-admin-for-the-log"
    logged = make_logged(admin_keys=f"ops:admin:{hashlib.sha256(admin.encode()).hexdigest()}")
    gw = logged.gateway
    with gw.http(admin) as http:
        assert http.get("/admin/v1/requests").status_code == 200
        assert http.get("/admin/v1/usage").status_code == 200
    with gw.http("sk-not-an-admin") as http:
        assert http.get("/admin/v1/requests").status_code == 401
    logged.flush()
    rows = logged.sql("SELECT endpoint, status FROM request_log")
    # The refused call is on record; the admin's own reads are not.
    assert rows == [{"endpoint": "admin.requests", "status": 401}]


def test_a_client_id_sent_twice_is_two_requests_on_record_and_on_the_bill(
    make_logged: Callable[..., Logged],
) -> None:
    # The records are keyed by the gateway's own id: a client (or a load balancer) that sends
    # one X-Request-ID twice gets two rows and two settlements, never a free second request.
    logged = make_logged()
    sdk = logged.gateway.sdk()
    answers = [
        sdk.images.with_raw_response.generate(
            model="gpt-image-2-web", prompt=f"a heron {i}", extra_headers={"X-Request-ID": "dup-1"}
        )
        for i in range(2)
    ]
    ours = [a.headers["x-request-id"] for a in answers]
    assert len(set(ours)) == 2 and all(a.headers["x-client-request-id"] == "dup-1" for a in answers)
    logged.log.blocking(logged.composed.metering.flush)  # the batched settlements, booked
    logged.flush()
    rows = logged.sql(
        "SELECT request_id, cost_micros, cost_state FROM request_log WHERE client_request_id = ?",
        ("dup-1",),
    )
    assert sorted(r["request_id"] for r in rows) == sorted(ours)
    assert [(r["cost_micros"], r["cost_state"]) for r in rows] == [(30_000, "booked")] * 2
    settled = logged.sql(
        "SELECT COUNT(*) AS n, SUM(cost_micros) AS total FROM settlements WHERE id IN (?, ?)",
        tuple(ours),
    )
    assert (settled[0]["n"], settled[0]["total"]) == (2, 60_000)

"""The Files and Batch APIs for images, driven by the real openai SDK against the simulator:
files owned per key within a quota; a batch with invalid lines failing before any call; a
1,000-line batch whose marked lines fail upstream while the rest complete, billed line by line;
hosted links, budgets, 429s slowing a batch down, webhooks, edit lines (SSRF refused), metrics
and cancel (issue 27)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx2
import openai
import pytest
from openai.types import Batch, ImagesResponse
from openai.types.webhooks import BatchCompletedWebhookEvent

from mediagate.simulator import make_png
from mediagate.videos.webhooks import new_secret

from .conftest import OTHER_CLIENT_KEY, Gateway, Sim, decode_image, wait_until
from .resilience import metric
from .test_keys import entry, keys_file
from .test_webhooks import Receiver, unwrap
from .test_webhooks import receiver as receiver  # the fixture, shared

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

GENERATIONS: Final = "/v1/images/generations"
EDITS: Final = "/v1/images/edits"
MODEL = "gpt-image-2-web"  # $0.03 a call, one image a call (tests/test_accounting.py)
PRICE = 0.03
# One prompt for the lines that should simply succeed: the simulator draws its picture once.
PROMPT = "a catalogue shot"
FINAL = ("completed", "failed", "expired", "cancelled")


def line(custom_id: str, url: str = GENERATIONS, **body: Any) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": PROMPT, **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


def upload(client: openai.OpenAI, data: bytes, purpose: Any = "batch", **kwargs: Any) -> Any:
    return client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose=purpose, **kwargs)


def create(
    client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: Any = GENERATIONS
) -> Batch:
    source = upload(client, jsonl(lines))
    return client.batches.create(
        input_file_id=source.id, endpoint=endpoint, completion_window="24h"
    )


def finished(client: openai.OpenAI, batch_id: str, timeout_s: float = 20) -> Batch:
    """The batch once it has reached a final status."""
    seen: list[Batch] = []

    def ended() -> bool:
        seen.append(client.batches.retrieve(batch_id))
        return seen[-1].status in FINAL

    wait_until(ended, timeout_s=timeout_s, interval_s=0.05)
    return seen[-1]


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """An output or error file's lines."""
    assert file_id is not None
    content = client.files.content(file_id).content
    assert content.endswith(b"\n")
    return [json.loads(raw) for raw in content.splitlines()]


def extra(batch: Batch, name: str) -> Any:
    """A field the gateway adds to OpenAI's Batch object (the SDK keeps unknown fields)."""
    assert batch.model_extra is not None
    return batch.model_extra[name]


def logged(gw: Gateway, batch_id: str, count: int) -> list[dict[str, Any]]:
    """The batch's rows in the request log (the key reads its own), once there are `count`."""
    rows: list[dict[str, Any]] = []

    def written() -> bool:
        rows.clear()
        after = None
        with gw.http() as http:
            while True:
                query: dict[str, str | int] = {"batch_id": batch_id, "limit": 1000}
                if after:
                    query["after"] = after
                page = http.get("/admin/v1/requests", params=query)
                assert page.status_code == 200, page.text
                rows.extend(page.json()["data"])
                after = page.json()["next_cursor"]
                if not after:
                    return len(rows) >= count

    wait_until(written, timeout_s=10, interval_s=0.2)
    return rows


def fast(make_gateway: Callable[..., Gateway], **overrides: Any) -> Gateway:
    """A gateway whose runner looks for work every 50 ms."""
    overrides.setdefault("batch_poll_interval_s", 0.05)
    return make_gateway(**overrides)


# --- Files ------------------------------------------------------------------------------------


def test_files_are_their_keys_and_read_back_as_uploaded(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = fast(make_gateway)
    client, other = gw.sdk(), gw.sdk(api_key=OTHER_CLIENT_KEY)
    data = jsonl([line(f"c{i}") for i in range(3)])
    made = upload(client, data)
    assert (made.object, made.purpose, made.bytes, made.filename) == (
        "file",
        "batch",
        len(data),
        "input.jsonl",
    )
    assert made.id.startswith("file-") and made.expires_at is None
    assert client.files.retrieve(made.id) == made
    assert client.files.content(made.id).content == data

    # Cursor pagination: five files, two a page, each seen once, newest first.
    more = [upload(client, b'{"n": %d}\n' % i).id for i in range(4)]
    pages, after = [], None
    while True:
        page = client.files.list(limit=2, after=after or openai.omit)
        pages.append([f.id for f in page.data])
        if not page.has_more:
            break
        after = page.data[-1].id
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == [*reversed(more), made.id]
    assert [f.id for f in client.files.list(order="asc").data] == [made.id, *more]

    # Another key: not its file, whatever it asks.
    for ask in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            ask(made.id)
    assert other.files.list().data == []
    assert client.files.retrieve(made.id).id == made.id  # still there

    deleted = client.files.delete(made.id)
    assert (deleted.id, deleted.deleted) == (made.id, True)
    for ask in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            ask(made.id)

    # expires_after gives the file its expiry.
    expiring = upload(client, data, expires_after={"anchor": "created_at", "seconds": 3600})
    assert expiring.expires_at == expiring.created_at + 3600

    # A purpose this gateway does not take is a 400 naming it; so is an expiry out of bounds.
    with pytest.raises(openai.BadRequestError) as refused:
        upload(client, data, purpose="fine-tune")
    assert refused.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as refused:
        upload(client, data, expires_after={"anchor": "created_at", "seconds": 60})
    assert refused.value.param == "expires_after"


def test_the_quota_refuses_an_upload_past_it_and_keeps_nothing(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = fast(make_gateway, files_quota_bytes=1000)
    client = gw.sdk()
    first = upload(client, b"x" * 600)
    stored_before = sorted(p for p in (tmp_path / "data").rglob("*") if p.is_file())
    with gw.http() as http:
        refused = http.post(
            "/v1/files",
            data={"purpose": "batch"},
            files={"file": ("more.jsonl", b"y" * 600, "application/jsonl")},
        )
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "files_quota_exceeded" and "1000 bytes" in error["message"]
    with pytest.raises(openai.RateLimitError):  # the SDK sees the same refusal
        upload(client, b"z" * 600)
    assert [f.id for f in client.files.list().data] == [first.id]
    stored_after = sorted(p for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert [p for p in stored_after if p not in stored_before] == []  # nothing kept
    # Another key has its own quota; and room made is room to use.
    upload(gw.sdk(api_key=OTHER_CLIENT_KEY), b"w" * 600)
    client.files.delete(first.id)
    upload(client, b"v" * 900)


# --- Batches ----------------------------------------------------------------------------------


def test_a_batch_with_invalid_lines_fails_before_any_call_and_costs_nothing(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gw = fast(make_gateway)
    client = gw.sdk()
    lines: list[Any] = [line(f"line-{n}") for n in range(1, 1001)]
    lines[99] = "not json {"  # line 100
    lines[199] = line("line-1")  # line 200: line 1's custom_id again
    lines[299] = line("line-300", url=EDITS)  # line 300: not the batch's endpoint
    lines[399] = line("line-400", size="banana")  # line 400: not a size
    lines[499] = line("line-500", model="no-such-model")  # line 500
    lines[599] = {**line("line-600"), "method": "GET"}  # line 600
    data = b"".join(
        (item if isinstance(item, str) else json.dumps(item)).encode() + b"\n" for item in lines
    )
    source = upload(client, data)
    batch = client.batches.create(
        input_file_id=source.id, endpoint=GENERATIONS, completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data is not None
    found = {(e.line, e.code, e.param) for e in batch.errors.data}
    assert found == {
        (100, "invalid_json_line", None),
        (200, "duplicate_custom_id", "custom_id"),
        (300, "mismatched_url", "url"),
        (400, "invalid_value", "size"),  # as the endpoint itself answers it
        (500, "model_not_found", "model"),
        (600, "invalid_method", "method"),
    }
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (0, 0)
    assert batch.output_file_id is None and batch.error_file_id is None
    assert extra(batch, "cost_usd") == 0
    with gw.http() as http:
        usage = http.get("/v1/usage").json()
    assert usage["totals"]["cost_usd"] == 0 and usage["totals"]["images"] == 0
    # A valid batch after it runs to its end: by then the runner has had its rounds, and all
    # the upstream ever received is that batch's one line.
    after = finished(client, create(client, [line("after", prompt="the valid one")]).id)
    assert after.status == "completed"
    assert client.batches.retrieve(batch.id).status == "failed"
    assert [c.body["prompt"] for c in sim.sent()] == ["the valid one"]


FAILING = (7, 333, 501, 998)  # the lines the upstream refuses (1-based)


def test_a_thousand_lines_run_marked_ones_fail_and_the_bill_is_the_sum_of_the_lines(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gw = fast(make_gateway, batch_concurrency=16)
    client = gw.sdk()
    lines = [
        line(f"shot-{n}")
        if n not in FAILING
        # The upstream refuses it: a 400 is not retried (the gateway answers it as a 502).
        else line(f"shot-{n}", prompt=f"refused [sim:burst400=1:refused{n}]")
        for n in range(1, 1001)
    ]
    started = time.monotonic()
    batch = create(client, lines)
    assert batch.status == "in_progress" and batch.request_counts is not None
    assert batch.request_counts.total == 1000
    assert extra(batch, "estimate_usd") == pytest.approx(1000 * PRICE)
    batch = finished(client, batch.id, timeout_s=60)
    wall = time.monotonic() - started
    print(f"\n1,000-line images batch: {wall:.2f} s from create to completed")

    assert batch.status == "completed" and batch.completed_at is not None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (1000, 996)
    assert batch.request_counts.failed == len(FAILING)
    # Each line sent once, no more.
    assert len(sim.sent(GENERATIONS)) == 1000

    errors = read_lines(client, batch.error_file_id)
    assert [e["custom_id"] for e in errors] == [f"shot-{n}" for n in FAILING]
    for failed in errors:
        assert failed["error"] is None and failed["response"]["status_code"] == 502
        assert set(failed["response"]["body"]["error"]) == {"message", "type", "param", "code"}
        assert failed["response"]["request_id"].startswith("req_")

    outputs = read_lines(client, batch.output_file_id)
    expected = [f"shot-{n}" for n in range(1, 1001) if n not in FAILING]
    assert [o["custom_id"] for o in outputs] == expected  # in line order
    assert len({o["id"] for o in outputs}) == len(outputs)
    for done in outputs:
        assert done["error"] is None and done["response"]["status_code"] == 200
        answer = ImagesResponse.model_validate(done["response"]["body"])
        assert answer.data is not None and len(answer.data) == 1
        assert decode_image(answer.data[0].b64_json).format == "PNG"

    # The bill: the upstream's price for each line that made an image, booked line by line in
    # the request log (a row of each line's own, its batch and custom_id on it), summed on the
    # Batch object.
    rows = logged(gw, batch.id, 1000)
    assert len(rows) == 1000
    by_request = {row["request_id"]: row for row in rows}
    assert len(by_request) == 1000  # one row per line
    for answered in [*outputs, *errors]:
        row = by_request[answered["response"]["request_id"]]
        assert row["custom_id"] == answered["custom_id"]
        assert row["status"] == answered["response"]["status_code"]
        assert row["endpoint"] == "images.generations" and row["key"] == "team-a"
    assert sum(row["cost_usd"] for row in rows) == pytest.approx(996 * PRICE)
    assert {row["cost_usd"] for row in rows if row["status"] == 200} == {PRICE}
    assert extra(batch, "cost_usd") == pytest.approx(996 * PRICE)
    with gw.http() as http:
        usage = http.get("/v1/usage").json()
    assert usage["totals"]["cost_usd"] == pytest.approx(996 * PRICE)


def test_url_lines_answer_hosted_links_that_download(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = fast(make_gateway)
    client = gw.sdk()
    batch = finished(
        client, create(client, [line(f"u{i}", response_format="url") for i in range(2)]).id
    )
    assert batch.status == "completed"
    outputs = read_lines(client, batch.output_file_id)
    assert len(outputs) == 2
    for done in outputs:
        answer = ImagesResponse.model_validate(done["response"]["body"])
        assert answer.data is not None and answer.data[0].b64_json is None
        link = answer.data[0].url
        assert link is not None and link.startswith(f"{gw.url}/v1/files/images/")
        image = httpx2.get(link)  # no key: the link is the credential
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        decode_image(base64.b64encode(image.content).decode())


def test_a_batch_past_the_budget_left_is_refused_naming_both(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    key = "sk-batch-budget"
    path = keys_file(tmp_path / "keys.yaml", [entry("frugal", key, budget_usd_per_day=0.1)])
    gw = fast(make_gateway, keys_file=path)
    client = gw.sdk(api_key=key)
    client.images.generate(model=MODEL, prompt=PROMPT)  # $0.03 spent: $0.07 left
    sim.state.reset()
    source = upload(client, jsonl([line(f"b{i}") for i in range(3)]))  # up to $0.09
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=source.id, endpoint=GENERATIONS, completion_window="24h"
        )
    assert refused.value.code == "batch_over_budget"
    assert "$0.0900" in refused.value.message and "$0.0700" in refused.value.message
    assert client.batches.list().data == []
    # Two lines fit; once they have run, the upstream has seen those two and nothing else.
    fits = upload(client, jsonl([line(f"b{i}", prompt="fits") for i in range(2)]))
    batch = client.batches.create(
        input_file_id=fits.id, endpoint=GENERATIONS, completion_window="24h"
    )
    assert finished(client, batch.id).status == "completed"
    assert [c.body["prompt"] for c in sim.sent()] == ["fits", "fits"]


def test_upstream_429s_slow_a_batch_down_instead_of_failing_its_lines(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gw = fast(make_gateway)
    client = gw.sdk()
    # Each marked line meets more 429s than the sender's own retries take (4 calls), so the
    # runner puts it back for later (Retry-After 0) rather than failing it.
    lines = [
        line(f"r{n}", prompt=f"busy [sim:burst429=6:busy{n}] [sim:retryafter=0]")
        if n % 3 == 0
        else line(f"r{n}")
        for n in range(1, 10)
    ]
    batch = finished(client, create(client, lines).id)
    assert batch.status == "completed" and batch.error_file_id is None
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (9, 0)
    statuses = [c.status for c in sim.sent(GENERATIONS)]
    assert statuses.count(429) == 3 * 6 and statuses.count(200) == 9
    assert extra(batch, "cost_usd") == pytest.approx(9 * PRICE)


def test_a_finished_batch_sends_a_signed_batch_completed_event(
    make_gateway: Callable[..., Gateway], receiver: Receiver
) -> None:
    secret = new_secret()
    gw = fast(
        make_gateway,
        webhook_url=receiver.url,
        webhook_secret=secret,
        webhook_allow_hosts=[receiver.host],
        webhook_retry_base_s=0.2,
    )
    client = gw.sdk()
    batch = finished(client, create(client, [line("w1"), line("w2")]).id)
    assert batch.status == "completed"
    wait_until(lambda: len(receiver.received) >= 1, timeout_s=10)
    body, headers, _ = receiver.received[0]
    event = unwrap(secret, body, headers)
    assert isinstance(event, BatchCompletedWebhookEvent)  # the SDK's own parse of the type
    assert event.type == "batch.completed" and event.data.id == batch.id
    assert event.id == headers["webhook-id"] and len(receiver.received) == 1
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(new_secret(), body, headers)


PNG = make_png(64, 64, "to edit")


def test_edit_lines_take_data_urls_and_file_ids_and_refuse_private_links(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gw = fast(make_gateway)
    client = gw.sdk()
    picture = client.files.create(file=("in.png", io.BytesIO(PNG), "image/png"), purpose="vision")
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    private = ("http://10.0.0.1/x.png", "http://169.254.169.254/latest/meta-data")
    lines = [
        line("data", url=EDITS, prompt="tint it", images=[{"image_url": data_url}]),
        line("file", url=EDITS, prompt="tint it", images=[{"file_id": picture.id}]),
        *(
            line(f"ssrf{i}", url=EDITS, prompt="tint it", images=[{"image_url": link}])
            for i, link in enumerate(private)
        ),
    ]
    batch = finished(client, create(client, lines, endpoint=EDITS).id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    outputs = read_lines(client, batch.output_file_id)
    assert [o["custom_id"] for o in outputs] == ["data", "file"]
    for done in outputs:
        answer = ImagesResponse.model_validate(done["response"]["body"])
        assert answer.data is not None
        decode_image(answer.data[0].b64_json)
    errors = read_lines(client, batch.error_file_id)
    assert [e["custom_id"] for e in errors] == ["ssrf0", "ssrf1"]
    for refused in errors:
        assert refused["response"]["status_code"] == 400
        assert refused["response"]["body"]["error"]["param"] == "images"
    # The edits that ran sent the uploaded bytes; the private links were never fetched.
    assert len(sim.sent(EDITS)) == 2
    assert extra(batch, "cost_usd") == pytest.approx(2 * PRICE)


def test_metrics_count_batches_and_lines_by_status(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gw = fast(make_gateway)
    client = gw.sdk()
    done = finished(client, create(client, [line("m1"), line("m2")]).id)
    assert done.status == "completed"
    # A batch held up: the upstream asks for a minute's wait (past what the sender waits out),
    # so its lines wait, pending, and the gauges (read every 5 s while batches run) show it.
    held = create(
        client,
        [line(f"h{i}", prompt="[sim:burst429=99:held] [sim:retryafter=60]") for i in range(3)],
    )

    def gauges(**expected: float) -> Callable[[], bool]:
        def read() -> bool:
            return all(
                metric(gw.url, name.split("__")[0], status=name.split("__")[1]) == value
                for name, value in expected.items()
            )

        return read

    wait_until(
        gauges(
            mediagate_batches__completed=1,
            mediagate_batches__in_progress=1,
            mediagate_batch_lines__pending=3,
        ),
        timeout_s=8,
        interval_s=0.2,
    )
    assert len(sim.sent(GENERATIONS)) == 2 + 3  # each held line tried once, then waiting
    cancelled = finished(client, client.batches.cancel(held.id).id)
    assert cancelled.status == "cancelled"
    wait_until(
        gauges(
            mediagate_batches__cancelled=1,
            mediagate_batches__in_progress=0,
            mediagate_batch_lines__pending=0,
        ),
        timeout_s=2,
    )
    errors = read_lines(client, cancelled.error_file_id)
    assert [e["error"]["code"] for e in errors] == ["batch_cancelled"] * 3


def test_a_cancelled_batch_stops_sending_and_bills_what_was_sent(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gw = fast(make_gateway, batch_concurrency=2)
    client = gw.sdk()
    lines = [line(f"s{n}", prompt=f"slow {n} [sim:slowstart=1]") for n in range(1, 11)]
    batch = create(client, lines)
    # Cancelled once the first lines are at the upstream (arrived, not yet answered).
    wait_until(lambda: any(path == GENERATIONS for _, path, _ in sim.state.headers), timeout_s=5)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch = finished(client, batch.id, timeout_s=10)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    sent = len(sim.sent(GENERATIONS))
    assert 1 <= sent <= 4  # what was in flight at the cancel, no more
    assert batch.request_counts is not None and batch.request_counts.completed == sent
    outputs = read_lines(client, batch.output_file_id)
    assert len(outputs) == sent and all(o["response"]["status_code"] == 200 for o in outputs)
    # The lines never sent end in the error file, cancelled, with no answer.
    assert batch.request_counts.failed == 10 - sent
    errors = read_lines(client, batch.error_file_id)
    assert {e["custom_id"] for e in errors} | {o["custom_id"] for o in outputs} == {
        f"s{n}" for n in range(1, 11)
    }
    assert all(e["response"] is None and e["error"]["code"] == "batch_cancelled" for e in errors)
    assert extra(batch, "cost_usd") == pytest.approx(sent * PRICE)
    # Every line has ended: none is left to send later (the upstream's count is final).
    assert batch.request_counts.completed + batch.request_counts.failed == 10

"""Idempotency-Key: a repeat gets the first answer without a second upstream call (or charge),
a different body is a 409, a repeat waits for a first that is still running; across replicas,
on both stores."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from mediagate.stores.idempotency import Stored

from .conftest import CLIENT_KEY, GROUP_KEYS, OTHER_CLIENT_KEY, Gateway, Sim, StoreClock, StoreUrl
from .processes import clean_env, serving
from .resilience import catalog, metric
from .test_edits import PNG_OTHER, PNG_SMALL

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Sora warning
REPLAYED = "x-mediagate-idempotent-replay"


def post(gateway: Gateway, key: str, api_key: str | None = None, **body: Any) -> httpx2.Response:
    body = {"model": "gpt-image-2-web", "prompt": "a lighthouse", **body}
    with gateway.http(**({"api_key": api_key} if api_key else {})) as http:
        return http.post("/v1/images/generations", json=body, headers={"Idempotency-Key": key})


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway], tmp_path: Path, job_store: dict[str, str]) -> Gateway:
    return make_gateway(config=catalog(tmp_path), video_poll_after_ms=20, **job_store)


def test_a_repeat_gets_the_first_answer_and_nothing_goes_upstream(gw: Gateway, sim: Sim) -> None:
    first = post(gw, "k1")
    again = post(gw, "k1")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true" and REPLAYED not in first.headers
    assert again.headers["x-mediagate-route"] == "gpt-image-2.web"
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(sim.sent()) == 1
    assert metric(gw.url, "mediagate_idempotency_total", outcome="replayed") == 1
    # The replay is counted on its route, and charged nothing.
    assert again.headers["x-mediagate-cost-usd"] == "0.000000"


def test_keys_are_per_client(gw: Gateway, sim: Sim) -> None:
    assert post(gw, "shared").status_code == 200
    other = post(gw, "shared", api_key=OTHER_CLIENT_KEY)
    assert other.status_code == 200 and REPLAYED not in other.headers
    assert len(sim.sent()) == 2


def test_the_same_key_with_another_body_is_a_409_the_sdk_does_not_retry(
    gw: Gateway, sim: Sim
) -> None:
    assert post(gw, "k2").status_code == 200
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.sdk().api_key, max_retries=2)
    with pytest.raises(openai.ConflictError) as caught:
        client.images.generate(
            model="gpt-image-2-web",
            prompt="a different lighthouse",
            extra_headers={"Idempotency-Key": "k2"},
        )
    assert caught.value.code == "idempotency_key_reused"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(sim.sent()) == 1


def test_the_body_is_compared_as_json_not_as_bytes(gw: Gateway, sim: Sim) -> None:
    with gw.http() as http:
        headers = {"Idempotency-Key": "k3", "content-type": "application/json"}
        a = '{"model": "gpt-image-2-web", "prompt": "x", "n": 1}'
        b = '{"n":1,"prompt":"x","model":"gpt-image-2-web"}'
        first = http.post("/v1/images/generations", content=a, headers=headers)
        second = http.post("/v1/images/generations", content=b, headers=headers)
    assert second.headers[REPLAYED] == "true" and second.content == first.content


def test_a_repeat_waits_for_the_first_while_it_runs(gw: Gateway, sim: Sim) -> None:
    results: dict[str, httpx2.Response] = {}

    def send(name: str) -> None:
        results[name] = post(gw, "k4", prompt="[sim:sleep=1] a lighthouse")

    first = threading.Thread(target=send, args=("first",))
    first.start()
    time.sleep(0.3)
    started = time.monotonic()
    send("second")
    first.join()
    assert results["second"].content == results["first"].content
    assert results["second"].headers[REPLAYED] == "true"
    assert time.monotonic() - started > 0.4  # it waited for the first to finish
    assert len(sim.sent()) == 1
    assert metric(gw.url, "mediagate_idempotency_total", outcome="waited") == 1


def test_a_repeat_that_waited_too_long_is_told_to_come_back(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(idempotency_wait_s=0.2)
    thread = threading.Thread(
        target=post, args=(gateway, "k5"), kwargs={"prompt": "[sim:sleep=1] x"}
    )
    thread.start()
    time.sleep(0.2)
    busy = post(gateway, "k5", prompt="[sim:sleep=1] x")
    thread.join()
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert busy.headers["retry-after"] == "1"
    assert "x-should-retry" not in busy.headers  # the SDK retries a 409, after Retry-After
    assert post(gateway, "k5", prompt="[sim:sleep=1] x").headers[REPLAYED] == "true"
    assert len(sim.sent()) == 1


def test_failures_that_cost_nothing_are_not_kept(gw: Gateway, sim: Sim) -> None:
    # A 400 before anything was sent: the client may fix its request and keep its key.
    assert post(gw, "k6", size="3x3").status_code == 400
    assert post(gw, "k6").status_code == 200
    # An upstream that keeps failing: a retry with the same key runs again.
    assert post(gw, "k7", prompt="[sim:status=503] x").status_code == 502
    assert post(gw, "k7", prompt="[sim:status=503] x").status_code == 502
    assert len(sim.sent()) == 1 + 3 + 3


def test_failures_that_may_have_been_paid_are_kept(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    override = catalog(tmp_path, {"gpt-image-2.web": {"timeouts": {"total": 0.3}}})
    gateway = make_gateway(config=override)
    first = post(gateway, "k8", prompt="[sim:sleep=1] x")
    assert first.status_code == 504
    again = post(gateway, "k8", prompt="[sim:sleep=1] x")
    assert again.status_code == 504 and again.headers[REPLAYED] == "true"
    assert again.headers["x-should-retry"] == "false"
    assert len(sim.sent()) == 1  # the upstream may have finished (and charged) the first
    for prompt in ("[sim:reset] x", "[sim:nonjson] x", "[sim:truncated] x"):
        key = secrets.token_hex(4)
        assert post(gateway, key, prompt=prompt).status_code == 502
        assert post(gateway, key, prompt=prompt).headers[REPLAYED] == "true"
    assert len(sim.sent()) == 4


def test_a_repeat_is_served_by_another_replica(
    make_gateway: Callable[..., Gateway], sim: Sim, job_store: dict[str, str]
) -> None:
    one, two = make_gateway(**job_store), make_gateway(**job_store)
    first = post(one, "k9")
    again = post(two, "k9")
    assert again.headers[REPLAYED] == "true" and again.content == first.content
    assert post(two, "k9", prompt="other").status_code == 409
    assert len(sim.sent()) == 1


def test_edits_are_compared_by_their_fields_and_file_bytes(gw: Gateway, sim: Sim) -> None:
    client = gw.sdk()

    def edit(image: bytes, key: str = "e1") -> Any:
        return client.images.with_raw_response.edit(
            model="gpt-image-2-web",
            image=("in.png", image, "image/png"),
            prompt="brighter",
            extra_headers={"Idempotency-Key": key},
        )

    first = edit(PNG_SMALL)
    again = edit(PNG_SMALL)  # a new multipart boundary, the same request
    assert again.headers[REPLAYED] == "true"
    assert again.parse().data[0].b64_json == first.parse().data[0].b64_json
    with pytest.raises(openai.ConflictError):
        edit(PNG_OTHER)
    assert len(sim.sent("/v1/images/edits")) == 1


def test_a_video_create_is_made_once(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    headers = {"Idempotency-Key": "v1"}
    first = sdk.videos.create(prompt="a calm sea", seconds="8", extra_headers=headers)
    again = sdk.videos.create(prompt="a calm sea", seconds="8", extra_headers=headers)
    assert again.id == first.id
    with pytest.raises(openai.ConflictError):
        sdk.videos.create(prompt="a calm sea", seconds="4", extra_headers=headers)
    assert len([c for c in sim.sent("/v1/videos") if c.method == "POST"]) == 1
    assert [v.id for v in sdk.videos.list().data] == [first.id]


def test_a_remix_is_made_once(gw: Gateway, sim: Sim) -> None:
    sdk = gw.sdk()
    source = sdk.videos.create_and_poll(prompt="a calm sea", seconds="5")  # Muse continues it
    headers = {"Idempotency-Key": "r1"}
    first = sdk.videos.remix(source.id, prompt="at dusk", extra_headers=headers)
    again = sdk.videos.remix(source.id, prompt="at dusk", extra_headers=headers)
    assert again.id == first.id
    with pytest.raises(openai.ConflictError):
        sdk.videos.remix(source.id, prompt="at dawn", extra_headers=headers)
    continuations = [c for c in sim.sent("/v1/videos") if c.method == "POST"][1:]
    assert len(continuations) == 1 and "video_url" in continuations[0].body


def test_a_stream_is_kept_as_the_events_it_sent(gw: Gateway, sim: Sim) -> None:
    client = gw.sdk()
    headers = {"Idempotency-Key": "s1"}

    def events() -> list[Any]:
        stream = client.images.generate(
            model="gpt-image-2", prompt="p", stream=True, partial_images=1, extra_headers=headers
        )
        return [(e.type, e.b64_json) for e in stream]

    first = events()
    assert [kind for kind, _ in first] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert events() == first
    assert len(sim.sent()) == 1


def test_a_client_that_leaves_releases_its_key(gw: Gateway, sim: Sim) -> None:
    with gw.http() as http, pytest.raises(httpx2.ReadTimeout):
        body = {"model": "gpt-image-2-web", "prompt": "[sim:sleep=1] x"}
        http.post(
            "/v1/images/generations", json=body, headers={"Idempotency-Key": "d1"}, timeout=0.3
        )
    time.sleep(0.3)
    retry = post(gw, "d1", prompt="x")  # another body: accepted, so the first claim is gone
    assert retry.status_code == 200 and REPLAYED not in retry.headers


def test_a_client_that_leaves_mid_stream_releases_its_key(gw: Gateway, sim: Sim) -> None:
    body = {"model": "gpt-image-2-web", "prompt": "[sim:sleep=2] x", "stream": True}
    with (
        gw.http() as http,
        http.stream(
            "POST", "/v1/images/generations", json=body, headers={"Idempotency-Key": "d2"}
        ) as response,
    ):
        assert next(response.iter_bytes()).startswith(b": keep-alive")
    deadline = time.monotonic() + 3
    while True:  # the gateway notices the client left at its next keep-alive or at once
        retry = post(gw, "d2", prompt="y")
        if retry.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert retry.status_code == 200 and REPLAYED not in retry.headers


def test_an_answer_too_large_to_keep_is_never_paid_twice(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(idempotency_max_body_bytes=100)
    assert post(gateway, "big").status_code == 200
    again = post(gateway, "big")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "idempotency_answer_not_kept"
    assert again.headers["x-should-retry"] == "false"
    assert len(sim.sent()) == 1


def test_a_bad_key_is_a_400(gw: Gateway, sim: Sim) -> None:
    assert post(gw, "x" * 256).status_code == 400
    assert sim.sent() == []


# The store itself, on both backends. Time moves by `store_clock.advance`: on SQLite a fake
# clock, on Redis (TIME for leases, PEXPIRE for expiry) a real wait, so the TTLs are short.


def test_a_crashed_owners_claim_expires_and_is_taken_over(
    store_url: StoreUrl, store_clock: StoreClock
) -> None:
    async def scenario() -> None:
        async with store_url.open(store_clock) as stores:
            store = stores.idempotency
            first = await store.claim("r", "fp", lease_s=0.2, ttl_s=60)
            assert first.state == "owner" and first.token
            assert (await store.claim("r", "fp", 0.2, 60)).state == "running"
            assert (await store.claim("r", "other", 0.2, 60)).state == "mismatch"
            assert await store.renew("r", first.token, 0.2)
            await store_clock.advance(0.3)  # the owner stopped renewing
            second = await store.claim("r", "fp", 0.2, 60)
            assert second.state == "owner" and second.token != first.token
            assert not await store.renew("r", first.token, 0.2)
            late = Stored(200, [("content-type", "text/plain")], b"late")
            await store.finish("r", first.token, late, 60)  # the old owner's answer is ignored
            assert (await store.claim("r", "fp", 0.2, 60)).state == "running"
            assert second.token is not None
            answer = Stored(201, [("content-type", "text/plain")], b"\x00\xffbytes", "rt", "m")
            await store.finish("r", second.token, answer, 60)
            done = await store.claim("r", "fp", 0.2, 60)
            assert done.state == "done" and done.stored == answer

    asyncio.run(scenario())


def test_records_expire_and_released_claims_free_the_key(
    store_url: StoreUrl, store_clock: StoreClock
) -> None:
    async def scenario() -> None:
        async with store_url.open(store_clock) as stores:
            store = stores.idempotency
            claim = await store.claim("t", "fp", lease_s=5, ttl_s=0.3)
            assert claim.token is not None
            await store.finish("t", claim.token, Stored(200, [], b"x"), ttl_s=0.3)
            assert (await store.claim("t", "fp", 5, 0.3)).state == "done"
            await store_clock.advance(0.4)
            assert (await store.claim("t", "other", 5, 60)).state == "owner"
            claim = await store.claim("u", "fp", 5, 60)
            assert claim.token is not None
            await store.release("u", claim.token)
            assert (await store.claim("u", "other", 5, 60)).state == "owner"

    asyncio.run(scenario())


def test_a_takeover_after_the_paid_call_was_sent_is_refused(
    store_url: StoreUrl, store_clock: StoreClock
) -> None:
    async def scenario() -> None:
        async with store_url.open(store_clock) as stores:
            store = stores.idempotency
            first = await store.claim("s", "fp", lease_s=0.2, ttl_s=60)
            assert first.token is not None
            await store.mark_sent("s", first.token)
            assert (await store.claim("s", "fp", 0.2, 60)).state == "running"
            await store_clock.advance(0.3)  # the owner crashed after sending
            assert (await store.claim("s", "fp", 0.2, 60)).state == "unknown"
            assert (await store.claim("s", "fp", 0.2, 60)).state == "unknown"  # every repeat
            assert (await store.claim("s", "other", 0.2, 60)).state == "mismatch"

    asyncio.run(scenario())


def test_a_repeat_after_the_owner_was_killed_mid_call_is_a_409_not_a_second_charge(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path, job_store: dict[str, str]
) -> None:
    # Issue 14, item 3: the process holding the key's lease dies while its paid call is at the
    # upstream. The repeat waited ~30 s, took over and paid again.
    env = clean_env(
        job_store,
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_API_KEYS=f"team-a:{CLIENT_KEY}",
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_IDEMPOTENCY_LEASE_S="1",
    )
    body = {"model": "gpt-image-2-web", "prompt": "[sim:sleep=20] paid once"}
    headers = {"Idempotency-Key": "crash-1", "Authorization": f"Bearer {CLIENT_KEY}"}
    with serving(["serve"], env, tmp_path) as first:

        def doomed() -> None:
            with contextlib.suppress(httpx2.HTTPError):
                httpx2.post(
                    f"{first.url}/v1/images/generations", json=body, headers=headers, timeout=30
                )

        caller = threading.Thread(target=doomed)
        caller.start()
        deadline = time.monotonic() + 10
        while not sim.sent("/v1/chat/completions") and not sim.sent("/v1/images/generations"):
            assert time.monotonic() < deadline, "the paid call never reached the upstream"
            time.sleep(0.05)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        caller.join(timeout=30)
    calls = len(sim.sent())
    second = make_gateway(idempotency_lease_s=1, **job_store)
    started = time.monotonic()
    with second.http() as http:
        repeat = http.post("/v1/images/generations", json=body, headers=headers)
    assert repeat.status_code == 409, repeat.text
    assert repeat.json()["error"]["code"] == "idempotency_outcome_unknown"
    assert repeat.headers["x-should-retry"] == "false"
    assert time.monotonic() - started < 5  # the lease (1 s), not a 30 s wait
    assert len(sim.sent()) == calls  # nothing paid twice

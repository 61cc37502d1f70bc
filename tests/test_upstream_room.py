"""The room for upstream answers (issue 24): what all requests together may hold of upstream
answers at once (MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES, mediagate/upstream/room.py), seen from
outside: honest large answers from the simulator (`[sim:padded=MB]`, their bodies held back
by `[sim:holdbody=LABEL]` until the test lets them go), the room read from /metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediagate.upstream.room import AnswerRoom, NeverFits, NoRoom

from .conftest import Gateway, Sim, wait_until

MIB = 1024 * 1024
MODEL = "gpt-image-2"  # the official route: OpenAI's images answer, as the simulator pads it


def room(gateway: Gateway) -> dict[str, float]:
    """The room as /metrics shows it: bytes held, answers waiting, and the outcomes."""
    with gateway.http() as http:
        text = http.get("/metrics").text
    seen: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mediagate_upstream_answer_bytes":
                seen["held"] = sample.value
            elif sample.name == "mediagate_upstream_answers_waiting":
                seen["waiting"] = sample.value
            elif sample.name == "mediagate_upstream_answer_room_total":
                seen[sample.labels["outcome"]] = sample.value
    return seen


def later(
    pool: concurrent.futures.Executor, call: Callable[[], httpx2.Response]
) -> Callable[[], httpx2.Response]:
    future = pool.submit(call)
    return lambda: future.result(timeout=60)


def holding_3_mib(
    pool: concurrent.futures.Executor, gateway: Gateway
) -> Callable[[], httpx2.Response]:
    """A first answer of 3 MiB whose body the simulator holds back ("a"), once its room is
    taken (by its Content-Length, before a byte of its body is read)."""
    first = later(pool, lambda: gateway.generate("a [sim:padded=3][sim:holdbody=a]", MODEL))
    wait_until(lambda: room(gateway).get("held") == 3 * MIB, timeout_s=20)
    return first


def test_answers_wait_for_room_and_the_total_held_stays_within_it(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    budget = 5 * MIB
    gateway = make_gateway(max_inflight_upstream_bytes=budget, upstream_room_wait_s=120)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = holding_3_mib(pool, gateway)
        second = later(pool, lambda: gateway.generate("b [sim:padded=3][sim:holdbody=b]", MODEL))
        sim.state.faults.release("b")  # its body is there: the gateway does not read it
        wait_until(lambda: room(gateway).get("waiting") == 1, timeout_s=20)
        seen = room(gateway)
        assert seen["held"] == 3 * MIB <= budget
        sim.state.faults.release("a")
        # The first request ends, its room is given back, and the second is read: both paid
        # answers reach their clients.
        assert first().status_code == 200
        answer = second()
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"][0]["b64_json"]
    wait_until(lambda: room(gateway).get("held") == 0)
    seen = room(gateway)
    assert (seen["waiting"], seen["waited"], seen["timed_out"]) == (0, 1, 0)


def test_an_answer_with_no_room_in_time_is_a_503_the_sdk_is_told_not_to_retry(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    # A wait of 0: no room now is no room (a longer wait ends the same way at its deadline).
    gateway = make_gateway(max_inflight_upstream_bytes=5 * MIB, upstream_room_wait_s=0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = holding_3_mib(pool, gateway)
        refused = gateway.generate("b [sim:padded=3]", MODEL)
        sim.state.faults.release("a")
        assert first().status_code == 200
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "server_overloaded"
    assert "MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES" in error["message"]
    # A paid call the upstream answered: it may have been charged, so no retry, no fallback.
    assert refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers
    assert len([c for c in sim.sent() if c.path == "/v1/images/generations"]) == 2
    wait_until(lambda: room(gateway).get("held") == 0)
    assert room(gateway)["timed_out"] == 1


def test_an_answer_larger_than_the_whole_room_is_refused_at_once(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(max_inflight_upstream_bytes=2 * MIB, upstream_room_wait_s=120)
    refused = gateway.generate("a [sim:padded=3]", MODEL)
    assert refused.status_code == 502, refused.text
    assert refused.json()["error"]["code"] == "upstream_response_too_large"
    assert refused.headers["x-should-retry"] == "false"
    seen = room(gateway)
    assert (seen["held"], seen["too_large"], seen["waited"]) == (0, 1, 0)
    # An answer that fits is read as usual.
    assert gateway.generate("b [sim:padded=1]", MODEL).status_code == 200


def test_an_answer_without_a_length_takes_its_room_as_it_is_read(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    budget = 5 * MIB
    gateway = make_gateway(max_inflight_upstream_bytes=budget, upstream_room_wait_s=120)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = holding_3_mib(pool, gateway)
        # Chunked, 3 MiB: read until the room is full, then it waits with what it has.
        second = later(pool, lambda: gateway.generate("b [sim:padded=3][sim:chunked]", MODEL))
        wait_until(lambda: room(gateway).get("waiting") == 1, timeout_s=20)
        seen = room(gateway)
        assert 3 * MIB < seen["held"] <= budget
        sim.state.faults.release("a")
        assert first().status_code == 200
        assert second().status_code == 200
    wait_until(lambda: room(gateway).get("held") == 0)


# The room itself, on its own loop: the order of waits and what can never fit.


def test_a_request_never_waits_for_room_it_holds_itself() -> None:
    async def main() -> None:
        answers = AnswerRoom(10, 60)
        mine, other = answers.claim(), answers.claim()
        await mine.take(6)
        # 6 + 6 > 10 even if every other request gave all back: refused, never waited for.
        with pytest.raises(NeverFits):
            await mine.take(6)
        await other.take(4)
        assert answers.held == 10
        mine.release()
        assert answers.held == 4 and mine.closed

    asyncio.run(main())


def test_a_holder_goes_before_those_that_hold_nothing_and_a_wait_ends() -> None:
    async def main() -> None:
        answers = AnswerRoom(10, 60)
        a, b, c = answers.claim(), answers.claim(), answers.claim()
        await a.take(8)
        await b.take(1)
        fresh = asyncio.ensure_future(c.take(2))  # holds nothing: waits first
        await asyncio.sleep(0)
        holder = asyncio.ensure_future(b.take(2))  # holds 1: goes before it
        await asyncio.sleep(0)
        assert answers.waiting == 2
        a.give_back(2)  # room for one of them: the holder's
        await holder
        assert (b.held, c.held, fresh.done()) == (3, 0, False)
        a.give_back(6)
        await fresh
        assert (b.held, c.held, answers.held) == (3, 2, 5)
        # A wait given up (its client left) leaves the queue, and those behind it move up.
        await c.take(5)
        big = asyncio.ensure_future(a.take(4))
        small = asyncio.ensure_future(a.take(1))
        await asyncio.sleep(0)
        c.give_back(2)
        assert answers.waiting == 2  # the small one waits behind the big one: not overtaken
        big.cancel()
        await small
        assert answers.held == 9 and answers.waiting == 0
        # Without a wait (MEDIAGATE_UPSTREAM_ROOM_WAIT_S=0), no room now is no room.
        answers.wait_s = 0
        with pytest.raises(NoRoom):
            await b.take(2)

    asyncio.run(main())

"""Relayed image streams as the SSE spec frames them, and an upstream that ignores `stream`
(issue 14, items 13 and 14)."""

from __future__ import annotations

import time

import openai
import pytest

from mediagate.images.streaming import EventParser

from .conftest import Gateway, Sim


@pytest.mark.parametrize("framing", ["[sim:crlf]", "[sim:cr]"])
def test_relayed_events_split_at_crlf_or_ended_by_bare_cr_are_counted_and_billed(
    client: openai.OpenAI, gateway: Gateway, framing: str
) -> None:
    # [sim:crlf]: every CR ends a chunk and its LF starts the next; [sim:cr]: bare CRs.
    events = list(
        client.images.generate(
            model="gpt-image-2",
            prompt=f"s {framing}",
            n=2,
            quality="low",
            size="1024x1024",
            stream=True,
            partial_images=1,
        )
    )
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ] * 2
    with gateway.http() as http:
        totals = http.get("/v1/usage").json()["totals"]
    # Both completed events booked: 2 x (prompt tokens x 5 + 272 x 30) per million.
    assert totals["images"] == 2 and totals["cost_usd"] > 0.016


def test_the_event_parser_is_linear_in_a_multi_megabyte_event() -> None:
    parser = EventParser()
    chunk = b"A" * 4096
    started = time.perf_counter()
    assert parser.feed(b"event: big\r") == []
    assert parser.feed(b"\ndata: ") == []
    for _ in range(2048):  # 8 MB of one data line, in 4 KB chunks
        assert parser.feed(chunk) == []
    (event,) = parser.feed(b"\r\n\r\n")
    assert time.perf_counter() - started < 2.0  # a re-split per chunk takes minutes
    assert event.startswith(b"event: big\ndata: AAAA") and event.endswith(b"A\n\n")
    assert len(event) == len(b"event: big\ndata: \n\n") + 4096 * 2048
    assert not parser.pending


def test_the_event_parser_follows_the_sse_line_rules() -> None:
    parser = EventParser()
    stream = b"event: a\rdata: 1\r\revent: b\r\ndata: 2\r\n\r\n: comment\n\nevent: c\ndata: 3\n\n"
    events = [e for i in range(len(stream)) for e in parser.feed(stream[i : i + 1])]
    assert events == [
        b"event: a\ndata: 1\n\n",
        b"event: b\ndata: 2\n\n",
        b": comment\n\n",
        b"event: c\ndata: 3\n\n",
    ]


def test_an_upstream_answering_json_to_a_stream_gets_emulated_events(
    client: openai.OpenAI, gateway: Gateway, sim: Sim
) -> None:
    events = list(
        client.images.generate(
            model="gpt-image-2",
            prompt="s [sim:nostream]",
            quality="low",
            size="1024x1024",
            stream=True,
        )
    )
    assert [e.type for e in events] == ["image_generation.completed"]
    assert events[0].b64_json and events[0].usage is not None
    (call,) = sim.sent()
    assert call.body["stream"] is True
    with gateway.http() as http:
        totals = http.get("/v1/usage").json()["totals"]
    assert totals["images"] == 1 and totals["cost_usd"] > 0

"""Upstream text reaches nobody unscrubbed: an error's message, code, param and type, a video's
failure reason, a relayed header, the access log. Keys and the upstream's internal addresses are
removed; a code that is not a plain token becomes the gateway's `upstream_rejected`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mediagate.errors import Scrubber
from mediagate.observability.logs import JsonFormatter, RequestFields

from .conftest import GROUP_KEYS, Gateway, Sim, fast_video_polls

# What the simulator's `[sim:leakyerror]` puts in its errors besides the key.
INTERNAL = ("10.1.2.3", "http://", "fd00::7", "192.168.0.7", "Bearer sk")


def assert_clean(text: str) -> None:
    for key in GROUP_KEYS.values():
        assert key not in text
    for address in INTERNAL:
        assert address not in text, (address, text)


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The gateway's log lines as written, before the formatter's own net of key scrubbing."""
    caplog.set_level(logging.INFO, logger="mediagate")
    stamp = RequestFields()
    caplog.handler.addFilter(stamp)
    formatter = JsonFormatter()
    yield lambda: [json.loads(formatter.format(r)) for r in caplog.records]
    caplog.handler.removeFilter(stamp)


def test_an_upstream_error_echoing_its_key_and_addresses(
    gateway: Gateway, sim: Sim, records: Callable[[], list[dict[str, Any]]]
) -> None:
    for model in ("gpt-image-2", "gpt-image-2-web"):
        response = gateway.generate("a fox [sim:leakyerror]", model=model)
        assert response.status_code == 400, response.text
        assert sim.sent()[-1].status == 400  # the upstream's own refusal, relayed
        error = response.json()["error"]
        assert error["code"] == "upstream_rejected"  # "Bearer sk-..." is not a code
        assert error["param"] is None  # nor a parameter's name
        assert error["type"] == "invalid_request_error"
        assert "failed for" in error["message"] and "[internal address]" in error["message"]
        assert_clean(response.text)
    lines = [r for r in records() if r.get("error")]
    assert lines, "the access log has the errors"
    assert_clean(json.dumps(records()))


def test_a_plain_upstream_code_is_still_relayed(gateway: Gateway) -> None:
    response = gateway.generate("a fox [sim:refuse]", model="gpt-image-2")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "moderation_blocked"


@pytest.mark.parametrize("model", ["seedance-2.0", "wan2.7-t2v"])
def test_a_video_failure_reason_echoing_its_key_and_addresses(
    make_gateway: Callable[..., Gateway], tmp_path: Path, model: str
) -> None:
    from .test_videos import stored

    gateway = make_gateway(config=fast_video_polls(tmp_path / "polls.yaml"))
    video = gateway.sdk().videos.create_and_poll(model=model, prompt="p [sim:leakyerror]")
    assert video.status == "failed" and video.error is not None
    assert video.error.code == "video_generation_failed"
    assert "failed for" in video.error.message
    assert_clean(video.model_dump_json())
    job = stored(gateway, video.id)
    assert_clean(json.dumps(job.error))  # the store never saw it either
    with gateway.http() as http:
        assert_clean(http.get(f"/v1/videos/{video.id}").text)


def test_the_rule_for_addresses_in_upstream_text() -> None:
    scrub = Scrubber(["sk-abc123"], upstream_host="api.upstream.example")
    text = scrub.upstream(
        "at http://10.1.2.3:8080/internal, https://api.upstream.example/docs, "
        "https://other.example/x, 0x7f.0.0.1, 012.0.0.1, [::1]:80, fe80::1%eth0, "
        "::ffff:10.0.0.1, redis.svc.cluster.local:6379, localhost:8080, Bearer sk-abc123; "
        "kept: 16:9, 12:30:45, version 1.2.3, 1024x1024"
    )
    assert text == (
        "at [internal address], https://api.upstream.example/docs, [internal address], "
        "[internal address], [internal address], [internal address]:80, [internal address], "
        "[internal address], [internal address], [internal address], Bearer [redacted]; "
        "kept: 16:9, 12:30:45, version 1.2.3, 1024x1024"
    )
    # An upstream on a private address or a loopback name vouches for no link.
    assert (
        Scrubber(upstream_host="127.0.0.1").upstream("http://127.0.0.1/x") == "[internal address]"
    )
    assert scrub.upstream_code("Bearer sk-abc123", "upstream_rejected") == "upstream_rejected"
    assert scrub.upstream_code("sk-abc123", "upstream_rejected") == "upstream_rejected"
    assert scrub.upstream_code("moderation_blocked", "upstream_rejected") == "moderation_blocked"
    assert scrub.upstream_code("x" * 65, "upstream_rejected") == "upstream_rejected"
    assert scrub.upstream_param("input.media[0].url") == "input.media[0].url"
    assert scrub.upstream_param("Bearer sk-abc123") is None

"""What an operator reads: correlated JSON logs (uvicorn's too), scrubbed tracebacks, the
process' own metrics, and plain answers for what mediagate does not offer."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediagate.observability.logs import JsonFormatter, RequestFields
from mediagate.simulator.png import make_png

from .conftest import CLIENT_KEY, GROUP_KEYS, Gateway, Sim
from .processes import serving
from .test_tracing import gateway_env

# --- Logs ---------------------------------------------------------------------------------------


def test_logs_are_json_lines_correlated_by_request_id(sim: Sim, tmp_path: Path) -> None:
    env = gateway_env(sim, tmp_path, MEDIAGATE_LOG_LEVEL="info")
    burst = f"[sim:burst503=1:logs{uuid.uuid4().hex[:8]}]"
    with (
        serving(["serve"], env, tmp_path) as gateway,
        httpx2.Client(base_url=gateway.url, timeout=60) as http,
    ):
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        body = {"model": "gpt-image-2", "prompt": f"a fox {burst}"}
        # The load balancer's id is kept and echoed beside ours (which alone keys records)...
        answer = http.post(
            "/v1/images/generations", json=body, headers={**auth, "X-Request-ID": "lb-42.a"}
        )
        assert answer.status_code == 200 and answer.headers["x-client-request-id"] == "lb-42.a"
        assert answer.headers["x-request-id"].startswith("req_")
        # ...one that is not a sane id (too long, odd characters) is not.
        for bad in ("x" * 129, "two words", "tab\there", "<script>"):
            refused = http.get("/v1/models", headers={**auth, "X-Request-ID": bad})
            assert refused.headers["x-request-id"].startswith("req_"), bad
            assert "x-client-request-id" not in refused.headers
        assert http.get("/v1/models", headers=auth).headers["x-request-id"].startswith("req_")
    lines = gateway.output()
    # Every line is one JSON object: uvicorn's own lines included.
    records = [json.loads(line) for line in lines]
    assert {"uvicorn.error", "mediagate", "mediagate.access"} <= {r["logger"] for r in records}
    assert any("Uvicorn running on" in r["msg"] for r in records)
    # Every line written during the request carries its id: the retry's, not only the access line.
    mine = [r for r in records if r.get("client_request_id") == "lb-42.a"]
    assert [r["msg"] for r in mine] == ["retrying upstream call", "request"]
    assert mine[0]["route"] == "gpt-image-2.official" and mine[1]["status"] == 200
    # Lines outside a request carry none.
    startup = [r for r in records if r["logger"] == "uvicorn.error"]
    assert startup and not [r for r in startup if "request_id" in r]
    text = "\n".join(lines)
    for secret in [CLIENT_KEY, *GROUP_KEYS.values(), "two words", "<script>"]:
        assert secret not in text


class Exploding(httpx2.AsyncBaseTransport):
    """An upstream transport that fails the way a bug would: not an HTTP error, and with the
    upstream key in its message (as a careless library might put it there)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError(f"transport exploded with {request.headers['authorization']}")


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The gateway's log lines of this test as the JSON formatter writes them."""
    caplog.set_level(logging.INFO, logger="mediagate")
    stamp = RequestFields()
    caplog.handler.addFilter(stamp)
    formatter = JsonFormatter()
    yield lambda: [json.loads(formatter.format(r)) for r in caplog.records]
    caplog.handler.removeFilter(stamp)


def test_an_unhandled_error_logs_its_scrubbed_traceback(
    make_gateway: Callable[..., Gateway], records: Callable[[], list[dict[str, Any]]]
) -> None:
    gateway = make_gateway(transport=Exploding())
    with gateway.http() as http:
        answer = http.post("/v1/videos", json={"model": "sora-2", "prompt": "a heron"})
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"]["code"] == "internal_error"
    assert "exploded" not in answer.text  # the client gets no internals
    request_id = answer.headers["x-request-id"]
    [error] = [r for r in records() if r["msg"] == "unhandled error"]
    assert error["request_id"] == request_id
    assert error["traceback"].startswith("Traceback (most recent call last)")
    assert "RuntimeError: transport exploded with Bearer [redacted]" in error["traceback"]
    assert "handle_async_request" in error["traceback"]  # where it happened
    assert GROUP_KEYS["default"] not in json.dumps(records())


# --- Process metrics ------------------------------------------------------------------------------


def test_metrics_include_the_process_families(gateway: Gateway) -> None:
    with gateway.http(api_key=None) as http:
        text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "python_gc_objects_collected",
        "python_gc_collections",
        "python_info",
    ):
        assert name in families, name
    assert families["process_resident_memory_bytes"].samples[0].value > 10 * 1024 * 1024
    generations = {s.labels["generation"] for s in families["python_gc_collections"].samples}
    assert generations == {"0", "1", "2"}
    assert "mediagate_requests" in families  # next to the gateway's own


# --- What is not offered ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's, for create_variation
def test_an_openai_endpoint_not_offered_is_a_404_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.create_variation(
            image=("fox.png", io.BytesIO(make_png(8, 8, "fox")), "image/png")
        )
    assert caught.value.code == "unsupported_endpoint"
    assert "POST /v1/images/variations" in caught.value.message
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert caught.value.code == "unsupported_endpoint"
    assert "POST /v1/embeddings" in caught.value.message


def test_unknown_paths_and_wrong_methods_answer_openai_errors(gateway: Gateway) -> None:
    with gateway.http(api_key=None) as http:
        for method, path in [("GET", "/v1/nothing/here"), ("GET", "/"), ("DELETE", "/v2/x")]:
            answer = http.request(method, path)
            assert answer.status_code == 404
            error = answer.json()["error"]
            assert error["code"] == "unsupported_endpoint"
            assert f"{method} {path}" in error["message"]
            assert answer.headers["x-request-id"]
        answer = http.get("/v1/images/generations")
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST"
        error = answer.json()["error"]
        assert error["code"] == "method_not_allowed"
        assert error["type"] == "invalid_request_error"
        assert "GET /v1/images/generations" in error["message"] and "POST" in error["message"]
        # A long path is quoted only in part.
        answer = http.get("/v1/" + "a" * 5000)
        assert answer.status_code == 404 and len(answer.json()["error"]["message"]) < 400


def test_request_ids_are_random_and_never_repeated_even_across_a_fork() -> None:
    """Request ids are read from the OS's CSPRNG in blocks: each is 128 bits, none is handed
    out twice, and a forked child (a worker process) reads a block of its own rather than the
    rest of its parent's."""
    import os
    import re

    from mediagate.context import new_request_id

    ids = [new_request_id() for _ in range(1000)]  # several blocks
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != new_request_id()  # the parent's next one

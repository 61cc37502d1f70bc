"""Schemathesis against a live gateway, from the gateway's own OpenAPI document (issue 24).

A real gateway on the simulated upstream serves its document at /v1/openapi.json; schemathesis
loads it over HTTP and sends requests generated from it to every operation: schema-valid ones
(positive) and schema-violating ones (negative), with a valid client key (the admin key on the
admin view). Every answer is checked:

- `not_a_server_error`: no 5xx at all (the simulator is healthy here, so a 502/503/504 would
  be a gateway bug too, and a 500 always is);
- the status is one the document lists for the operation, the content type one it lists, the
  documented headers as documented, the body valid against the response schema;
- a negative JSON or query case is refused with a 4xx (`negative_data_rejection`). Not a
  multipart one: every multipart value is text or a file, so most of schemathesis's negations
  (a number for a string, a file for an array of files) arrive as valid fields, and it then
  reports a valid request accepted;
- the 405 and `Allow` of a method the path does not take, a missing required header, and the
  same request without its key (`unsupported_method`, `allow_header_conformance`,
  `missing_required_header`, `ignored_auth`: they send a request of their own).

Not checked: `positive_data_acceptance`. Whether a schema-valid request is served depends on
the model's route (its sizes, qualities, options, prompt length) and on rules across fields
(`output_compression` only with jpeg or webp), which the document states in prose; such a
request is a documented 400.

Video ids are the gateway's random ones, so the cases of the video operations also draw ids of
videos made before the run (a completed Muse and Seedance video each), and the hosted-image
and model operations names that exist; the file and batch operations draw a batch input file
of the key's and a batch still in progress (its video line rendering), and a batch create's
`input_file_id`, when generated as a string, is that file's. Links in bodies
(`input_reference.image_url`, `last_frame`) are pointed at the simulator on loopback, keeping
the generated path and query, so no case resolves a name on the network.

Deterministic: hypothesis is derandomized (the same cases each run) and keeps no database; the
answers may differ by a few between runs with the gateway's state (how far a video got, which
request first used an Idempotency-Key), never in kind.

How many cases: MEDIAGATE_SCHEMATHESIS_CASES is the budget (default 800: about 600 requests,
20 seconds), spread evenly over the operations and both kinds; an operation with few distinct
requests (a list without parameters) sends fewer, as hypothesis sends each case once. The long
run (docs/operations.md), at least 4,000 requests:

    MEDIAGATE_SCHEMATHESIS_CASES=6000 \
        .venv/bin/pytest -q -s -o timeout=900 tests/test_schemathesis.py

It prints the requests sent, the answers by status (overall and per operation), the 5xx and the
time taken.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks

from .conftest import CLIENT_KEY, Gateway, Sim, fast_video_polls

CASES = int(os.environ.get("MEDIAGATE_SCHEMATHESIS_CASES", "800"))
ADMIN_KEY = "sk-admin-schemathesis-0123456789"
CHECKS = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.missing_required_header,
    checks.ignored_auth,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
_LINK = re.compile(r"^https?://[^/?#]*", re.IGNORECASE)


def _on_loopback(value: Any, base: str) -> Any:
    """`value` with the scheme and host of every http(s) link in it replaced by `base`."""
    if isinstance(value, str):
        return _LINK.sub(base, value) if _LINK.match(value) else value
    if isinstance(value, dict):
        return {k: _on_loopback(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_on_loopback(v, base) for v in value]
    return value


def _known_values(gateway: Gateway) -> dict[str, list[str]]:
    """Path parameter values that exist: videos (completed), a hosted image, models."""
    sdk = gateway.sdk()
    # Both can be remixed: a 5 s muse-video continues to 8 s, a Seedance clip is edited.
    videos = [
        sdk.videos.create_and_poll(model=model, prompt="waves", seconds="5", poll_interval_ms=20)
        for model in ("muse-video", "seedance-2.0")
    ]
    assert all(video.status == "completed" for video in videos)
    image = sdk.images.generate(model="gpt-image-2-web", prompt="a fox", response_format="url")
    assert image.data and image.data[0].url
    line = {"custom_id": "a", "method": "POST", "url": "/v1/images/generations"}
    images = line | {"body": {"model": "gpt-image-2-web", "prompt": "a fox"}}
    videos_line = line | {"url": "/v1/videos", "body": {"prompt": "a slow sea [sim:render=600]"}}
    source, slow = (
        sdk.files.create(file=("in.jsonl", json.dumps(each).encode()), purpose="batch")
        for each in (images, videos_line)
    )
    running = sdk.batches.create(
        input_file_id=slow.id, endpoint="/v1/videos", completion_window="24h"
    )
    assert running.status == "in_progress"
    return {
        "video_id": [video.id for video in videos],
        "name": [image.data[0].url.rsplit("/", 1)[1]],
        "model": ["gpt-image-2", "muse-video", "gpt-image-1"],
        "file_id": [source.id],
        "batch_id": [running.id],
        "input_file_id": [source.id],
    }


class Run:
    """The run's tally: answers by operation and status, and the failures, one per kind."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[tuple[str, int]] = collections.Counter()
        self.failures: dict[tuple[str, str], str] = {}
        self.sent = 0

    def record(self, case: Case, status: int, failure: BaseException | None) -> None:
        self.sent += 1
        self.statuses[(case.operation.label, status)] += 1
        for each in getattr(failure, "exceptions", [failure] if failure else []):
            key = (case.operation.label, getattr(each, "title", type(each).__name__))
            if key not in self.failures:
                curl = case.as_curl_command(headers={"Authorization": "Bearer [key]"})
                self.failures[key] = f"{each}\n{curl[:2000]}"

    def by_status(self) -> dict[int, int]:
        counts: collections.Counter[int] = collections.Counter()
        for (_, status), count in self.statuses.items():
            counts[status] += count
        return dict(sorted(counts.items()))


def _strategy(operation: Any, mode: GenerationMode, known: dict[str, list[str]]) -> Any:
    """The operation's cases, half of them (where it has one) with a path parameter that
    exists."""
    generated = operation.as_strategy(generation_mode=mode)
    names = [p.name for p in operation.path_parameters]
    existing = [
        operation.as_strategy(generation_mode=mode, path_parameters={name: value})
        for name in names
        for value in known.get(name, [])
    ]
    return st.one_of(generated, *existing) if existing else generated


def _exercise(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    send: Callable[[Case], None],
    known: dict[str, list[str]],
) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],  # failures are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode, known))
    def each(case: Case) -> None:
        send(case)

    try:
        each()
    except hypothesis.errors.Unsatisfiable:
        # No schema-violating request exists (a public GET with one string parameter).
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_no_5xx_and_answers_as_documented(
    make_gateway: Callable[..., Gateway], sim: Sim, tmp_path: Path
) -> None:
    gateway = make_gateway(
        # Reads unlimited: the run polls more than a client key's default 600 a minute.
        reads_per_minute=0,
        admin_key=ADMIN_KEY,
        video_poll_after_ms=20,
        config=fast_video_polls(tmp_path / "fast-polls.yaml"),
    )
    started = time.monotonic()
    known = _known_values(gateway)
    schema = schemathesis.openapi.from_url(f"{gateway.url}/v1/openapi.json", timeout=30)
    # The key is not a generated parameter: the cases go to validation rather than a third of
    # them to a 401, and `ignored_auth` checks the key is enforced (it resends a served case
    # without a key and with a wrong one).
    schema.config.generation.update(with_security_parameters=False)
    # Schemathesis leaves out the operation that served the document unless asked for it.
    document = schema.include(operation_id="getOpenAPIDocument")
    operations = [r.ok() for s in (schema, document) for r in s.get_all_operations()]
    # The deletes last, so the other operations find the known videos.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    examples = max(1, math.ceil(CASES / (len(operations) * len(MODES))))
    run = Run()

    def send(case: Case) -> None:
        key = ADMIN_KEY if case.operation.path == "/admin/usage" else CLIENT_KEY
        # A case that leaves the key out (or spoils it) on purpose is sent as generated.
        negated = schema.is_security_param_negated(case)
        headers = {} if negated else {"Authorization": f"Bearer {key}"}
        if case.body is not None:
            case.body = _on_loopback(case.body, sim.url)
        if isinstance(case.body, dict) and isinstance(case.body.get("input_file_id"), str):
            case.body["input_file_id"] = known["input_file_id"][0]
        response = case.call(headers=headers, timeout=60)
        failure: BaseException | None = None
        multipart = (case.media_type or "").startswith("multipart/")
        wanted = [c for c in CHECKS if not (multipart and c is checks.negative_data_rejection)]
        try:
            case.validate_response(response, checks=wanted, headers=headers)
        except (AssertionError, BaseExceptionGroup) as exc:
            failure = exc
        run.record(case, response.status_code, failure)

    for operation in operations:
        for mode in MODES:
            _exercise(operation, mode, examples, send, known)

    took = time.monotonic() - started
    server_errors = sum(n for status, n in run.by_status().items() if status >= 500)
    print(
        f"\nschemathesis: {run.sent} cases over {len(operations)} operations in {took:.1f} s; "
        f"answers by status {run.by_status()}; 5xx: {server_errors}"
    )
    for (label, status), count in sorted(run.statuses.items()):
        print(f"  {label}: {status} x{count}")
    assert not run.failures, "\n\n".join(
        f"{label}: {title}\n{detail}" for (label, title), detail in run.failures.items()
    )
    assert server_errors == 0
    # Every operation answered, and not only with refusals: each was reached and served.
    answered = {label for label, _ in run.statuses}
    assert answered == {operation.label for operation in operations}
    served = {label for (label, status) in run.statuses if status < 300}
    assert served == answered, f"never served: {answered - served}"

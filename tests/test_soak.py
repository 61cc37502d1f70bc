"""Soak: a few hundred mixed requests at concurrency 50 against a faulty upstream.

The gateway runs as its own process (so its memory can be measured) against the simulator in
this process, which fails a quarter of the paid calls in every way it knows. Clients use an
Idempotency-Key per request and retry it as the OpenAI SDK would; some send the same request
twice at once, some repeat it afterwards. Checked: every request ends in success or a correct
OpenAI error, no key was paid for twice upstream, replays are byte-identical, memory settles,
and the gateway is healthy afterwards. Bounded: loopback only, stops by itself.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mediagate.servethread import BackgroundServer
from mediagate.simulator import DEFAULT_SIM_KEYS, SimConfig, SimState, create_simulator_app
from mediagate.simulator.faults import KINDS

from .conftest import Sim
from .processes import clean_env, serving
from .resilience import catalog
from .test_edits import PNG_SMALL

pytestmark = pytest.mark.timeout(240)

# A longer run by hand: MEDIAGATE_SOAK_ROUNDS=10 pytest tests/test_soak.py -s
ROUNDS = int(os.environ.get("MEDIAGATE_SOAK_ROUNDS", "4"))
PER_ROUND, CONCURRENCY = 125, 50
KEYS = {group: key for key, group in DEFAULT_SIM_KEYS.items()}
CLIENTS = {"team-a": "sk-soak-a", "team-b": "sk-soak-b"}
PAID_PATHS = ("/v1/images/generations", "/v1/images/edits", "/v1/chat/completions", "/v1/videos")
# What an error may say, and with which status.
EXPECTED_ERRORS = {
    "upstream_error": 502,
    "upstream_unreachable": 502,
    "upstream_connection_lost": 502,
    "bad_upstream_response": 502,
    "upstream_response_too_large": 502,
    "upstream_timeout": 504,
    "rate_limit_exceeded": 429,
    "route_unavailable": 503,
}
# Failures after which the upstream may have charged: kept as the key's answer.
KEPT_ERRORS = {
    "upstream_connection_lost",
    "bad_upstream_response",
    "upstream_response_too_large",
    "upstream_timeout",
}
GENERATION_MODELS = ["gpt-image-2-web", "gpt-image-2.6-sunburst", "sora_image", "gpt-image-2"]


@dataclass
class Outcome:
    kind: str
    token: str
    client: str
    status: int = 0
    code: str | None = None
    body: bytes = b""
    tries: int = 0
    problems: list[str] = field(default_factory=list)


@pytest.fixture
def soak_sim() -> Iterator[Sim]:
    state = SimState()
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS), latency_s=0.05), state)
    with BackgroundServer(app) as server:
        yield Sim(server.url, server.port, state)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def soak_gateway(soak_sim: Sim, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    routes = {
        rid: {"timeouts": {"total": 1.5}, "breaker": {"failures": 5, "cooldown_s": 1}}
        for rid in (
            "gpt-image-2.6-sunburst.official",
            "gpt-image-2.official",
            "gpt-image-2.enterprise",
        )
    }
    for rid in ("gpt-image-2.web", "sora_image", "muse-video"):
        routes[rid] = {"timeouts": {"total": 1.5}, "breaker": {"failures": 5, "cooldown_s": 1}}
    routes["muse-video"]["video"] = {"poll_interval_s": 0.05}  # Muse's own 15 s is too slow
    env = clean_env(
        MEDIAGATE_UPSTREAM_URL=f"{soak_sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=KEYS["default"],
        MEDIAGATE_KEY_OPENAIOFFICIAL=KEYS["OpenAI Official"],
        MEDIAGATE_KEY_OPENAIOFFICIALENTERPRISE=KEYS["OpenAI Official Enterprise"],
        MEDIAGATE_API_KEYS=",".join(f"{n}:{k}" for n, k in CLIENTS.items()),
        MEDIAGATE_FETCH_ALLOW_HOSTS=f"127.0.0.1:{soak_sim.port}",
        MEDIAGATE_DATA_DIR=str(tmp_path / "data"),
        MEDIAGATE_CONFIG=str(catalog(tmp_path, routes)),
        MEDIAGATE_UPSTREAM_MAX_BYTES=str(2 * 1024 * 1024),
        MEDIAGATE_IDEMPOTENCY_WAIT_S="20",
        MEDIAGATE_LOG_LEVEL="warning",
    )
    with serving(["serve"], env, tmp_path) as gateway:
        yield gateway.url, gateway.proc


def _sdk_would_retry(response: httpx2.Response) -> bool:
    """The OpenAI SDK's rule (openai/_base_client.py, _should_retry)."""
    flag = response.headers.get("x-should-retry")
    if flag in ("true", "false"):
        return flag == "true"
    return response.status_code in (408, 409, 429) or response.status_code >= 500


async def _send(http: httpx2.AsyncClient, kind: str, token: str, client: str) -> Any:
    headers = {"Authorization": f"Bearer {CLIENTS[client]}", "Idempotency-Key": f"key-{token}"}
    prompt = f"soak {token} a quiet street"
    if kind == "generation":
        model = GENERATION_MODELS[int(token[-2:], 16) % len(GENERATION_MODELS)]
        body: dict[str, Any] = {"model": model, "prompt": prompt}
        if model == "gpt-image-2.6-sunburst":
            body["response_format"] = "url"
        return await http.post("/v1/images/generations", json=body, headers=headers)
    if kind == "edit":
        files = {"image": ("in.png", PNG_SMALL, "image/png")}
        data = {"model": "gpt-image-2-web", "prompt": prompt}
        return await http.post("/v1/images/edits", files=files, data=data, headers=headers)
    json = {"model": "muse-video", "prompt": prompt, "seconds": "5"}
    return await http.post("/v1/videos", json=json, headers=headers)


async def _request(http: httpx2.AsyncClient, gate: asyncio.Semaphore, outcome: Outcome) -> None:
    """One logical request, retried with the same key as the SDK would (max_retries=3)."""
    for attempt in range(4):
        outcome.tries += 1
        async with gate:
            try:
                response = await _send(http, outcome.kind, outcome.token, outcome.client)
            except httpx2.TransportError as exc:
                outcome.status, outcome.code = 0, type(exc).__name__
                await asyncio.sleep(0.1 * 2**attempt)
                continue
        outcome.status, outcome.body = response.status_code, response.content
        if response.status_code == 200:
            outcome.code = None
            return
        try:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]
            outcome.code = error["code"]
        except (ValueError, KeyError, AssertionError):
            outcome.problems.append(f"not an OpenAI error: {response.status_code} {response.text}")
            return
        if not _sdk_would_retry(response):
            return
        wait = float(response.headers.get("retry-after", 0.1 * 2**attempt))
        await asyncio.sleep(min(wait, 2))


async def _round(url: str, rng: random.Random, number: int) -> list[Outcome]:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx2.Limits(max_connections=CONCURRENCY * 2)
    async with httpx2.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        jobs = []
        outcomes = []
        for index in range(PER_ROUND):
            kind = rng.choices(["generation", "edit", "video"], weights=[5, 2.5, 2.5])[0]
            token = f"r{number}i{index:03d}x{rng.getrandbits(32):08x}"
            client = rng.choice(list(CLIENTS))
            # One in five is sent twice at once: one of the two must wait for the other.
            for _ in range(2 if rng.random() < 0.2 else 1):
                outcome = Outcome(kind, token, client)
                outcomes.append(outcome)
                jobs.append(_request(http, gate, outcome))
        await asyncio.gather(*jobs)
        # Repeats after the fact get the kept answer, byte for byte. (A failure that cost
        # nothing is not kept: its key may have run again, for a twin or for this repeat.)
        kept = [o for o in outcomes if o.status == 200 or o.code in KEPT_ERRORS]
        for outcome in rng.sample(kept, 15):
            response = await _send(http, outcome.kind, outcome.token, outcome.client)
            if response.headers.get("x-mediagate-idempotent-replay") != "true":
                outcome.problems.append(f"a repeat of {outcome.token} was not a replay")
                continue
            if (response.status_code, response.content) != (outcome.status, outcome.body):
                outcome.problems.append(
                    f"a replay of {outcome.token} differed from the first: {outcome.status} "
                    f"{outcome.body[:150]!r} then {response.status_code} {response.content[:150]!r}"
                )
    return outcomes


def test_soak(soak_sim: Sim, soak_gateway: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = soak_gateway
    kinds = [k for k in KINDS if k != "slowstart"]
    soak_sim.state.faults.set(
        rate=0.25, kinds=kinds, seed=6, slow_s=0.3, timeout_s=2.0, huge_mb=3, retry_after_s=0.05
    )
    rng = random.Random(6)
    rss = [rss_mib(proc.pid)]
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for number in range(ROUNDS):
        outcomes += asyncio.run(_round(url, rng, number))
        rss.append(rss_mib(proc.pid))
    elapsed = time.monotonic() - started

    # Every request ended in success or a correct OpenAI error.
    problems = [p for o in outcomes for p in o.problems]
    assert not problems, problems[:5]
    for outcome in outcomes:
        if outcome.status != 200:
            assert EXPECTED_ERRORS.get(outcome.code or "") == outcome.status, outcome

    # No key was paid for twice: successful upstream calls that made something, per request.
    paid = Counter(
        token
        for call in soak_sim.state.calls
        if call.path in PAID_PATHS and call.method == "POST" and call.status == 200
        for token in [_token(call.body)]
        if token
    )
    twice = {token: count for token, count in paid.items() if count > 1}
    assert not twice, twice

    # The gateway is healthy, and serves normally once the upstream is.
    soak_sim.state.faults.clear()
    time.sleep(1.1)  # breakers that opened are past their cool-down
    assert httpx2.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    headers = {"Authorization": f"Bearer {CLIENTS['team-a']}"}
    after = httpx2.post(
        f"{url}/v1/images/generations",
        json={"model": "gpt-image-2-web", "prompt": "after the storm"},
        headers=headers,
        timeout=30,
    )
    assert after.status_code == 200

    # Memory settles: the last round costs (nearly) nothing the earlier ones did not.
    growth = rss[-1] - rss[1]
    statuses = Counter(o.status for o in outcomes)
    errors = Counter(o.code for o in outcomes if o.status != 200)
    print(
        f"\nsoak: {len(outcomes)} requests ({sum(o.tries for o in outcomes)} sent) in "
        f"{elapsed:.1f} s; statuses {dict(statuses)}; errors {dict(errors)}; faults injected "
        f"{dict(soak_sim.state.faults.injected)}; upstream calls {len(soak_sim.state.calls)}, "
        f"paid per key: max {max(paid.values())}, keys paid {len(paid)}; "
        f"RSS MiB {[round(r, 1) for r in rss]}"
    )
    assert statuses[200] > len(outcomes) // 2
    assert growth < 20, rss


def _token(body: Any) -> str | None:
    text = str(body)
    start = text.find("soak r")
    return text[start + 5 :].split(" ", 1)[0] if start >= 0 else None

"""Two gateway processes sharing one Redis enforce one rate limit and one budget."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import openai
import pytest

from .conftest import GROUP_KEYS, Sim
from .processes import clean_env, serving
from .test_keys import entry, keys_file

KEY = "sk-shared"


@pytest.fixture
def two_gateways(
    sim: Sim, tmp_path: Path, replica_store: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[list[str]]:
    policy = request.param
    env = clean_env(
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEYS_FILE=str(
            keys_file(tmp_path / "keys.yaml", [entry("shared", KEY, **policy)])
        ),
        MEDIAGATE_FETCH_ALLOW_HOSTS=f"127.0.0.1:{sim.port}",
        MEDIAGATE_DATABASE_URL=replica_store["database_url"],
        MEDIAGATE_REDIS_URL=replica_store["redis_url"],
        MEDIAGATE_STORE_PREFIX=replica_store["store_prefix"],
    )
    with ExitStack() as stack:
        urls = []
        for i in range(2):
            env["MEDIAGATE_DATA_DIR"] = str(
                tmp_path / f"data-{i}"
            )  # nothing shared but PostgreSQL and Redis
            urls.append(stack.enter_context(serving(["serve"], dict(env), tmp_path)).url)
        yield urls


def fire(urls: list[str], count: int, prompt: str) -> list[str]:
    def one(i: int) -> str:
        client = openai.OpenAI(base_url=f"{urls[i % 2]}/v1", api_key=KEY, max_retries=0)
        try:
            client.images.generate(model="gpt-image-2-web", prompt=f"{prompt} {i}")
            return "ok"
        except openai.RateLimitError as exc:
            return str(exc.code)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("two_gateways", [{"requests_per_minute": 5}], indirect=True)
def test_one_rate_limit_across_replicas(two_gateways: list[str], sim: Sim) -> None:
    outcomes = fire(two_gateways, 12, "rate")
    assert outcomes.count("ok") == 5, outcomes
    assert outcomes.count("rate_limit_exceeded") == 7
    assert len(sim.sent()) == 5


@pytest.mark.parametrize("two_gateways", [{"budget_usd_per_day": 0.10}], indirect=True)
def test_one_budget_across_replicas(two_gateways: list[str], sim: Sim) -> None:
    outcomes = fire(two_gateways, 10, "[sim:sleep=0.3] budget")
    assert outcomes.count("ok") == 3, outcomes  # $0.03 each: the fourth would pass $0.10
    assert outcomes.count("insufficient_quota") == 7
    assert len(sim.sent()) == 3


@pytest.mark.parametrize("two_gateways", [{"concurrent_requests": 2}], indirect=True)
def test_one_concurrency_limit_across_replicas(two_gateways: list[str], sim: Sim) -> None:
    outcomes = fire(two_gateways, 6, "[sim:sleep=1] slots")
    assert outcomes.count("ok") == 2, outcomes
    assert outcomes.count("concurrency_limit_exceeded") == 4

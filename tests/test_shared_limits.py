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


def _records(database_url: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


@pytest.mark.parametrize("two_gateways", [{"budget_usd_per_day": 0.30}], indirect=True)
def test_a_30_way_race_on_a_budget_of_10_calls_gives_exactly_10(
    two_gateways: list[str], sim: Sim, replica_store: dict[str, str]
) -> None:
    # Issue 25: the budget is rows of PostgreSQL, each reservation one conditional UPDATE;
    # the two replicas race 30 calls (15 each, all at once) for room for exactly 10.
    outcomes = fire(two_gateways, 30, "[sim:sleep=0.3] race")
    assert outcomes.count("ok") == 10, outcomes  # $0.03 each: $0.30 is exactly 10
    assert outcomes.count("insufficient_quota") == 20
    assert len(sim.sent()) == 10
    url = replica_store["database_url"]
    # Booked to the micro-dollar, once each, with the rollups in step with the settlements.
    assert _records(
        url,
        "SELECT owner_kind, owner, spent_micros, reserved_micros FROM budgets "
        "WHERE length(period) = 10",
    ) == [("key", "shared", 300_000, 0)]
    assert _records(url, "SELECT COUNT(*), SUM(cost_micros) FROM settlements") == [(10, 300_000)]
    for grain in ("hour", "day"):
        assert _records(
            url, f"SELECT SUM(cost_micros), SUM(images) FROM usage_rollups WHERE grain = '{grain}'"
        ) == [(300_000, 10)]
    assert _records(url, "SELECT COUNT(*) FROM reservations") == [(0,)]

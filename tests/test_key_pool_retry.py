"""A refused key's attempt is not one of the route's attempts: it is retried at once on the
next key, since nothing was done (docs/operations.md, "Key pools"). A pool of one refused key
and one rate-limited key gives the live key the route's `max_attempts`, not one try."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import Gateway, Sim
from .resilience import pool_settings
from .resilience import pool_sim as pool_sim  # a fixture

MAX_ATTEMPTS = 3  # gpt-image-2-web's paid calls (the catalog's default retry policy)


@pytest.mark.parametrize("pool", ["sk-d1,sk-dead", "sk-dead,sk-d1"])
def test_a_refused_key_leaves_the_live_key_its_attempts(
    make_gateway: Callable[..., Gateway], pool_sim: Sim, pool: str
) -> None:
    # The live key answers 429 with a short Retry-After, every time; the other is refused.
    pool_sim.state.faults.set(by_key={"sk-d1": "429"}, retry_after_s=0.05)
    gateway = make_gateway(**pool_settings(pool_sim, default=pool))
    response = gateway.generate("p")
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    seen = [(s.key, s.status) for s in pool_sim.state.faults.seen]
    assert seen.count(("sk-d1", 429)) == MAX_ATTEMPTS, seen
    assert seen.count(("sk-dead", 401)) == 1, seen  # refused once, then resting
    assert response.headers["x-mediagate-retries"] == str(len(seen) - 1)


def test_a_live_key_that_recovers_serves_despite_a_refused_one(
    make_gateway: Callable[..., Gateway], pool_sim: Sim
) -> None:
    # The live key is rate limited on its first try only: its second try, after the wait it
    # asked for, serves. Before, the refused key's attempt used up the retry: a 429.
    pool_sim.state.faults.set(retry_after_s=0.05)
    gateway = make_gateway(**pool_settings(pool_sim, default="sk-d1,sk-dead"))
    response = gateway.generate("p [sim:burst429=1]")
    assert response.status_code == 200, response.text
    seen = [(s.key, s.status) for s in pool_sim.state.faults.seen]
    assert seen == [("sk-d1", 429), ("sk-dead", 401), ("sk-d1", 200)], seen

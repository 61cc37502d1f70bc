"""Issue 25's sums: two replicas on one PostgreSQL and one Redis take 1,000 mixed requests
(images of flat and token-priced routes, upstream failures, budget refusals, videos); after a
graceful stop the usage rollups equal the sum of the request log, to the micro-dollar, per key
and model, and both equal the settlements."""

from __future__ import annotations

import concurrent.futures
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import openai
import psycopg

from .conftest import GROUP_KEYS, Sim
from .processes import clean_env, serving
from .test_keys import entry, keys_file

KEYS = {"wide": "sk-wide-records", "tight": "sk-tight-records"}
TOTAL = 1000


def _sql(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


@contextmanager
def replicas(sim: Sim, tmp_path: Path, store: dict[str, str]) -> Iterator[list[str]]:
    """Two `mediagate serve` on one PostgreSQL and one Redis; stopped gracefully (their
    request-log queues written) when the block ends."""
    env = clean_env(
        MEDIAGATE_UPSTREAM_URL=f"{sim.url}/v1",
        MEDIAGATE_KEY_DEFAULT=GROUP_KEYS["default"],
        MEDIAGATE_KEY_OPENAIOFFICIAL=GROUP_KEYS["OpenAI Official"],
        MEDIAGATE_KEYS_FILE=str(
            keys_file(
                tmp_path / "keys.yaml",
                [
                    entry("wide", KEYS["wide"], team="studio"),
                    entry("tight", KEYS["tight"], team="growth", budget_usd_per_day=0.6),
                ],
            )
        ),
        MEDIAGATE_FETCH_ALLOW_HOSTS=f"127.0.0.1:{sim.port}",
        MEDIAGATE_DATABASE_URL=store["database_url"],
        MEDIAGATE_REDIS_URL=store["redis_url"],
        MEDIAGATE_STORE_PREFIX=store["store_prefix"],
        MEDIAGATE_RECONCILE_INTERVAL_S="0.2",
    )
    with ExitStack() as stack:
        urls = []
        for i in range(2):
            env["MEDIAGATE_DATA_DIR"] = str(tmp_path / f"data-{i}")
            urls.append(stack.enter_context(serving(["serve"], dict(env), tmp_path)).url)
        yield urls


def _one(url: str, i: int, kind: str) -> str:
    key = KEYS["tight"] if kind == "tight" else KEYS["wide"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    try:
        if kind == "video":
            video = client.videos.create(model="muse-video", prompt=f"[sim:render=0.2] clip {i}")
            return video.id
        if kind == "official":
            client.images.generate(model="gpt-image-2.6-flare", prompt=f"a kite {i}", quality="low")
        elif kind == "failed":
            client.images.generate(model="gpt-image-2-web", prompt=f"[sim:status=400] bad {i}")
        else:
            client.images.generate(model="gpt-image-2-web", prompt=f"a fox {i}")
        return "ok"
    except openai.APIStatusError as exc:
        return f"{exc.status_code}"


def test_a_thousand_mixed_requests_leave_rollups_equal_to_the_log(
    sim: Sim, tmp_path: Path, replica_store: dict[str, str]
) -> None:
    rng = random.Random(25)
    kinds = rng.choices(
        ["flat", "official", "failed", "tight", "video"], weights=[55, 20, 10, 13, 2], k=TOTAL
    )
    url = replica_store["database_url"]
    with replicas(sim, tmp_path, replica_store) as urls:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            outcomes = list(
                pool.map(lambda ik: _one(urls[ik[0] % 2], ik[0], ik[1]), enumerate(kinds))
            )
        videos = [o for o, k in zip(outcomes, kinds, strict=True) if k == "video"]
        assert videos and all(v.startswith("video_") for v in videos), videos
        assert "429" in outcomes and "400" in outcomes  # budget refusals, upstream failures
        # Each video ends and is settled by the reconciler, no client polling.
        unfinished = "SELECT COUNT(*) FROM video_jobs WHERE status IN ('queued', 'in_progress')"
        deadline = time.monotonic() + 30
        while _sql(url, unfinished)[0][0]:
            assert time.monotonic() < deadline, "videos did not finish"
            time.sleep(0.2)
    # Both replicas stopped gracefully: every row is written.
    _check(url, outcomes)


def _check(url: str, outcomes: list[str]) -> None:
    logged = _sql(url, "SELECT COUNT(*), SUM(cost_micros) FROM request_log")
    assert logged[0][0] == TOTAL, logged
    by_log = dict(
        _sql(
            url,
            "SELECT key || '/' || COALESCE(model, ''), SUM(cost_micros) FROM request_log "
            "GROUP BY 1 HAVING SUM(cost_micros) > 0",
        )
    )
    for grain in ("hour", "day"):
        by_rollup = dict(
            _sql(
                url,
                "SELECT key || '/' || model, SUM(cost_micros) FROM usage_rollups "
                f"WHERE grain = '{grain}' GROUP BY 1 HAVING SUM(cost_micros) > 0",
            )
        )
        assert by_rollup == by_log, grain
        (requests,) = _sql(url, f"SELECT SUM(requests) FROM usage_rollups WHERE grain = '{grain}'")
        assert requests == (TOTAL,)
    (settled,) = _sql(url, "SELECT SUM(cost_micros) FROM settlements")
    assert settled[0] == logged[0][1] == sum(by_log.values())
    assert _sql(url, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert _sql(url, "SELECT COUNT(*) FROM request_log WHERE cost_state = 'reserved'") == [(0,)]
    counts = Counter("video" if o.startswith("video_") else o for o in outcomes)
    print(f"1,000 requests: ${int(settled[0]) / 1e6:.6f} booked; outcomes {counts}")

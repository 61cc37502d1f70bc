"""How `main-store.sqlite.sql` and `main-store.redis.json` were made: a store filled by the
backends of MEDIAGATE_STORE_URL as they were on main at 7a1f722 (before jobs and money moved to
MEDIAGATE_DATABASE_URL), then dumped as text. `tests/test_db_import.py` loads these and imports
them with `mediagate db import`. It ran once, at that commit (those backends are gone since):

    .venv/bin/python tests/data/make_main_store.py   # Redis on 127.0.0.1:6379

Both stores hold the same jobs, webhook events, usage, spend and open reservations, so one
import test expects the same totals from either.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import redis
from mediagate.stores.redis.jobs import RedisJobStore
from mediagate.stores.sqlite.jobs import SqliteJobStore

from mediagate.stores.jobs import Delivery, VideoJob
from mediagate.stores.ledger import Charge
from mediagate.stores.redis.ledger import RedisLedger
from mediagate.stores.sqlite.ledger import SqliteLedger

HERE = Path(__file__).parent
PREFIX = "mgsnap"


def job(job_id: str, owner: str, created_at: int, **changes: Any) -> VideoJob:
    values: dict[str, Any] = {
        "id": job_id,
        "upstream_id": f"task_{job_id}",
        "owner": owner,
        "model": "sora-2",
        "route": "sora-2-official",
        "group": "Sora2Official",
        "key_fp": "ab" * 32,
        "prompt": f"a prompt for {job_id}",
        "size": "720x1280",
        "seconds": 8,
        "status": "queued",
        "created_at": created_at,
        "updated_at": created_at + 0.25,
        "asked": "sora-2",
        "route_snapshot": '{"id":"sora-2-official","multiplier":1.0}',
    }
    values.update(changes)
    return VideoJob(**values)


def event(event_id: str, video_id: str, status: str) -> Delivery:
    body = {
        "id": event_id,
        "object": "event",
        "type": f"video.{status}",
        "created_at": 1_765_000_100,
        "data": {"id": video_id},
    }
    return Delivery(event_id, "https://hooks.example/video", json.dumps(body), 1_765_000_100.0)


async def fill(jobs: Any, ledger: Any) -> None:
    t = 1_765_000_000
    await jobs.insert(job("video_q1", "team-a", t))
    await jobs.insert(job("video_p1", "team-a", t + 1, status="in_progress", progress=40))
    await jobs.insert(job("video_c1", "team-a", t + 2, status="in_progress"))
    done = {"status": "completed", "progress": 100, "completed_at": t + 60, "cost": 0.4}
    await jobs.update(
        "video_c1", "in_progress", done, event=event("evt_c1", "video_c1", "completed")
    )
    await jobs.insert(job("video_f1", "team-b", t + 3, status="in_progress", model="veo-3"))
    failed = {
        "status": "failed",
        "error": {"code": "moderation_blocked", "message": "no"},
        "cost": 0.0,
    }
    await jobs.update(
        "video_f1", "in_progress", failed, event=event("evt_f1", "video_f1", "failed")
    )
    await jobs.insert(job("video_d1", "team-b", t + 4, status="completed", cost=1.2, seconds=12))
    await jobs.update("video_d1", "completed", {"deleted_at": t + 90})
    # A record from before `asked` and `route_snapshot` were kept.
    await jobs.insert(
        job(
            "video_old",
            "team-a",
            t + 5,
            status="completed",
            cost=0.8,
            asked=None,
            route_snapshot=None,
        )
    )
    # A delivered event leaves the outbox; evt_c1 and evt_f1 stay pending.
    await jobs.insert(job("video_c2", "team-b", t + 6, status="in_progress"))
    await jobs.update(
        "video_c2", "in_progress", done, event=event("evt_c2", "video_c2", "completed")
    )
    await jobs.delivered("evt_c2")

    await ledger.settle("team-a", "req_1", Charge("gpt-image-2", 0.04, images=1))
    await ledger.settle("team-a", "req_2", Charge("gpt-image-2", 0.08, images=2))
    await ledger.settle("team-a", "video_c1", Charge("sora-2", 0.4, video_seconds=8))
    await ledger.settle("team-b", "video_d1", Charge("veo-3", 1.2, video_seconds=12))
    await ledger.settle("team-b", "req_3", Charge("gpt-image-2", 0.123457, images=1))
    # Open reservations: requests still running when the old gateway stopped.
    assert await ledger.reserve("team-a", "res_1", 0.5, None, None, 86_400)
    assert await ledger.reserve("team-b", "res_2", 0.25, None, None, 86_400)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "jobs.sqlite3")
        jobs, ledger = await SqliteJobStore.open(path), await SqliteLedger.open(path)
        await fill(jobs, ledger)
        await jobs.close()
        await ledger.close()
        with sqlite3.connect(path) as db:
            dump = "\n".join(db.iterdump())
        (HERE / "main-store.sqlite.sql").write_text(dump + "\n")

    url = "redis://127.0.0.1:6379/0"
    jobs, ledger = await RedisJobStore.open(url, PREFIX), await RedisLedger.open(url, PREFIX)
    await fill(jobs, ledger)
    await jobs.close()
    await ledger.close()
    client = redis.Redis.from_url(url, decode_responses=True)
    keys: dict[str, Any] = {}
    for key in sorted(client.scan_iter(match=f"{PREFIX}:*")):
        kind = client.type(key)
        name = "{prefix}" + key.removeprefix(PREFIX)
        if kind == "hash":
            keys[name] = {"hash": client.hgetall(key)}
        elif kind == "zset":
            keys[name] = {"zset": dict(client.zrange(key, 0, -1, withscores=True))}
        elif kind == "string":
            keys[name] = {"string": client.get(key)}
        else:
            raise ValueError(f"{key} is a {kind}")
        client.delete(key)
    (HERE / "main-store.redis.json").write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

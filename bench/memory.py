"""The gateway's memory under attack (issue 24): `python -m bench memory`, `make bench-memory`.

One gateway process (`python -m mediagate serve`, as the Dockerfile runs it) in front of the
bundled simulator in a process of its own (`python -m mediagate simulate`), so the RSS
measured is the gateway's alone. Its resident set (VmRSS from /proc/<pid>/status) is read at
idle, sampled every `sample_s` (10 ms) during each attack, with the kernel's high-water mark
(VmHWM, reset first where allowed) besides, and read again `settle_s` after it:

a. `bodies` (40) parallel JSON bodies of `body_mib` (30) MiB each to POST
   /v1/images/generations, Content-Length declared, from an over-limit key: the keys file gives
   it 3 concurrent requests and a daily budget of $0.03, spent by one $0.03 generation before
   the attack. The gateway must answer before reading (and holding) the bodies.
b. `bombs` (8) concurrent generations the upstream answers with a gzip bomb
   (`[sim:gzipbomb=1024]`: about 1 MiB of gzip that decodes to 1 GiB, built once by the
   simulator before the attack), despite the gateway asking for `identity`. The gateway must
   refuse it undecoded.

And, not an attack, for the bound on upstream answers held at once:

c. `answers` (16) concurrent honest answers of `answer_mib` (30) MiB each (`[sim:padded=30]`:
   a real image padded with whitespace), on the same gateway, its
   MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES set to `room_mib` (128) MiB, then on a second gateway
   without the bound (0), for comparison.

Each attack's clients run in a process of their own (`python -m bench.memory ATTACK URL
CONFIG`), so the sampling thread here never waits for the GIL behind them. The issue's target:
RSS within 200 MB of idle during and after each attack (a and b; the exit status is 1 when one
is missed). Idle is measured after a warm-up (one request of each kind, the spend, the
simulator's bomb built), so the code paths the attacks take are loaded. Results go to a JSON
file (`BENCH_MEMORY_OUT`, default bench/memory-results.json) and a Markdown table on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2

from .procs import Proc, free_port, serve_gateway, wait_port

ATTACKER_KEY = "sk-bench-attacker-" + "0" * 22
VICTIM_KEY = "sk-bench-victim-" + "1" * 24
# The simulator's upstream keys (mediagate.simulator.DEFAULT_SIM_KEYS).
SIM_KEYS = {"default": "sk-sim-default", "official": "sk-sim-official"}
CHEAP_MODEL = "gpt-image-2-web"  # $0.03 a call: the attacker's budget
BOMB_MODEL = "gpt-image-2"  # the official route: OpenAI's images answer
TARGET_MB = 200.0
MB = 1_000_000
MIB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    bodies: int = 40  # attack a: this many parallel bodies...
    body_mib: int = 30  # ...of this many MiB each
    bombs: int = 8  # attack b: this many concurrent gzip bombs...
    bomb_mib: int = 1024  # ...each decoding to this many MiB
    # c (not an attack: honest load): this many concurrent answers of this many MiB, with the
    # room for upstream answers (MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES) at room_mib, and off.
    answers: int = 16
    answer_mib: int = 30
    room_mib: int = 128
    sample_s: float = 0.01  # RSS sampled this often during an attack
    settle_s: float = 2.0  # "after": this long after an attack's last answer
    timeout_s: float = 120.0  # an attack's longest wait


FULL = Config()


class Sampler:
    """A process's RSS sampled every `interval_s` in a thread, and its kernel high-water mark."""

    def __init__(self, proc: Proc, interval_s: float) -> None:
        self.proc = proc
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (seconds since start, kB)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._exact = False

    def _run(self) -> None:
        started = time.monotonic()
        while not self._done.is_set():
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.samples.append((time.monotonic() - started, self.proc.rss_kb()))
            self._done.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._exact = self.proc.reset_hwm()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def peak_kb(self) -> int:
        peak = max(kb for _, kb in self.samples)
        if self._exact:
            with contextlib.suppress(OSError, KeyError, ValueError):
                peak = max(peak, self.proc.hwm_kb())
        return peak

    def largest_gap_s(self) -> float:
        times = [t for t, _ in self.samples]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def settled_rss_kb(proc: Proc, seconds: float = 0.5, interval_s: float = 0.05) -> int:
    """The median RSS over a short while (one reading can catch a passing allocation)."""
    readings = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readings.append(proc.rss_kb())
        time.sleep(interval_s)
    return int(statistics.median(readings))


# -- the processes ---------------------------------------------------------------------------


def _keys_file(path: Path) -> Path:
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    entries = [
        {
            "name": "attacker",
            "sha256": digest(ATTACKER_KEY),
            "concurrent_requests": 3,
            "budget_usd_per_day": 0.03,
        },
        {"name": "victim", "sha256": digest(VICTIM_KEY)},
    ]
    path.write_text(json.dumps({"keys": entries}))  # JSON is YAML
    return path


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAGATE_", "BENCH_"))}


@contextlib.contextmanager
def simulator(work: Path) -> Iterator[str]:
    """The bundled simulator in a process of its own: its URL."""
    port = free_port()
    args = [sys.executable, "-m", "mediagate", "simulate", "--port", str(port)]
    proc = Proc("simulator", args, work, _clean_env())
    try:
        wait_port(proc, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@contextlib.contextmanager
def gateway(work: Path, sim_url: str, name: str, **extra: str) -> Iterator[tuple[Proc, str]]:
    """A gateway in front of the simulator, configured only by MEDIAGATE_* variables (`extra`
    on top): its process and URL."""
    env = _clean_env() | {
        "MEDIAGATE_UPSTREAM_URL": f"{sim_url}/v1",
        "MEDIAGATE_KEY_DEFAULT": SIM_KEYS["default"],
        "MEDIAGATE_KEY_OPENAIOFFICIAL": SIM_KEYS["official"],
        "MEDIAGATE_KEYS_FILE": str(_keys_file(work / f"{name}-keys.yaml")),
        "MEDIAGATE_FETCH_ALLOW_HOSTS": sim_url.removeprefix("http://"),
        "MEDIAGATE_DATA_DIR": str(work / f"{name}-data"),
        **extra,
    }
    with serve_gateway(name, work, env) as served:
        yield served


# -- the attacks -----------------------------------------------------------------------------


def _body(mib: int) -> bytes:
    """A JSON generation whose prompt makes it `mib` MiB."""
    head = json.dumps({"model": CHEAP_MODEL, "prompt": ""}).encode()[:-2]
    filler = mib * MIB - len(head) - 2
    return head + b"a" * filler + b'"}'


async def _post_raw(port: int, key: str, body: memoryview, timeout_s: float) -> dict[str, Any]:
    """One POST with a declared Content-Length whose body is written while the answer is read:
    the answer's status and code, and how much of the body the gateway took before it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(head)
        for start in range(0, len(body), 256 * 1024):
            writer.write(body[start : start + 256 * 1024])
            await writer.drain()
            sent = start + 256 * 1024

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(timeout_s):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            answer = await reader.readexactly(int(headers.get("content-length", "0")))
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        return {"status": type(exc).__name__, "code": None, "sent": sent}
    finally:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 else 0
    code = None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = json.loads(answer)["error"]["code"]
    return {"status": status, "code": code, "sent": min(sent, len(body))}


def attack_bodies(url: str, config: Config) -> list[dict[str, Any]]:
    body = memoryview(_body(config.body_mib))  # one buffer, in this process, for every client
    port = int(url.rsplit(":", 1)[1])

    async def all_of_them() -> list[dict[str, Any]]:
        posts = [
            _post_raw(port, ATTACKER_KEY, body, config.timeout_s) for _ in range(config.bodies)
        ]
        return list(await asyncio.gather(*posts))

    return asyncio.run(all_of_them())


def _generate(url: str, key: str, model: str, prompt: str, timeout_s: float) -> dict[str, Any]:
    with httpx2.Client(timeout=timeout_s) as http:
        response = http.post(
            f"{url}/v1/images/generations",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "prompt": prompt},
        )
    code = None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = response.json()["error"]["code"]
    return {"status": response.status_code, "code": code}


def _concurrently(url: str, prompt: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one() -> None:
        result = _generate(url, VICTIM_KEY, BOMB_MODEL, prompt, timeout_s)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def attack_bombs(url: str, config: Config) -> list[dict[str, Any]]:
    prompt = f"a fox [sim:gzipbomb={config.bomb_mib}]"
    return _concurrently(url, prompt, config.bombs, config.timeout_s)


def honest_answers(url: str, config: Config) -> list[dict[str, Any]]:
    """Valid answers of answer_mib MiB each (a real image padded with whitespace)."""
    prompt = f"a large answer [sim:padded={config.answer_mib}]"
    return _concurrently(url, prompt, config.answers, config.timeout_s)


def _build_bomb(sim_url: str, config: Config) -> float:
    """The simulator builds (and keeps) its bomb now, not during the attack: asked directly,
    its answer closed unread. The seconds it took."""
    started = time.monotonic()
    body = {"model": BOMB_MODEL, "prompt": f"warm-up [sim:gzipbomb={config.bomb_mib}]"}
    headers = {"Authorization": f"Bearer {SIM_KEYS['official']}"}
    with (
        httpx2.Client(timeout=config.timeout_s) as http,
        http.stream("POST", f"{sim_url}/v1/images/generations", json=body, headers=headers) as r,
    ):
        assert r.headers.get("content-encoding") == "gzip", r.headers
    return time.monotonic() - started


def warm_up(url: str, sim_url: str, config: Config, log: Callable[[str], None]) -> dict[str, Any]:
    """The simulator's bomb built, the attacker's budget spent, each attack's path taken once."""
    seconds = _build_bomb(sim_url, config)
    log(f"  the simulator built its {config.bomb_mib} MiB bomb in {seconds:.1f} s")
    spend = _generate(url, ATTACKER_KEY, CHEAP_MODEL, "a lighthouse", config.timeout_s)
    if spend["status"] != 200:
        raise RuntimeError(f"spending the attacker's budget failed: {spend}")
    refused = _generate(url, ATTACKER_KEY, CHEAP_MODEL, "again", config.timeout_s)
    if refused["status"] != 429:
        raise RuntimeError(f"the attacker's key is not over its limit: {refused}")
    small = attack_bodies(url, Config(bodies=1, body_mib=1, timeout_s=config.timeout_s))
    bomb = _generate(
        url, VICTIM_KEY, BOMB_MODEL, f"one [sim:gzipbomb={config.bomb_mib}]", config.timeout_s
    )
    ok = _generate(url, VICTIM_KEY, CHEAP_MODEL, "a harbour", config.timeout_s)
    _generate(url, VICTIM_KEY, BOMB_MODEL, "a large answer [sim:padded=1]", config.timeout_s)
    return {
        "bomb_build_s": round(seconds, 2),
        "spend": spend,
        "refused_after": refused,
        "one_body": small[0],
        "one_bomb": bomb,
        "victim_ok": ok,
    }


ATTACKS: dict[str, Callable[[str, Config], list[dict[str, Any]]]] = {
    "bodies": attack_bodies,
    "bombs": attack_bombs,
    "answers": honest_answers,
}


def _attack_apart(kind: str, url: str, config: Config) -> list[dict[str, Any]]:
    """An attack run by a process of its own: its answers."""
    args = [sys.executable, "-m", "bench.memory", kind, url, json.dumps(asdict(config))]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=config.timeout_s * 2, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"attack {kind} failed:\n{done.stderr[-2000:]}")
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    return answers


def measure(proc: Proc, name: str, kind: str, url: str, config: Config) -> dict[str, Any]:
    idle = settled_rss_kb(proc)
    started = time.monotonic()
    with Sampler(proc, config.sample_s) as sampler:
        answers = _attack_apart(kind, url, config)
    seconds = time.monotonic() - started
    time.sleep(config.settle_s)
    after = settled_rss_kb(proc)
    peak = sampler.peak_kb()
    outcomes = Counter(f"{a['status']} {a['code'] or ''}".strip() for a in answers)
    row: dict[str, Any] = {
        "attack": name,
        "idle_rss_mb": idle * 1024 / MB,
        "peak_rss_mb": peak * 1024 / MB,
        "after_rss_mb": after * 1024 / MB,
        "peak_over_idle_mb": (peak - idle) * 1024 / MB,
        "after_over_idle_mb": (after - idle) * 1024 / MB,
        "seconds": round(seconds, 2),
        "samples": len(sampler.samples),
        "largest_sample_gap_ms": round(sampler.largest_gap_s() * 1000, 1),
        "answers": dict(outcomes),
    }
    if any("sent" in a for a in answers):
        row["body_mb_sent_before_answers"] = sum(a.get("sent", 0) for a in answers) / MB
    row["met"] = row["peak_over_idle_mb"] <= TARGET_MB and row["after_over_idle_mb"] <= TARGET_MB
    return row


def _logged(log: Callable[[str], None], row: dict[str, Any]) -> dict[str, Any]:
    log(
        f"  idle {row['idle_rss_mb']:.1f} MB, peak {row['peak_rss_mb']:.1f} MB, "
        f"after {row['after_rss_mb']:.1f} MB; answers {row['answers']}"
    )
    return row


def run(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": asdict(config),
        "target_mb": TARGET_MB,
        "attacks": [],
        "answers": [],
    }
    room = str(config.room_mib * MIB)
    with (
        tempfile.TemporaryDirectory(prefix="mediagate-bench-memory-") as tmp,
        simulator(Path(tmp)) as sim_url,
    ):
        work = Path(tmp)
        rooms = {"MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES": room}
        with gateway(work, sim_url, "gateway", **rooms) as (proc, url):
            log("warm-up:")
            results["warm_up"] = warm_up(url, sim_url, config, log)
            attacks = [
                (
                    f"a. {config.bodies} parallel {config.body_mib} MiB JSON bodies, "
                    "over-limit key",
                    "bodies",
                ),
                (
                    f"b. {config.bombs} concurrent {config.bomb_mib} MiB gzip bombs upstream",
                    "bombs",
                ),
            ]
            for name, kind in attacks:
                log(f"attack {name}:")
                results["attacks"].append(_logged(log, measure(proc, name, kind, url, config)))
            # The gateway still serves an honest client.
            results["victim_after"] = _generate(
                url, VICTIM_KEY, CHEAP_MODEL, "after the attacks", config.timeout_s
            )
            name = (
                f"c. {config.answers} concurrent honest {config.answer_mib} MiB answers, "
                f"room {config.room_mib} MiB"
            )
            log(f"{name}:")
            results["answers"].append(_logged(log, measure(proc, name, "answers", url, config)))
        # The same honest load on a gateway without the bound, for comparison.
        with gateway(
            work, sim_url, "gateway-unbounded", MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES="0"
        ) as (
            proc,
            url,
        ):
            _generate(url, VICTIM_KEY, BOMB_MODEL, "warm-up [sim:padded=1]", config.timeout_s)
            name = (
                f"c. {config.answers} concurrent honest {config.answer_mib} MiB answers, "
                "no room bound"
            )
            log(f"{name}:")
            results["answers"].append(_logged(log, measure(proc, name, "answers", url, config)))
    return results


def render(results: dict[str, Any]) -> str:
    every_ms = results["config"]["sample_s"] * 1000
    lines = [
        f"| attack | idle RSS MB | peak RSS MB (sampled every {every_ms:g} ms) "
        "| after RSS MB | peak - idle | after - idle | answers | within 200 MB |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in [*results["attacks"], *results["answers"]]:
        answers = ", ".join(f"{n} x {what}" for what, n in sorted(row["answers"].items()))
        lines.append(
            f"| {row['attack']} | {row['idle_rss_mb']:.1f} | {row['peak_rss_mb']:.1f} | "
            f"{row['after_rss_mb']:.1f} | {row['peak_over_idle_mb']:+.1f} | "
            f"{row['after_over_idle_mb']:+.1f} | {answers} | {'met' if row['met'] else 'MISSED'} |"
        )
    return "\n".join(lines)


def main() -> int:
    out = Path(
        os.environ.get("BENCH_MEMORY_OUT") or Path(__file__).with_name("memory-results.json")
    )
    print(f"mediagate memory under attack (issue 24); results to {out}", flush=True)
    results = run(FULL, log=lambda line: print(line, flush=True))
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(render(results))
    return 0 if all(row["met"] for row in results["attacks"]) else 1


if __name__ == "__main__":
    # An attack's clients, apart from the sampling process: `ATTACK URL CONFIG-JSON`.
    kind, target, given = sys.argv[1:4]
    print(json.dumps(ATTACKS[kind](target, Config(**json.loads(given)))))

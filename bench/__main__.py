"""`python -m bench`: the pass-through bench (bench.runner); `python -m bench <mode>`: one mode;
`python -m bench all`: every mode of issue 28 that is present, one process each.

A mode is a module bench/<mode>.py with `main() -> int` that writes bench/<mode>-results.json.
To add one, add its line to MODES (in the order `all` should run it); `all` runs the listed
modes whose module exists, so a mode listed before its module lands is skipped, not an error.
The soak (ten minutes) runs in `all` only with BENCH_SOAK=1 (or alone: `make bench-soak`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import time

# mode -> module, in the order `python -m bench all` runs them.
MODES = {
    "slow": "bench.slow",  # slow calls in flight (issue 28)
    "b64": "bench.b64",  # megabytes of base64
    "sse": "bench.sse",  # the SSE relay: added to the first event
    "download": "bench.download",  # 200 MB video downloads at c=4
    "polls": "bench.polls",  # video status polls
    "startup": "bench.startup",  # cold start and import time
    "reqlog": "bench.reqlog",  # the request log's CPU per request, A/B (issue 25)
    "records": "bench.records",  # 1M request-log rows, the admin reads (issue 25)
    "batch": "bench.batch",  # a 1,000-line images batch (issue 27)
    "soak": "bench.soak",  # ten minutes of mixed traffic (BENCH_SOAK=1 in `all`)
    "memory": "bench.memory",  # issue 24's attacks (`make bench-memory`; not in `all`)
}
NOT_IN_ALL = {"memory"}
LONG = {"soak"}  # in `all` only with BENCH_SOAK=1


def present(mode: str) -> bool:
    return importlib.util.find_spec(MODES[mode]) is not None


def run_all() -> int:
    soak = os.environ.get("BENCH_SOAK", "") not in ("", "0")
    failed: list[str] = []
    for mode in MODES:
        if mode in NOT_IN_ALL or (mode in LONG and not soak):
            continue
        if not present(mode):
            print(f"== bench {mode}: no module {MODES[mode]} here, skipped", flush=True)
            continue
        print(f"== bench {mode}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "bench", mode])
        print(f"== bench {mode}: exit {code}, {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(mode)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def main() -> int:
    args = sys.argv[1:]
    if not args:
        from .runner import main as default

        return default()
    if args == ["all"]:
        return run_all()
    if args and args[0] in MODES and present(args[0]):  # a mode reads its own options
        module = importlib.import_module(MODES[args[0]])
        code: int = module.main()
        return code
    known = ", ".join(mode for mode in MODES if present(mode))
    print(f"usage: python -m bench [all | {known.replace(', ', ' | ')}]", file=sys.stderr)
    return 2


sys.exit(main())

"""`mediagate serve` and `mediagate simulate`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn

from .logs import configure_logging
from .settings import Settings

log = logging.getLogger("mediagate")


def _serve(args: argparse.Namespace) -> int:
    settings = Settings()
    configure_logging(settings.log_level)
    has_keys = any(settings.group_keys(g) for g in ("default", "Sora2Official"))
    if not settings.upstream_url and not has_keys and not settings.extra_group_keys:
        # A newcomer with nothing configured gets a working gateway, offline.
        settings = settings.model_copy(update={"simulator": True})
    from .gateway import ConfigError, check_config
    from .main import create_app

    try:
        check_config(settings)
    except ConfigError as exc:
        print(f"mediagate: {exc}", file=sys.stderr)
        return 2
    if settings.simulator:
        print(
            "mediagate: no upstream configured; serving the built-in simulated upstream "
            "(offline, fake images). Set MEDIAGATE_UPSTREAM_URL and MEDIAGATE_KEY_* for the "
            "real one.",
            file=sys.stderr,
        )
    # On SIGTERM uvicorn stops accepting, lets requests in flight finish (for at most
    # MEDIAGATE_SHUTDOWN_TIMEOUT_S), then raises the signal again for whatever handler was
    # there before; with the default one the process would die by the signal (status 143)
    # instead of exiting 0 after a clean shutdown.
    signal.signal(signal.SIGTERM, _after_shutdown)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    return 0


def _after_shutdown(signum: int, frame: FrameType | None) -> None:
    log.info("shut down on SIGTERM")


def _simulate(args: argparse.Namespace) -> int:
    from .simulator import DEFAULT_SIM_KEYS, SimConfig, create_simulator_app

    print(f"simulated upstream on http://{args.host}:{args.port}/v1", file=sys.stderr)
    for key, group in DEFAULT_SIM_KEYS.items():
        print(f"  token group {group!r}: key {key}", file=sys.stderr)
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS), latency_s=args.latency))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from .keys import create_key

    limits = {
        "models": args.models.split(",") if args.models else None,
        "requests_per_minute": args.rpm,
        "images_per_minute": args.ipm,
        "concurrent_requests": args.concurrency,
        "budget_usd_per_day": args.budget_day,
        "budget_usd_per_month": args.budget_month,
    }
    key, entry = create_key(args.name, **{k: v for k, v in limits.items() if v is not None})
    print(f"# The key for '{args.name}' (shown once; give it to the team, keep no copy):")
    print(f"# {key}")
    print("# Add this entry under `keys:` in MEDIAGATE_KEYS_FILE (it holds only the SHA-256):")
    print(entry, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediagate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=_serve)
    simulate = commands.add_parser("simulate", help="run the simulated upstream alone")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=9000)
    simulate.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    simulate.set_defaults(run=_simulate)
    keys = commands.add_parser("keys", help="manage client keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="make a new client key and its keys-file entry")
    create.add_argument("name", help="the team or application the key is for")
    create.add_argument("--models", help="comma-separated model names or globs (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--ipm", type=int, help="images per minute")
    create.add_argument("--concurrency", type=int, help="requests running at once")
    create.add_argument("--budget-day", type=float, help="USD per day (UTC)")
    create.add_argument("--budget-month", type=float, help="USD per month (UTC)")
    create.set_defaults(run=_keys_create)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

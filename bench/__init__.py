"""`make bench`: what mediagate adds, measured against calling its upstream directly.

Three processes besides the one that orchestrates (see `bench.runner`):

- the upstream: `bench.standin`, a minimal raw-ASGI stand-in for the reseller with zero service
  time, whose answers are precomputed so its own cost stays small and constant;
- the gateway: `python -m app serve`, configured by MEDIAGATE_* variables as an operator would;
- the load generator: `bench.load`, a closed-loop asyncio HTTP/1.1 driver.

Each pair (a direct call to the upstream, and the same call through the gateway) is measured
in the same run, in short alternating rounds, so machine noise cancels in the difference.
"""

"""Offline stand-in for the reseller upstream, strict enough to catch gateway bugs."""

from app.simulator.app import (
    DEFAULT_SIM_KEYS,
    Call,
    SimConfig,
    SimState,
    create_simulator_app,
)
from app.simulator.png import make_png

__all__ = [
    "DEFAULT_SIM_KEYS",
    "Call",
    "SimConfig",
    "SimState",
    "create_simulator_app",
    "make_png",
]

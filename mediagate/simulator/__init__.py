"""Offline stand-in for the reseller upstream, strict enough to catch gateway bugs."""

from mediagate.simulator.app import create_simulator_app
from mediagate.simulator.png import make_png
from mediagate.simulator.state import DEFAULT_SIM_KEYS, Call, SimConfig, SimState

__all__ = [
    "DEFAULT_SIM_KEYS",
    "Call",
    "SimConfig",
    "SimState",
    "create_simulator_app",
    "make_png",
]

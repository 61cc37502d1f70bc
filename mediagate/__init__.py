"""mediagate: an OpenAI-compatible gateway for image and video generation.

`from mediagate import create_app` gives the application factory. It is looked up lazily, so
that importing a part of the package (the simulator, say) builds nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediagate.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from mediagate.app import create_app

        return create_app
    raise AttributeError(name)

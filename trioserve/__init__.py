"""trioserve: an ASGI server built on trio, h11 and wsproto."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config
    from .errors import ClientDisconnected, LifespanFailure
    from .run import run
    from .server.serve import serve

__version__ = "0.1.0"

__all__ = ["ClientDisconnected", "Config", "LifespanFailure", "__version__", "run", "serve"]

# Imported on first use (PEP 562): `import trioserve.testing.pytest_plugin`, which pytest does
# in every project that has trioserve installed, should not load trio and the whole server.
_LAZY = {
    "Config": "config",
    "ClientDisconnected": "errors",
    "LifespanFailure": "errors",
    "run": "run",
    "serve": "server.serve",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

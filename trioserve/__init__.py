"""trioserve: an ASGI server built on trio, h11 and wsproto."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._runner import run
    from .config import Config
    from .errors import ClientDisconnected, LifespanFailure
    from .logs import configure_logging
    from .server.serve import serve

__version__ = "0.1.0"

__all__ = [
    "ClientDisconnected",
    "Config",
    "LifespanFailure",
    "__version__",
    "configure_logging",
    "run",
    "serve",
]

# Imported on first use (PEP 562): `import trioserve.testing.pytest_plugin`, which pytest does
# in every project that has trioserve installed, should not load trio and the whole server.
_LAZY = {
    "Config": "config",
    "ClientDisconnected": "errors",
    "LifespanFailure": "errors",
    "configure_logging": "logs",
    "run": "_runner",
    "serve": "server.serve",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


class _Package(types.ModuleType):
    """Keeps ``trioserve.run`` the function.

    Importing the submodule ``trioserve.run`` (the old home of the runner, kept for
    ``from trioserve.run import ...``) makes Python bind it as the package attribute
    ``run``; a script calling ``trioserve.run(...)`` would then call a module. Refusing
    that one binding leaves ``run`` to ``__getattr__`` above: always the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "run" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

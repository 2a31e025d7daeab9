"""trioserve: an ASGI server built on trio, h11 and wsproto."""

from __future__ import annotations

from .config import Config
from .errors import ClientDisconnected, LifespanFailure
from .run import run
from .server.serve import serve

__version__ = "0.1.0"

__all__ = ["ClientDisconnected", "Config", "LifespanFailure", "__version__", "run", "serve"]

"""Test ASGI apps under trio with the real trioserve.

- :func:`open_server`: the real server on a free loopback port, in the test's nursery.
- :class:`InMemoryTransport` / :func:`open_memory_client`: an httpx transport that runs
  trioserve's HTTP/1.1 code over in-memory streams (needs ``httpx``).
- :func:`ws_connect`: a WebSocket client for either of them.
- The pytest plugin (:mod:`trioserve.testing.pytest_plugin`) wraps these as fixtures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .live import LiveServer, open_server
    from .memory import InMemoryTransport, open_memory_client
    from .wsclient import WebSocketClosed, WebSocketDenied, WebSocketSession, ws_connect

# Imported on first use (PEP 562), so loading the pytest plugin in this package is cheap.
_LAZY = {
    "LiveServer": "live",
    "open_server": "live",
    "InMemoryTransport": "memory",
    "open_memory_client": "memory",
    "WebSocketClosed": "wsclient",
    "WebSocketDenied": "wsclient",
    "WebSocketSession": "wsclient",
    "ws_connect": "wsclient",
}

__all__ = [
    "InMemoryTransport",
    "LiveServer",
    "WebSocketClosed",
    "WebSocketDenied",
    "WebSocketSession",
    "open_memory_client",
    "open_server",
    "ws_connect",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

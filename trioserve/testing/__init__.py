"""Test ASGI apps under trio with the real trioserve.

- :func:`open_server`: the real server on a free loopback port, in the test's nursery.
- :class:`InMemoryTransport` / :func:`open_memory_client`: an httpx transport that runs
  trioserve's HTTP/1.1 code over in-memory streams (needs ``httpx``).
- :func:`ws_connect`: a WebSocket client for either of them.
- The pytest plugin (:mod:`trioserve.testing.pytest_plugin`) wraps these as fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .live import LiveServer, open_server
from .wsclient import WebSocketClosed, WebSocketDenied, WebSocketSession, ws_connect

if TYPE_CHECKING:
    from .memory import InMemoryTransport, open_memory_client

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
    # The in-memory transport needs httpx; import it only when asked for.
    if name in ("InMemoryTransport", "open_memory_client"):
        from . import memory

        return getattr(memory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

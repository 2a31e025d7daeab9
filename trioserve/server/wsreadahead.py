"""The server-wide budget for WebSocket read-ahead (``websocket_max_buffered_bytes``).

A pump reads for an app that stays away from ``receive()`` (see :mod:`.websocket`), up to
``max_app_queue_size`` messages. With permessage-deflate each of those may inflate to
``websocket_max_message_size`` from a few KB on the wire, so TCP flow control no longer
bounds what many connections hold together. This budget does: it counts the inflated
bytes parsed but not yet taken by an app, across all connections, and a pump stops
reading while it is spent (backpressure: the watchdog restarts it once apps drain). An
app that calls ``receive()`` is never held back by it: it always gets its next message.
"""

from __future__ import annotations

import weakref
from typing import Any

from ..sansio.wsframes import message_bytes
from .state import ServerState


class ReadAheadBudget:
    """Inflated bytes of WebSocket messages waiting for their apps, server-wide."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def room(self) -> int:
        return self.limit - self.used

    def hold(self, messages: list[dict[str, Any]]) -> int:
        """Count messages put in a queue; returns their size."""
        size = 0
        for message in messages:
            size += message_bytes(message)
        self.used += size
        return size


# Per ServerState (weakly: a finished server's budget goes with it).
_budgets: weakref.WeakKeyDictionary[ServerState, ReadAheadBudget] = weakref.WeakKeyDictionary()


def budget_for(state: ServerState) -> ReadAheadBudget:
    budget = _budgets.get(state)
    if budget is None:
        limit = state.config.websocket_max_buffered_bytes
        budget = _budgets[state] = ReadAheadBudget(limit)
    return budget

"""The per-server watchdog that starts a pump for WebSockets whose app stays away from
``receive()`` (see :mod:`.websocket`)."""

from __future__ import annotations

import weakref
from typing import Protocol

import trio

from ..logs import error_log
from .state import ServerState

# How often the watchdog looks for apps that stay away from receive(); such an app gets a
# pump after one to two intervals.
WATCH_INTERVAL = 1.0
_WATCHDOG_NAME = f"{__name__}.Watchdog._run"


class Watched(Protocol):
    def watch(self) -> None:
        """Called once per interval: start a pump if the app has stayed away."""


class Watchdog:
    """Per server: one task for all open WebSockets (a WebSocket costs a set entry, not a
    task or a timer), and only while any is open: the last one to end cancels it, so
    shutdown never waits for its sleep.
    """

    __slots__ = ("handlers", "scope")

    def __init__(self) -> None:
        self.handlers: set[Watched] = set()
        self.scope: trio.CancelScope | None = None

    def add(self, handler: Watched, nursery: trio.Nursery) -> None:
        self.handlers.add(handler)
        if self.scope is None:
            self.scope = scope = trio.CancelScope()
            nursery.start_soon(self._run, scope, name=_WATCHDOG_NAME)

    def discard(self, handler: Watched) -> None:
        self.handlers.discard(handler)
        if not self.handlers and self.scope is not None:
            self.scope.cancel()
            self.scope = None

    async def _run(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await trio.sleep(WATCH_INTERVAL)
                for handler in list(self.handlers):
                    try:
                        handler.watch()
                    except Exception:  # never take the server's connections nursery down
                        error_log.exception("Unexpected error watching a WebSocket")


# Per ServerState (weakly: a finished server's watchdog goes with it).
_watchdogs: weakref.WeakKeyDictionary[ServerState, Watchdog] = weakref.WeakKeyDictionary()


def watchdog_for(state: ServerState) -> Watchdog:
    dog = _watchdogs.get(state)
    if dog is None:
        dog = _watchdogs[state] = Watchdog()
    return dog

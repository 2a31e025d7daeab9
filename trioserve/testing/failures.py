"""Catch what the app raises so a test fails with the app's own exception.

A real server turns an app exception into a 500 and one log line; in a test that hides the
cause behind a status-code assertion. The helpers here wrap the app once, record every
exception it raises for an ``http`` or ``websocket`` scope, and hand them back to the test:
``open_server`` raises them when its block ends, the in-memory transport raises them from the
request that caused them.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

from ..errors import ClientDisconnected
from ..importer import ASGIApp, Receive, Send, as_asgi3

if sys.version_info < (3, 11):  # pragma: no cover - exceptiongroup ships with trio there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["AppErrors", "client_gone"]

# Per-connection list of failures, set by the in-memory transport in each connection's task
# so a request can tell which failures are its own.
connection_errors: ContextVar[list[BaseException] | None] = ContextVar(
    "trioserve_connection_errors", default=None
)

# Exceptions frameworks raise when a send fails because the client left: not app bugs.
# Starlette's WebSocketDisconnect escapes an endpoint that doesn't catch it when the test
# closes the socket: the usual ending of a WebSocket test, not a failure.
_CLIENT_GONE_NAMES = frozenset({"ClientDisconnect", "ClientDisconnected", "WebSocketDisconnect"})


def client_gone(exc: BaseException) -> bool:
    """True if ``exc`` only says the client went away (also inside exception groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(client_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, ClientDisconnected) or type(exc).__name__ in _CLIENT_GONE_NAMES


class AppErrors:
    """Records the app's exceptions; ``wrap`` gives the app to serve in its place."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self._reported: set[int] = set()

    def wrap(self, app: Any) -> ASGIApp:
        inner = as_asgi3(app)

        async def recording_app(
            scope: MutableMapping[str, Any], receive: Receive, send: Send
        ) -> None:
            try:
                await inner(scope, receive, send)
            except Exception as exc:
                if scope.get("type") in ("http", "websocket") and not client_gone(exc):
                    self.record(exc)
                raise

        return recording_app

    def record(self, exc: BaseException) -> None:
        self.errors.append(exc)
        per_connection = connection_errors.get()
        if per_connection is not None:
            per_connection.append(exc)

    def mark_reported(self, exc: BaseException) -> None:
        """The exception already reached the test another way: don't raise it again."""
        self._reported.add(id(exc))

    def unreported(self) -> list[BaseException]:
        return [exc for exc in self.errors if id(exc) not in self._reported]

    def raise_unreported(self, body_error: BaseException | None) -> None:
        """Raise what the app raised; if the test body failed too, attach it as a note."""
        errors = self.unreported()
        if not errors:
            return
        for exc in errors:
            self.mark_reported(exc)
        if body_error is not None:
            if hasattr(body_error, "add_note"):
                body_error.add_note(describe(errors))
            return
        if len(errors) == 1:
            raise errors[0]
        raise BaseExceptionGroup(f"the ASGI app raised {len(errors)} exceptions", errors)


def describe(errors: list[BaseException]) -> str:
    import traceback

    parts = ["The ASGI app also raised while serving this test:"]
    for exc in errors:
        parts.append("".join(traceback.format_exception(exc)).rstrip())
    return "\n".join(parts)

"""Each request's app runs in its own context, although HTTP/1.1 runs them all in one task.

An HTTP/1.1 connection runs its requests one after another in the connection's own task (the
pull model, see docs/architecture.md), and trio runs a task's every step in that task's
``contextvars.Context``. Left alone, a ``ContextVar`` one request sets (an auth middleware's
current user, a tenant id, an OpenTelemetry span) would still be set in the next request on the
connection: behind a proxy that reuses upstream connections, another user's request.

A task per request would cost more than the rest of the request path, so the app's coroutine is
driven in a context of its own instead, as an asyncio task created with ``context=`` is: each
step of it runs inside ``Context.run`` (``appcall.drive_app``, which also releases a held
response head when the app waits). The first request on a connection
needs no wrapper: the connection's task started from a fresh copy of the accept loop's context.
Later ones run in a copy of that starting context (:class:`RequestContexts`), so nothing an
earlier request set reaches them. HTTP/2 and HTTP/3 streams are new tasks spawned by a read loop
that never runs app code, so they start fresh already. Under ``reset_contextvars`` (Uvicorn's
``--reset-contextvars``) every request and WebSocket, on every version, runs in an empty context.

Measured: +7.7 calls per keep-alive GET with httptools (1.9 %), +7.4 with h11 (1.1 %;
``benchmarks/calls_per_request.py``), against +13.5 for swapping the task's context between
requests, which must then yield to the scheduler whenever the next request is already buffered
(64 % of requests under wrk -c64).
"""

from __future__ import annotations

import contextvars


class RequestContexts:
    """The contexts of one connection's requests, in order (see the module docstring)."""

    __slots__ = ("_base", "_first")

    def __init__(self, reset: bool) -> None:
        # A snapshot no code runs in, so it stays as the connection started.
        self._base = None if reset else contextvars.copy_context()
        self._first = not reset

    def next(self) -> contextvars.Context | None:
        """The next request's context; None: the task's own (the connection's first)."""
        if self._first:
            self._first = False
            return None
        return contextvars.Context() if self._base is None else self._base.copy()


def stream_context(reset: bool) -> contextvars.Context | None:
    """An HTTP/2 or HTTP/3 stream's context: its new task's own, or an empty one."""
    return contextvars.Context() if reset else None

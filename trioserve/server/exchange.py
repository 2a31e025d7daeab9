"""What the server accounts for one exchange, an HTTP request or a WebSocket, written once.

:class:`~.request.RequestRunner` and :class:`~.websocket.WebSocketHandler` both derive
from :class:`Exchange`, so these are the same code for both, on every HTTP version:

- admission (:meth:`Exchange._admit`): the gates before the app runs, ``server_names``
  (404), ``limit_concurrency`` (503) and an announced body over the limit (413); and the
  in-flight count, which an admitted exchange joins whether it is served or refused;
- leaving (:meth:`Exchange._leave`, in a ``finally`` whatever ended the app): the
  in-flight count and the served-requests count (``max_requests``);
- the access-log line;
- what an exception out of the app means: the client leaving, re-raised in the app's
  words (logged at debug, not counted), or the app's failure (one log line, counted as
  ``app_exception`` in the metrics).

What differs stays with each: the metrics family (``request_done``/``websocket_done``),
the status the log reports, and what is sent back.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..errors import ClientDisconnected
from ..logs import access_log, error_log
from ..sansio.accesslog import AccessLogAtoms, format_access_line
from ..sansio.asgi import UnexpectedMessage
from ..sansio.events import Headers, Request
from ..sansio.proxy import host_allowed
from .asyncio_bridge import report_needs_asyncio
from .faults import exception_tree
from .state import ServerState

if sys.version_info < (3, 11):  # pragma: no cover
    pass

# Why a gate refused, for the error log.
REFUSAL_REASONS = {
    404: "Host not in server_names",
    413: "request body over max_request_body_size",
    503: "limit_concurrency reached",
}


class Exchange:
    """One request or WebSocket as the server counts and logs it; see the module docstring.

    Subclasses set ``scope`` and ``state``, then ``_admit()``; ``_leave()`` must follow.
    """

    # Thousands of WebSockets sit idle: no per-instance __dict__.
    __slots__ = ("_started", "scope", "state")

    scope: dict[str, Any]
    state: ServerState

    def _admit(self, request: Request) -> int:
        """The gates: the status to refuse ``request`` with before the app sees it (0: serve
        it; :data:`REFUSAL_REASONS` says why). Either way the exchange is in flight from
        here, and its clock starts (a refusal is answered, counted and logged too)."""
        state = self.state
        config = state.config
        status = 0
        limit = config.limit_concurrency
        if config.server_names and not host_allowed(self.scope["headers"], config.server_names):
            status = 404  # Hypercorn's answer for a Host not in server_names
        elif limit is not None and state.in_flight >= limit:
            status = 503
        elif (body_limit := config.max_request_body_size) is not None:
            for name, value in request.headers:
                if name == b"content-length":
                    if value.isdigit() and int(value) > body_limit:
                        status = 413
                    break
        state.in_flight += 1
        self._started = time.perf_counter()
        return status

    def _leave(self) -> float:
        """The app is done (called from a ``finally``): no longer in flight, one more
        request served. Returns how long the app ran."""
        state = self.state
        state.in_flight -= 1
        # ServerState.count_request() inlined for the usual case (no max_requests): one
        # call less per request.
        state.requests_served += 1
        if state.request_limit is not None:
            state.count_request(served=True)
        return time.perf_counter() - self._started

    def log_access(
        self,
        status: int | None,
        headers: Headers | None,
        sent: int,
        duration: float,
        target: bytes | None = None,
        complete: bool = True,
    ) -> None:
        """The access-log line for this exchange. The caller has checked that the access
        log is on (``access_log.isEnabledFor(INFO)``), so a server without one pays no
        call here."""
        atoms = AccessLogAtoms(
            self.scope, status, headers, sent, duration, time.time(), target, complete
        )
        access_log.info(format_access_line(self.state.config.access_log_format, atoms))

    def _report_app_error(self, exc: BaseException, what: str, *, gone: bool) -> None:
        """Log an exception out of the app once. With the peer ``gone``, one that is only
        the client leaving (in the app's words) is logged at debug and not counted;
        anything else counts as ``app_exception``."""
        if gone and caused_by_disconnect(exc):
            error_log.debug("client went away during %s", what)
            return
        self.state.metrics.app_exception()
        ids = {"request_id": self.scope.get("request_id")}
        if isinstance(exc, UnexpectedMessage):
            # The traceback points at the app's offending send().
            error_log.error("ASGI protocol error in %s: %s", what, exc, exc_info=exc, extra=ids)
            return
        report_needs_asyncio(exc)
        error_log.error("Exception in ASGI application (%s)", what, exc_info=exc, extra=ids)


def caused_by_disconnect(exc: BaseException) -> bool:
    """Whether an app error is just the client leaving, re-raised in the app's words.

    Frameworks catch our ``OSError`` from ``send()`` and raise their own exception
    (Starlette's ``ClientDisconnect``), sometimes inside an exception group.
    """
    return any(isinstance(each, ClientDisconnected) for each in exception_tree(exc))

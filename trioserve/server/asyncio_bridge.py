"""``loop = "asyncio"``: asyncio-bound apps on a real asyncio event loop, one per worker.

Most real apps reach asyncio somewhere (asyncpg, SQLAlchemy's asyncio engine,
``redis.asyncio``, aiohttp, Django's async views), and fail on plain trio with "no running
event loop". In asyncio mode the worker runs an asyncio loop (uvloop's when installed) in a
thread of its own (:mod:`.asyncio_loop`), and the server stays trio (sockets, parsers,
timeouts, shutdown); only the app's calls cross over (:mod:`.asyncio_call`):

- each call of the app (lifespan, each HTTP request, each WebSocket) runs as an
  ``asyncio.Task`` on the worker's one loop, so asyncio libraries do their I/O on that loop
  at native speed, and objects made at startup (connection pools) belong to the loop every
  request runs on;
- the app's ``receive``/``send`` run back in the connection's trio task, so disconnects keep
  their meaning (``http.disconnect``, ``ClientDisconnected``);
- cancelling the connection's trio task (the graceful-shutdown deadline, a second Ctrl-C)
  cancels the asyncio task, which sees ``CancelledError`` as under any asyncio server, and
  the trio task waits for it to end.

In trio mode (the default) nothing here runs per request: :func:`app_runner` returns the
app unchanged and a context manager that does nothing, and no loop or thread is made.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable, MutableMapping
from typing import Any

from ..importer import ASGIApp
from ..logs import error_log
from .faults import exception_tree

if sys.version_info < (3, 11):  # pragma: no cover
    pass

__all__ = ["app_runner", "needs_asyncio", "report_needs_asyncio"]

Message = MutableMapping[str, Any]


def app_runner(
    app: ASGIApp, loop: str, *, reset_contextvars: bool = False
) -> tuple[ASGIApp, contextlib.AbstractAsyncContextManager[None]]:
    """The app to serve and the context to serve it in, for the ``loop`` option.

    ``serve()`` calls this once and runs everything (lifespan included) inside the context.
    """
    _hinted.clear()
    _hinted["loop"] = loop
    if loop != "asyncio":
        return app, contextlib.nullcontext()
    from .asyncio_loop import AsyncioLoop  # asyncio mode only

    bridged = _AsyncioApp(app, AsyncioLoop(reset_contextvars=reset_contextvars))
    return bridged, bridged.runner.open()


class _AsyncioApp:
    """The app, called as an asyncio task on the loop its runner keeps open."""

    # ASGI 3 although __call__ is not a coroutine function (see __call__): importer.as_asgi3
    # must not take it for an ASGI 2 app when it is served as it is (tests, the fixtures).
    _trioserve_adapted = True

    def __init__(self, app: ASGIApp, runner: Any) -> None:
        from .asyncio_call import AppCall

        self.app = app
        self.runner = runner
        self._call = AppCall

    def __call__(self, scope: Message, receive: Any, send: Any) -> Awaitable[None]:
        # Not a coroutine function: the call's own coroutine is awaited directly, one frame
        # fewer for every resumption of the connection's task while the app runs.
        if self.runner.loop is None:
            raise RuntimeError("the asyncio loop is not open (serve the app with serve())")
        return self._call(self.runner, scope, receive, send).run(self.app)


# What asyncio-bound code raises when it finds trio instead of a running asyncio loop.
_ASYNCIO_SIGNS = (
    "no running event loop",  # asyncio.get_running_loop(), create_task(), current_task()
    "no current event loop",  # asyncio.get_event_loop() (3.12+)
    "should be used inside a task",  # asyncio.timeout(), async_timeout
    "unrecognized yield message",  # trio was handed an asyncio future
    "requires asyncio",
    "must be run in asyncio",
)
# Per serve(): its loop option, and whether the one hint was given.
_hinted: dict[str, str] = {}


def needs_asyncio(exc: BaseException) -> bool:
    """Whether ``exc`` (or its causes, or an exception group's members) says the app
    needs a running asyncio loop."""
    return any(_says_asyncio(each) for each in exception_tree(exc))


def _says_asyncio(exc: BaseException) -> bool:
    if not isinstance(exc, (RuntimeError, TypeError, NotImplementedError)):
        return False
    text = str(exc).lower()
    if any(sign in text for sign in _ASYNCIO_SIGNS):
        return True
    return "asyncio" in text and "trio" in text  # "only asyncio is supported, not trio"


def report_needs_asyncio(failure: BaseException | str) -> None:
    """Log one line naming ``--loop asyncio`` if ``failure`` shows the app needs asyncio.

    ``failure`` is the app's exception, or the text a framework reported it with (a
    lifespan ``startup.failed`` message). Once per ``serve()``: each failure keeps its
    own traceback; the advice need not repeat. In asyncio mode the advice is the reverse
    one: trio code awaited straight from an asyncio task fails with "Task got bad yield".
    """
    if isinstance(failure, str):
        text = failure.lower()
        uses_asyncio = any(sign in text for sign in _ASYNCIO_SIGNS)
    else:
        text = _messages(failure)
        uses_asyncio = needs_asyncio(failure)
    if _hinted.get("loop") == "asyncio":
        found = "got bad yield" in text
        advice = (
            "The app awaited trio code inside asyncio ('Task got bad yield'): with "
            "--loop asyncio the app runs on an asyncio event loop, where trio code cannot "
            "run; use anyio or asyncio there, or serve the app in trio mode. "
            "See docs/asyncio.md."
        )
    else:
        found = uses_asyncio
        advice = (
            "The app uses asyncio (it failed with 'no running event loop' or similar), and "
            "trioserve runs apps on trio by default: start it with --loop asyncio "
            "(loop = \"asyncio\"; 'trioserve[asyncio]' adds uvloop). See docs/asyncio.md."
        )
    if found and not _hinted.get("done"):
        _hinted["done"] = "yes"
        error_log.error(advice)


def _messages(exc: BaseException) -> str:
    """The lower-cased messages of ``exc`` and its causes."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 20:
        parts.append(str(current).lower())
        current = current.__cause__ or current.__context__
    return " ".join(parts)

"""``loop = "asyncio"``: asyncio-bound apps on trio, through one trio-asyncio loop per worker.

Most real apps reach asyncio somewhere (asyncpg, SQLAlchemy's asyncio engine,
``redis.asyncio``, aiohttp, Django's async views), and fail on plain trio with "no running
event loop". trio-asyncio runs an asyncio event loop inside trio. The server stays trio
(sockets, timeouts, shutdown); only the app's calls cross over:

- each call of the app (lifespan, each HTTP request, each WebSocket) runs as a real
  ``asyncio.Task`` on the worker's one loop, so ``asyncio.current_task()``,
  ``asyncio.timeout()`` and everything built on them work, and objects made at startup
  (connection pools) belong to the loop every request runs on;
- the app's ``receive``/``send`` run back in trio, so disconnects keep their meaning
  (``http.disconnect``, ``ClientDisconnected``);
- cancelling the connection's trio task (the graceful-shutdown deadline, a second Ctrl-C)
  cancels the asyncio task, which sees ``CancelledError`` as under any asyncio server.

Why not ``trio_asyncio.allow_asyncio``: it runs the app in a trio task, so libraries that
need ``asyncio.current_task()`` (``asyncio.timeout()``, redis.asyncio, aiohttp) fail.

In trio mode (the default) nothing here runs per request: :func:`app_runner` returns the
app unchanged and a context manager that does nothing. trio_asyncio patches asyncio's
event-loop policy when imported, so it is imported only in asyncio mode.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from ..importer import ASGIApp
from ..logs import error_log

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["app_runner", "needs_asyncio", "report_needs_asyncio"]

Message = MutableMapping[str, Any]


def app_runner(
    app: ASGIApp, loop: str
) -> tuple[ASGIApp, contextlib.AbstractAsyncContextManager[None]]:
    """The app to serve and the context to serve it in, for the ``loop`` option.

    ``serve()`` calls this once and runs everything (lifespan included) inside the context.
    """
    _hinted.clear()
    if loop != "asyncio":
        return app, contextlib.nullcontext()
    bridged = _AsyncioApp(app)
    return bridged, bridged.open_loop()


class _AsyncioApp:
    """The app, called as an asyncio task on the loop :meth:`open_loop` keeps open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.loop: Any = None  # a trio_asyncio.TrioEventLoop while serving

    @contextlib.asynccontextmanager
    async def open_loop(self) -> AsyncIterator[None]:
        import trio_asyncio

        async with trio_asyncio.open_loop() as loop:
            _accept_any_executor(loop, trio_asyncio.TrioExecutor)
            self.loop = loop
            _running.append(loop)
            _mark_running()
            try:
                yield
            finally:
                self.loop = None
                _running.remove(loop)
                _mark_running()
                _cancel_leaked_tasks(loop)

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        import asyncio

        loop = self.loop
        if loop is None:
            raise RuntimeError("the asyncio loop is not open (serve the app with serve())")
        call = self._call(scope, _to_asyncio(loop, receive), _to_asyncio(loop, send))
        try:
            await loop.run_aio_coroutine(call)
        except asyncio.CancelledError as exc:
            # trio was not cancelling us (that arrives as trio.Cancelled): the app's task
            # was cancelled from inside asyncio. An app failure, not a server one.
            raise RuntimeError("the app's asyncio task was cancelled") from exc

    async def _call(self, scope: Message, receive: Any, send: Any) -> None:
        # Called (not only awaited) inside the task: an app whose __call__ does asyncio
        # work before its first await finds a running loop.
        await self.app(scope, receive, send)


def _to_asyncio(loop: Any, proc: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``proc`` (trio) as an asyncio coroutine function, run in a trio task of ``loop``.

    A coroutine function rather than trio_asyncio's future-returning wrapper, so apps may
    pass ``receive()`` to ``asyncio.create_task``.
    """
    as_future = loop.trio_as_future

    async def call(*args: Any) -> Any:
        return await as_future(proc, *args)

    return call


# The loops open in this thread (one per worker; more only when a test runs several servers).
_running: list[Any] = []


def _mark_running() -> None:
    """Make the open loop asyncio's running loop for this thread, at the C level too.

    trio_asyncio patches ``asyncio.get_running_loop`` when it is imported, but a module that
    took the function before that (anyio's asyncio backend does, with ``from asyncio import
    get_running_loop``) still has the original, which reads this thread-local slot: left
    empty, anyio task groups fail with "no running event loop". Event loops fill the slot
    with ``_set_running_loop`` while they run; so do we, while the worker's loop is open.
    """
    import asyncio.events

    asyncio.events._set_running_loop(_running[-1] if _running else None)


def _accept_any_executor(loop: Any, trio_executor: type[Any]) -> None:
    """Let ``loop.run_in_executor`` take any ``concurrent.futures`` executor.

    trio-asyncio accepts only its own TrioExecutor (or None) and fails an assertion on
    anything else, but asgiref (so every Django request) and other libraries pass their own
    thread pools. Those get what asyncio's own loop does for them: the job is submitted to
    that executor and its future wrapped for the loop.
    """
    import asyncio

    default = loop.run_in_executor

    def run_in_executor(executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        if executor is None or isinstance(executor, trio_executor):
            return default(executor, func, *args)
        return asyncio.wrap_future(executor.submit(func, *args), loop=loop)

    loop.run_in_executor = run_in_executor


def _cancel_leaked_tasks(loop: Any) -> None:
    """Name every asyncio task the app left running; trio-asyncio then cancels them all."""
    import asyncio

    for task in asyncio.all_tasks(loop):
        if task.done():
            continue
        coro = task.get_coro()
        where = getattr(coro, "__qualname__", None) or repr(coro)
        error_log.warning(
            "asyncio task %r (%s) was still running at shutdown: the app started it and "
            "never awaited or cancelled it; cancelling it",
            task.get_name(),
            where,
        )
        task.cancel()


# What asyncio-bound code raises when it finds trio instead of a running asyncio loop.
_ASYNCIO_SIGNS = (
    "no running event loop",  # asyncio.get_running_loop(), create_task(), current_task()
    "no current event loop",  # asyncio.get_event_loop() (3.12+)
    "should be used inside a task",  # asyncio.timeout(), async_timeout
    "unrecognized yield message",  # trio was handed an asyncio future
    "requires asyncio",
    "must be run in asyncio",
)
_hinted: set[str] = set()  # once per serve(): the first asyncio failure gets the hint


def needs_asyncio(exc: BaseException) -> bool:
    """Whether ``exc`` (or its causes, or an exception group's members) says the app
    needs a running asyncio loop."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (RuntimeError, TypeError)):
            text = str(current).lower()
            if any(sign in text for sign in _ASYNCIO_SIGNS):
                return True
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend((current.__cause__, current.__context__))
    return False


def report_needs_asyncio(failure: BaseException | str) -> None:
    """Log one line naming ``--loop asyncio`` if ``failure`` shows the app needs asyncio.

    ``failure`` is the app's exception, or the text a framework reported it with (a
    lifespan ``startup.failed`` message). Once per ``serve()``: each failure keeps its
    own traceback; the advice need not repeat.
    """
    if isinstance(failure, str):
        found = any(sign in failure.lower() for sign in _ASYNCIO_SIGNS)
    else:
        found = needs_asyncio(failure)
    if not found or _hinted:
        return
    _hinted.add("asyncio")
    error_log.error(
        "The app uses asyncio (it failed with 'no running event loop' or similar), and "
        "trioserve runs apps on trio by default: start it with --loop asyncio "
        "(loop = \"asyncio\"; pip install 'trioserve[asyncio]'). See docs/asyncio.md."
    )

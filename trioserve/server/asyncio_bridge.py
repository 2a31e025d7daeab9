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
import contextvars
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, MutableMapping
from typing import Any

import sniffio
import trio

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
    _hinted["loop"] = loop
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
        trio_asyncio = _import_trio_asyncio()
        loop: Any = None
        try:
            async with trio_asyncio.open_loop() as loop:
                _accept_any_executor(loop, trio_asyncio.TrioExecutor)
                self.loop = loop
                _running.append(loop)
                _mark_running()
                try:
                    yield
                finally:
                    self.loop = None
                    _cancel_leaked_tasks(loop)  # trio-asyncio waits for them on the way out
        finally:
            # Only now: leaked tasks unwind while the loop closes, and may need it.
            if loop in _running:
                _running.remove(loop)
                _mark_running()

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        loop = self.loop
        if loop is None:
            raise RuntimeError("the asyncio loop is not open (serve the app with serve())")
        await _AppCall(loop, receive, send).run(self.app, scope)


class _AppCall:
    """One call of the app: its asyncio task, driven from the trio task that made the call.

    The app's ``receive()``/``send()`` are run by that trio task itself, inline: the asyncio
    side queues the call and wakes it, and the answer resumes the asyncio task right there
    (:func:`_answer`). So they run inside the connection's cancel scopes, and a crossing
    costs one trio scheduler round, where a new trio task through trio-asyncio's queue
    (``trio_as_future``) costs several. A call made while another one is queued or running
    (an app receiving and sending at once) cannot wait for it, and goes through
    ``trio_as_future``; so does one made after the app call returned.

    Every asyncio callback is one more trip through trio-asyncio's queue, so none is added
    that can be avoided: the app's outcome is recorded by the task itself (no done
    callback), and a crossing the asyncio side gives up on is noticed where it raises.
    A FastAPI request costs 2 scheduler rounds and 1 queue item (the task's first step).
    """

    def __init__(self, loop: Any, receive: Any, send: Any) -> None:
        self.loop = loop
        self.trio_task = trio.lowlevel.current_task()
        self.parked = False
        self.app_done = False
        self.error: BaseException | None = None  # what the app raised
        self.finished = False  # the trio side has returned: crossings go through trio-asyncio
        # The one inline call: (proc, args, asyncio future for its outcome), or None.
        self.queued: tuple[Any, tuple[Any, ...], Any] | None = None
        self.busy = False  # a call is queued or running inline
        # The call running inline: its future and the scope that cancels it.
        self.inline: tuple[Any, trio.CancelScope] | None = None
        self.receive = self._crossing(receive)
        self.send = self._crossing(send)

    def _crossing(self, proc: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        import asyncio

        async def call(*args: Any) -> Any:  # runs in the app's asyncio task
            if self.busy or self.finished:
                return await self.loop.trio_as_future(proc, *args)
            self.busy = True
            future = _answer(self.loop)
            self.queued = (proc, args, future)
            self._wake()
            try:
                return await future
            except asyncio.CancelledError:
                self._given_up(future)
                raise

        return call

    def _wake(self) -> None:
        if self.parked:
            self.parked = False
            trio.lowlevel.reschedule(self.trio_task)

    def _given_up(self, future: Any) -> None:
        """The asyncio side stopped waiting (a timeout, a cancel scope): so does trio."""
        future.cancel()
        if self.queued is not None and self.queued[2] is future:
            self.queued = None
            self.busy = False
        elif self.inline is not None and self.inline[0] is future:
            self.inline[1].cancel()

    async def _drive(self, app: ASGIApp, scope: Message) -> None:
        """The asyncio task. Called (not only awaited) inside it, so an app whose __call__
        does asyncio work before its first await finds a running loop."""
        import asyncio

        try:
            await app(scope, self.receive, self.send)
        except (Exception, asyncio.CancelledError) as exc:
            self.error = exc  # raised on the trio side; the task itself ends quietly
        finally:
            self.app_done = True
            self._wake()

    async def run(self, app: ASGIApp, scope: Message) -> None:
        import asyncio

        task = self.loop.create_task(self._drive(app, scope))
        raise_cancel: Callable[[], Any] | None = None
        trio_cancelled = False

        def abort(raise_cancel_arg: Callable[[], Any]) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            raise_cancel = raise_cancel_arg
            task.cancel()  # the app sees CancelledError; we wait until it is done
            return trio.lowlevel.Abort.FAILED

        try:
            while not self.app_done:
                if self.queued is not None:
                    trio_cancelled |= await self._run_queued(task)
                    continue
                self.parked = True
                await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self.finished = True
        error, self.error = self.error, None
        if isinstance(error, asyncio.CancelledError):
            if raise_cancel is not None:
                raise_cancel()
            if trio_cancelled:
                await trio.lowlevel.checkpoint()  # raises trio.Cancelled again
            # trio was not cancelling us: the app's task was cancelled inside asyncio.
            raise RuntimeError("the app's asyncio task was cancelled") from error
        if error is not None:
            raise error
        if raise_cancel is not None:  # the app swallowed its CancelledError: trio's stands
            raise_cancel()
        if trio_cancelled:
            await trio.lowlevel.checkpoint()

    async def _run_queued(self, task: Any) -> bool:
        """Run the queued receive()/send() here; True if trio cancelled this task meanwhile."""
        assert self.queued is not None
        proc, args, answer = self.queued
        self.queued = None
        scope = trio.CancelScope()
        self.inline = (answer, scope)
        result = None  # stays None if the asyncio side gave up (the scope was cancelled)
        try:
            with scope:
                result = await proc(*args)
        except trio.Cancelled:
            # Our own task is cancelled (scope.cancelled_caught would mean only the asyncio
            # side gave up): the app's task is cancelled and waited for.
            self.inline, self.busy = None, False
            task.cancel()
            return True
        except Exception as exc:
            outcome: tuple[Any, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        # Free before the app resumes: its next crossing may come right away.
        self.inline, self.busy = None, False
        answer.resolve(*outcome)  # a no-op if the asyncio side gave up meanwhile
        return False


_ANSWER_CLASS: list[type[Any]] = []


def _answer(loop: Any) -> Any:
    """A new :class:`_Answer` (the class is made on first use: asyncio mode only)."""
    if not _ANSWER_CLASS:
        _ANSWER_CLASS.append(_make_answer_class())
    return _ANSWER_CLASS[0](loop)


def _make_answer_class() -> type[Any]:
    import asyncio

    class _Answer(asyncio.Future):  # type: ignore[type-arg]
        """The outcome of one receive()/send() crossing, awaited by the app's task.

        An ``asyncio.Future`` hands its result to the waiting task through
        ``loop.call_soon``: under trio-asyncio one more trip through the loop's queue and
        one more scheduler round per crossing. This one resumes the task at once, from the
        trio task that produced the answer, with sniffio saying "asyncio" as trio-asyncio
        does around its callbacks. Cancellation goes through the loop, as usual. It is an
        ``asyncio.Future`` for ``isinstance`` checks (anyio's cancel scopes look at the
        task's waiter), but keeps its own state: every method a task or anyio uses is here.
        """

        def __init__(self, loop: Any) -> None:
            super().__init__(loop=loop)
            self._answer_loop = loop
            self._waiters: list[tuple[Callable[[Any], Any], contextvars.Context]] = []
            self._outcome = "pending"  # or "result", "error", "cancelled"
            self._value: Any = None
            self._asyncio_future_blocking = False

        def get_loop(self) -> Any:
            return self._answer_loop

        def done(self) -> bool:
            return self._outcome != "pending"

        def cancelled(self) -> bool:
            return self._outcome == "cancelled"

        def add_done_callback(
            self, fn: Callable[[Any], Any], *, context: contextvars.Context | None = None
        ) -> None:
            context = context if context is not None else contextvars.copy_context()
            if self.done():
                self._answer_loop.call_soon(fn, self, context=context)
            else:
                self._waiters.append((fn, context))

        def remove_done_callback(self, fn: Callable[[Any], Any]) -> int:
            kept = [(f, c) for f, c in self._waiters if f != fn]
            removed = len(self._waiters) - len(kept)
            self._waiters = kept
            return removed

        def result(self) -> Any:
            if self._outcome == "cancelled":
                # With the canceller's message: anyio tells its own cancellations by it.
                raise asyncio.CancelledError(*self._value)
            if self._outcome == "pending":
                raise asyncio.InvalidStateError("the crossing has not finished")
            if self._outcome == "error":
                raise self._value
            return self._value

        def exception(self) -> BaseException | None:
            if self._outcome in ("cancelled", "pending"):
                self.result()  # raises, as asyncio.Future.exception() does
            return self._value if self._outcome == "error" else None

        def cancel(self, msg: Any = None) -> bool:
            if self.done():
                return False
            self._outcome = "cancelled"
            self._value = () if msg is None else (msg,)
            waiters, self._waiters = self._waiters, []
            for fn, context in waiters:
                self._answer_loop.call_soon(fn, self, context=context)
            return True

        def resolve(self, value: Any, error: BaseException | None) -> None:
            """Set the outcome and resume the waiting task now (called from trio)."""
            if self.done():
                return
            self._outcome = "error" if error is not None else "result"
            self._value = error if error is not None else value
            waiters, self._waiters = self._waiters, []
            previous = sniffio.thread_local.name
            sniffio.thread_local.name = "asyncio"
            try:
                for fn, context in waiters:
                    context.run(fn, self)
            finally:
                sniffio.thread_local.name = previous

        def __await__(self) -> Generator[Any, None, Any]:
            if not self.done():
                self._asyncio_future_blocking = True
                yield self
            return self.result()

        __iter__ = __await__

    return _Answer


def _import_trio_asyncio() -> Any:
    """trio_asyncio, without the DeprecationWarning its import raises on Python 3.12+ (it
    subclasses asyncio's AbstractChildWatcher): nothing the user of trioserve can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'AbstractChildWatcher'", DeprecationWarning)
        import trio_asyncio
    return trio_asyncio


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
# Per serve(): its loop option, and whether the one hint was given.
_hinted: dict[str, str] = {}


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
        if isinstance(current, (RuntimeError, TypeError, NotImplementedError)):
            text = str(current).lower()
            if any(sign in text for sign in _ASYNCIO_SIGNS):
                return True
            if "asyncio" in text and "trio" in text:  # "only asyncio is supported, not trio"
                return True
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend((current.__cause__, current.__context__))
    return False


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
            "The app awaited trio code directly inside asyncio ('Task got bad yield'): with "
            "--loop asyncio, call trio functions through trio_asyncio.trio_as_aio(...). "
            "See docs/asyncio.md."
        )
    else:
        found = uses_asyncio
        advice = (
            "The app uses asyncio (it failed with 'no running event loop' or similar), and "
            "trioserve runs apps on trio by default: start it with --loop asyncio "
            "(loop = \"asyncio\"; pip install 'trioserve[asyncio]'). See docs/asyncio.md."
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

"""The worker's asyncio event loop, on a thread of its own (``loop = "asyncio"``).

One loop per ``serve()``: uvloop's when uvloop is installed, else asyncio's own. It runs in a
plain thread for as long as the server serves (lifespan included), so asyncio libraries
(asyncpg, redis.asyncio, aiohttp) wait on their sockets in that loop's own selector, at
native speed, while trio keeps the HTTP side. Only public asyncio APIs are used: a new loop,
``run_until_complete``, ``add_reader``, ``shutdown_asyncgens`` and
``shutdown_default_executor``; on trio's side, an instrument and ``wait_readable``. The two
threads wake each other with one byte on a socket pair of ours each way, sent with the GIL
let go, once per stretch of work.

Every app call gets its own asyncio task, created in a fresh copy of the context the loop
started with (a copy of ``serve()``'s own, as under ``asyncio.run()``), or in an empty
context under ``reset_contextvars``: a ContextVar one request sets is never seen by the
next one, even on the same keep-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import trio

from ..logs import error_log

__all__ = ["AsyncioLoop"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (the ``asyncio`` extra pulls it in where it
    builds), else asyncio's default one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def freeze_heap() -> bool:
    """Move every object alive now (the app's modules, classes, routes) out of the garbage
    collector's reach until :func:`gc.unfreeze`; True if done here, False if someone else
    (the app, a pre-forking parent) froze the heap already: theirs to undo, not ours.

    A full collection scans the whole heap while holding the GIL, so it stalls both of the
    worker's threads at once: with FastAPI and asyncpg loaded, 30-50 ms more than once a
    second under load, every request then in flight waiting, which was the asyncpg route's
    p99 (docs/asyncio.md). Frozen, the heap of start-up is no longer scanned, and a full
    collection covers only what requests made since (4-8 ms there)."""
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


class AsyncioLoop(trio.abc.Instrument):
    """An asyncio loop running in its own thread while :meth:`open` is entered (and an
    instrument of trio's run meanwhile: see :meth:`before_io_wait`)."""

    # The wake-up socket pairs (made by open()): the loop's end for trio, trio's for the loop.
    _wake_send: socket.socket
    _to_loop_recv: socket.socket
    _to_loop_send: socket.socket

    def __init__(self, *, reset_contextvars: bool = False) -> None:
        self.reset_contextvars = reset_contextvars
        self.loop: asyncio.AbstractEventLoop | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self._base = contextvars.Context()  # replaced by the loop thread's own at start
        self._stop: asyncio.Event | None = None
        # asyncio -> trio: app calls whose trio task has something to do.
        self._to_wake: deque[Any] = deque()
        self._flush_scheduled = False  # loop thread: _flush_wakes is on the loop's queue
        self._wake_pending = False  # a byte is on its way to _waker
        # trio -> asyncio: callbacks for the loop's thread, sent when trio goes idle.
        self._to_asyncio: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._drain_pending = False  # _drain is on the loop's queue

    # Each side tells the other about its work once per stretch of its own work, when that
    # stretch ends (trio: before it waits for I/O; asyncio: after the tasks that were
    # ready), not once per message: under load each wake-up carries many requests, and the
    # thread woken finds the GIL free. Every hand-off appends before it reads the flag and
    # the receiving side clears the flag before it drains, so nothing is left behind.

    def wake_trio(self, call: Any) -> None:
        """Have trio call ``call._wake()`` soon (called in the loop's thread)."""
        self._to_wake.append(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush_wakes)

    def _flush_wakes(self) -> None:
        self._flush_scheduled = False
        if self._to_wake and not self._wake_pending:
            self._wake_pending = True
            # One byte on our own socket pair, which trio's poll watches (see _waker): what
            # TrioToken.run_sync_soon does, without its lock, its queue and its task's
            # second recv.
            try:  # (not contextlib.suppress: three calls fewer)
                self._wake_send.send(b"\0")
            except OSError:  # full (a byte is there), or closed
                pass

    async def _waker(self, wake_recv: socket.socket, scope: trio.CancelScope) -> None:
        """trio's end of the wake-ups: clears the socket, then wakes what is left to wake."""
        with scope, wake_recv:
            while True:
                await trio.lowlevel.wait_readable(wake_recv)
                try:
                    wake_recv.recv(4096)
                except BlockingIOError:
                    pass
                self._wake_pending = False
                self.after_io_wait(0)

    def after_io_wait(self, timeout: float) -> None:
        """trio's instrument hook: the calls woken meanwhile are rescheduled now, before
        trio picks this round's batch, so they run in it. Woken from the task that clears
        the wake-up socket instead (``_waker``), they would wait a round (another poll)."""
        to_wake = self._to_wake
        while to_wake:
            to_wake.popleft()._wake()

    def post_to_asyncio(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` in the loop's thread (called in trio's), in order."""
        self._to_asyncio.append((callback, args))

    def before_io_wait(self, timeout: float) -> None:
        """trio's instrument hook: trio is about to wait, so the loop gets its work now."""
        if self._to_asyncio and not self._drain_pending:
            self._drain_pending = True
            # A byte on the loop's wake-up socket (see _drain), sent with the GIL let go
            # (socket.send does), so the loop's thread, woken, finds it free; uvloop's
            # call_soon_threadsafe wakes it while we hold the GIL, to wait for it.
            try:
                self._to_loop_send.send(b"\0")
            except OSError:  # full (a byte is there), or closed
                pass

    def _drain(self) -> None:
        """The loop's end of trio's wake-ups: clear the socket, run what trio sent."""
        try:
            self._to_loop_recv.recv(4096)
        except BlockingIOError:
            pass
        self._drain_pending = False
        work = self._to_asyncio
        while work:
            callback, args = work.popleft()
            try:
                callback(*args)
            except Exception as exc:  # pragma: no cover - a bug of ours; the rest still runs
                error_log.error("asyncio bridge callback failed", exc_info=exc)

    def start_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task for one app call (called in the loop's thread), in its own context."""
        assert self.loop is not None
        context = contextvars.Context() if self.reset_contextvars else self._base.copy()
        # Context.run rather than create_task(context=...): the latter is Python 3.11+.
        return context.run(self.loop.create_task, coro)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Start the loop's thread, serve, then stop the loop and wait for the thread."""
        self.token = trio.lowlevel.current_trio_token()
        ready, ended = trio.Event(), trio.Event()
        wake_recv, self._wake_send = socket.socketpair()
        self._to_loop_recv, self._to_loop_send = socket.socketpair()
        for sock in (wake_recv, self._wake_send, self._to_loop_recv, self._to_loop_send):
            sock.setblocking(False)
        waker = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._waker, wake_recv, waker, name="asyncio wake-ups")
        try:
            await self._start_thread(ready, ended)
            trio.lowlevel.add_instrument(self)
            frozen = freeze_heap()
            try:
                yield
            finally:
                if frozen:
                    gc.unfreeze()
                trio.lowlevel.remove_instrument(self)
                if self._stop is not None:  # after what trio still had for the loop, in order
                    self.post_to_asyncio(self._stop.set)
                self.before_io_wait(0)
                # Leaked tasks unwind now; one that ignores cancellation keeps us waiting, as
                # it would keep asyncio.run() waiting.
                with trio.CancelScope(shield=True):
                    await ended.wait()
                self.loop = None
        finally:
            waker.cancel()  # (it closes wake_recv)
            for sock in (self._wake_send, self._to_loop_recv, self._to_loop_send):
                sock.close()

    async def _start_thread(self, ready: trio.Event, ended: trio.Event) -> None:
        failure: list[BaseException] = []
        # The loop starts in a copy of the context serve() was called in, as asyncio.run()
        # would (what a request sees of it is a copy again: see start_task).
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._thread_main, ready, ended, failure),
            name="trioserve-asyncio",
            daemon=True,  # a task that ignores cancellation must not keep the process alive
        )
        thread.start()
        with trio.CancelScope(shield=True):
            await ready.wait()
        if failure:
            raise failure[0]

    def _thread_main(
        self, ready: trio.Event, ended: trio.Event, failure: list[BaseException]
    ) -> None:
        token = self.token
        assert token is not None
        try:
            loop = new_event_loop()
        except BaseException as exc:  # pragma: no cover - a broken uvloop install
            failure.append(exc)
            token.run_sync_soon(ready.set)
            token.run_sync_soon(ended.set)
            return
        self._base = contextvars.copy_context()
        try:
            loop.run_until_complete(self._main(loop, lambda: token.run_sync_soon(ready.set)))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        except BaseException as exc:  # pragma: no cover - the loop itself failed
            error_log.error("the asyncio loop failed", exc_info=exc)
        finally:
            loop.close()
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(ended.set)

    async def _main(self, loop: asyncio.AbstractEventLoop, started: Callable[[], None]) -> None:
        """Runs while the server serves; at the end, names and cancels leaked tasks."""
        self._stop = asyncio.Event()
        loop.add_reader(self._to_loop_recv, self._drain)
        self.loop = loop
        started()
        await self._stop.wait()
        loop.remove_reader(self._to_loop_recv)
        await cancel_leaked_tasks()


async def cancel_leaked_tasks() -> None:
    """Name every asyncio task the app left running, cancel them all, and wait for them."""
    current = asyncio.current_task()
    leaked = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in leaked:
        coro = task.get_coro()
        where = getattr(coro, "__qualname__", None) or repr(coro)
        error_log.warning(
            "asyncio task %r (%s) was still running at shutdown: the app started it and "
            "never awaited or cancelled it; cancelling it",
            task.get_name(),
            where,
        )
        task.cancel()
    if leaked:
        await asyncio.gather(*leaked, return_exceptions=True)

"""One call of an asyncio-mode app: its asyncio task, driven from the trio task that made it.

The app's task runs on the worker's asyncio loop (another thread, see ``asyncio_loop``); its
``receive()``/``send()`` cross back to the connection's trio task, which runs them, so
disconnects, deadlines and HTTP state stay trio's. Each crossing is one item in a queue the
trio task drains; answers go back in a queue the loop drains; each side wakes the other once
per stretch of its work (:class:`~.asyncio_loop.AsyncioLoop`). A thread hand-off costs a
wake-up and a GIL hand-over, so a plain request makes as few as possible:

- the first ``receive()`` of an HTTP request is answered before the task starts when the
  body is already in hand (every GET, most small POSTs): no crossing;
- ``http.response.start`` and the last ``http.response.body`` are sent without waiting for
  trio's answer (as a write to an asyncio transport does not wait). A failure there is raised
  by the app's next ``send()``, or on the trio side after the app returns; once the app has
  seen ``http.disconnect``, every ``send()`` waits, so it raises ``ClientDisconnected`` there.
  So a JSON response costs two hand-offs: the task's start, and the response with the end.

``receive()`` crossings run in trio tasks of their own (a receive waiting for the client to
leave must not hold up the response's sends); sends run in order in the call's trio task.
A ``receive()`` the asyncio side gives up on (``asyncio.wait_for``, a cancelled anyio scope)
goes on in trio, and its answer is kept for the next ``receive()``, which returns it at once,
without waiting: that is how Starlette's ``is_disconnected()``, which polls ``receive()``
inside an already-cancelled scope, sees the client leave.

The call's lifetime is the trio task's: cancelling it (the shutdown deadline) cancels the
asyncio task, and the trio task returns only once the asyncio task has ended.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any

import trio

from ..errors import ClientDisconnected
from .asyncio_loop import AsyncioLoop

__all__ = ["AppCall"]

Message = MutableMapping[str, Any]
_RECEIVE, _SEND, _DONE = 0, 1, 2
# (kind, message or outcome, asyncio future awaiting the answer or None)
_Item = tuple[int, Any, "asyncio.Future[Any] | None"]
# _serve() without a nursery met a receive() crossing.
_NEEDS_NURSERY = RuntimeError("a receive() crossing needs a nursery")
# A receive() answer: (message, None) or (None, exception).
_Outcome = tuple[Any, "BaseException | None"]


class AppCall:
    """Both halves of one app call; the trio half is :meth:`run`."""

    __slots__ = (
        "answers",
        "cancelled",
        "closed",
        "ending",
        "http",
        "inbox",
        "lanes",
        "loop",
        "parked",
        "pending_failure",
        "raise_cancel",
        "receiving",
        "runner",
        "saw_disconnect",
        "scope",
        "send_failure",
        "task",
        "trio_receive",
        "trio_send",
        "trio_task",
        "waiters",
        "wake_pending",
    )

    def __init__(self, runner: AsyncioLoop, scope: Message, receive: Any, send: Any) -> None:
        loop = runner.loop
        assert loop is not None
        self.runner, self.loop = runner, loop
        self.scope = scope
        self.http = scope["type"] == "http"
        self.trio_receive, self.trio_send = receive, send
        # Shared between the threads: deque appends and pops are atomic.
        self.inbox: deque[_Item] = deque()
        # -- the trio side's state
        self.trio_task = trio.lowlevel.current_task()
        self.parked = False
        self.wake_pending = False  # a _wake is on its way to trio: no need for another
        self.lanes = 0  # receive() crossings running in trio, not yet answered
        self.cancelled = False  # trio cancelled this call
        self.raise_cancel: Callable[[], Any] | None = None
        self.send_failure: BaseException | None = None  # from a send nobody waited for
        self.ending = False
        # -- the asyncio side's state (touched only in the loop's thread)
        self.task: asyncio.Task[None] | None = None
        self.closed = False  # the trio side has returned
        self.answers: deque[_Outcome] = deque()  # receive() answers nobody waited for
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.receiving = False  # a receive() crossing is under way in trio
        self.saw_disconnect = False
        self.pending_failure: BaseException | None = None

    # -- the asyncio side -------------------------------------------------------------------
    async def receive(self) -> Any:
        """The app's ``receive()``: an answer already in hand comes back without waiting."""
        if self.answers:
            return self._took(self.answers.popleft())
        if self.closed:
            return self._gone_message()
        future = self.loop.create_future()
        self.waiters.append(future)
        if not self.receiving:
            self.receiving = True
            self._post((_RECEIVE, None, None))
        try:
            outcome: _Outcome = await future
        finally:
            if future.cancelled():
                self._forget(future)
        return self._took(outcome)

    async def send(self, message: Message) -> None:
        """The app's ``send()``; see the module docstring for the sends that do not wait."""
        if self.closed:
            raise ClientDisconnected("client disconnected")
        failure, self.pending_failure = self.pending_failure, None
        if failure is not None:
            raise failure
        if self.http and not self.saw_disconnect:
            kind = message.get("type")
            if kind == "http.response.start" or (
                kind == "http.response.body" and not message.get("more_body", False)
            ):
                self._post((_SEND, message, None))
                return
        future = self.loop.create_future()
        self._post((_SEND, message, future))
        await future

    async def drive(self, app: Any) -> None:
        """The asyncio task: the app, its outcome handed to the trio side when it ends."""
        error: BaseException | None = None
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # raised on the trio side; the task itself ends quietly
            error = exc
        finally:
            self._post((_DONE, error, None))

    def _took(self, outcome: _Outcome) -> Any:
        message, error = outcome
        if error is not None:
            raise error
        if message.get("type") == "http.disconnect":
            self.saw_disconnect = True
        return message

    def _gone_message(self) -> dict[str, Any]:
        if self.http:
            return {"type": "http.disconnect"}
        return {"type": "websocket.disconnect", "code": 1006}

    def _forget(self, future: asyncio.Future[Any]) -> None:
        try:
            self.waiters.remove(future)
        except ValueError:
            pass

    def _post(self, item: _Item) -> None:
        """Queue ``item`` for the trio side, waking it unless a wake is already queued
        (appended before the flag is read, so the queued wake's drain will see it)."""
        self.inbox.append(item)
        if self.closed:  # read after the append: see _finish
            try:
                self.inbox.remove(item)
            except ValueError:  # _close took it already
                return
            self._answer_closed(item)
            return
        if not self.wake_pending:
            self.wake_pending = True
            self.runner.wake_trio(self)

    def _start(self, app: Any) -> None:
        self.task = self.runner.start_task(self.drive(app))
        if self.cancelled:
            self.task.cancel()

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _received(self, outcome: _Outcome) -> None:
        """A receive() crossing's answer: to the first waiter still waiting, else kept."""
        self.receiving = False
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(outcome)
                break
        else:
            self.answers.append(outcome)
        if self.waiters:  # another receive() is waiting: its own crossing
            self.receiving = True
            self._post((_RECEIVE, None, None))

    def _sent(self, future: asyncio.Future[Any] | None, error: BaseException | None) -> None:
        if future is None:
            if error is not None and self.pending_failure is None:
                self.pending_failure = error
        elif not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _close(self) -> None:
        """The trio side returned: crossings from now on are answered here."""
        self.closed = True
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result((self._gone_message(), None))
        while self.inbox:
            self._answer_closed(self.inbox.popleft())

    def _answer_closed(self, item: _Item) -> None:
        kind, _, future = item
        if kind == _RECEIVE:
            self.receiving = False
            self._close()  # answers the waiters
        elif future is not None and not future.done():
            future.set_exception(ClientDisconnected("client disconnected"))

    # -- the trio side ----------------------------------------------------------------------
    def _wake(self) -> None:
        self.wake_pending = False
        if self.parked:
            self.parked = False
            trio.lowlevel.reschedule(self.trio_task)

    def _abort(self, raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        self.raise_cancel = raise_cancel
        self._cancel_app()
        return trio.lowlevel.Abort.FAILED  # we wait until the app's task has ended

    def _cancel_app(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.runner.post_to_asyncio(self._cancel_task)

    def _answer(self, callback: Callable[..., None], *args: Any) -> None:
        self.runner.post_to_asyncio(callback, *args)

    async def run(self, app: Any) -> None:
        """Run the app's call to its end; raise what it raised."""
        await self._prefetch()
        self.runner.post_to_asyncio(self._start, app)
        error: BaseException | None = _NEEDS_NURSERY  # until the app's task reports its end
        try:
            error = await self._serve(None)
            if error is _NEEDS_NURSERY:  # a receive() crossing: it gets a task of its own
                async with trio.open_nursery() as nursery:
                    error = await self._serve(nursery)
                    self.ending = True
                    nursery.cancel_scope.cancel()
        finally:
            if error is _NEEDS_NURSERY:  # we are leaving early (a KeyboardInterrupt)
                self._cancel_app()
            self._finish()
        if isinstance(error, asyncio.CancelledError):
            await self._reraise_cancel()
            # trio was not cancelling us: the app's task was cancelled inside asyncio.
            raise RuntimeError("the app's asyncio task was cancelled") from error
        if error is not None:
            raise error
        if self.cancelled:
            await self._reraise_cancel()
        failure, self.send_failure = self.send_failure, None
        if failure is not None and not isinstance(failure, OSError):
            raise failure  # an invalid message the app sent without waiting

    def _finish(self) -> None:
        """The trio side is done. The asyncio side learns it from the flag; it is told
        (one more hand-off) only when something there may be waiting for an answer. An
        item posted meanwhile is either still in the inbox here, or was appended after the
        flag was set, and its poster sees the flag and answers it itself."""
        self.closed = True
        if self.lanes or self.inbox:
            self._answer(self._close)

    async def _reraise_cancel(self) -> None:
        if self.raise_cancel is not None:
            self.raise_cancel()
        if self.cancelled:
            await trio.lowlevel.checkpoint()  # raises trio.Cancelled again

    async def _prefetch(self) -> None:
        """Answer an HTTP request's first receive() now if the body is already in hand."""
        if not self.http:
            return
        bodyless = self.scope["http_version"] in ("1.1", "1.0")
        for name, _ in self.scope["headers"]:
            if name == b"expect":  # 100-continue is sent only when the app asks for the body
                return
            if name == b"content-length" or name == b"transfer-encoding":
                bodyless = False
        if bodyless:  # HTTP/1.x without a body: the answer is known, no waiting
            self.answers.append((await self.trio_receive(), None))
            return
        with trio.CancelScope() as scope:
            scope.cancel()  # answers that need waiting are left to the app's receive()
            message = await self.trio_receive()
        if not scope.cancelled_caught:
            self.answers.append((message, None))

    async def _serve(self, nursery: trio.Nursery | None) -> BaseException | None:
        """Run crossings until the app's task ends; return what it raised. Without a
        nursery, a receive() crossing is put back and :data:`_NEEDS_NURSERY` returned.
        Sends run here, inline: a frame of their own would be resumed at every wait of
        the connection's task."""
        inbox = self.inbox
        while True:
            while inbox:
                item = inbox.popleft()
                kind, payload, future = item
                if kind == _SEND:
                    error: BaseException | None = None
                    try:
                        await self.trio_send(payload)
                    except trio.Cancelled:
                        self._cancel_app()
                        error = asyncio.CancelledError()
                    except Exception as exc:
                        error = exc
                        if future is None and self.send_failure is None:
                            self.send_failure = exc
                    if future is not None or error is not None:  # else nobody waits: no news
                        self.runner.post_to_asyncio(self._sent, future, error)
                elif kind == _DONE:
                    return payload  # type: ignore[no-any-return]
                elif nursery is None:
                    inbox.appendleft(item)
                    return _NEEDS_NURSERY
                else:
                    self.lanes += 1
                    nursery.start_soon(self._run_receive)
            self.parked = True
            await trio.lowlevel.wait_task_rescheduled(self._abort)

    async def _run_receive(self) -> None:
        outcome: _Outcome
        try:
            outcome = (await self.trio_receive(), None)
        except trio.Cancelled:
            if self.ending:
                return  # the call is over: its waiters are answered by _close
            self._cancel_app()
            outcome = (None, asyncio.CancelledError())
        except Exception as exc:
            outcome = (None, exc)
        self.lanes -= 1
        self._answer(self._received, outcome)

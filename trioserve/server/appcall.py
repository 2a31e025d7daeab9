"""How the app's coroutine is driven: each step in the request's own contextvars context,
and a held response head released as soon as the app waits (see :func:`drive_app`).

Apart from :mod:`.request` so the connection code (HTTP/1.1's WebSocket hand-over, a
stream's) can drive a WebSocket's app the same way without the runner.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Awaitable, Generator
from typing import Any, Protocol

from ..sansio.asgi import HTTPResponseCycle


class HeldHead(Protocol):
    """What :func:`drive_app` needs of a request runner: its response cycle (is a head
    held?) and the way to release it."""

    cycle: HTTPResponseCycle

    def release_head(self) -> None: ...


@types.coroutine
def drive_app(
    call: Awaitable[None],
    context: contextvars.Context | None,
    runner: HeldHead | None,
) -> Generator[Any, Any, None]:
    """Await the app's ``call``: each step in ``context`` (None: this task's own), and,
    for a ``runner``, releasing its held response head when the app waits.

    trio runs other tasks only when a task yields to the scheduler, and every wait of the
    app (a sleep, a lock, a read) yields through here. So a yield while the head is still
    held means the app waits on something other than its own next ``send()``, and
    :meth:`~.request.RequestRunner.release_head` sends the head. A hello response (start,
    then body, back to back) never yields in between: its head still leaves with the body, in one
    write, and an error before the first body still becomes a clean 500. The context is how
    requests that share a connection's task keep their contextvars apart (server/context.py).
    The cost is this frame: one resumption and one ``send()`` per yield of the app (and one
    ``Context.run``), no task switch. A WebSocket (no held head) passes no runner.
    """
    coro: Any = call
    try:
        send = coro.send  # a coroutine (an app's async def): driven as it is
    except AttributeError:  # any other awaitable
        coro = call.__await__()
        send = coro.send
    throw = coro.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                trap = send(value) if context is None else context.run(send, value)
            else:
                thrown, error = error, None
                trap = throw(thrown) if context is None else context.run(throw, thrown)
        except StopIteration:
            return
        if runner is not None and runner.cycle.held_head is not None:
            runner.release_head()
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # trio's Cancelled, KeyboardInterrupt: the app's to see
            value = None
            error = exc

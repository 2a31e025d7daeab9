"""The deadlines of plain-socket HTTP/1.1 connections waiting for their next request.

A trio cancel scope per keep-alive wait cost about 60 Python calls (its enter and exit, and
the deadline trio then handles in its scheduler passes), paid by every keep-alive request
whose client waits for the response before sending the next one, and each idle connection
held a scope and its cancel status. Here a wait is one dict entry instead, and one task per
server ends the waits that run out: it wakes the waiting task as closing its socket would
(``trio.lowlevel.notify_closing``), so the connection's read ends (``b""``) and it closes.

Waits with the same timeout are kept in one ``OrderedDict``, in the order of their
deadlines: insertion order, and an entry is removed when its wait ends, never updated
(except all at once by :meth:`KeepAliveWaits.shorten`, which keeps the order). The task only
looks at the first entry of each group; an ``OrderedDict`` finds it in constant time however
many entries were deleted before it (a plain dict rescans their slots: ending 40,000 waits
cost a second of CPU). An empty group costs no wake-ups: the task sleeps until the first
deadline it knows of, and a wait that ends before that wakes it.

An entry exists only while its task is parked in the wait (added just before, removed just
after, with no checkpoint in between), so a task the reaper wakes is always one that is
waiting, or one already woken by its bytes, which then reads them as usual. The reaper runs
in an empty context: the connection that starts it may hold what its first request's app set
(see context.py), which it would otherwise keep for the server's life.
"""

from __future__ import annotations

import contextvars
import math
import socket
from collections import OrderedDict

import trio
from trio.lowlevel import notify_closing

# One timeout's waits: socket -> deadline, in deadline order.
Group = OrderedDict[socket.socket, float]


class KeepAliveWaits:
    """The waits of one server, and the task (started on demand) that ends them."""

    __slots__ = ("_groups", "_running", "_shutting_down", "_wake", "_wake_at")

    def __init__(self) -> None:
        self._groups: dict[float, Group] = {}
        self._wake: trio.CancelScope | None = None  # the reaper's sleep
        self._wake_at = math.inf  # when that sleep ends (inf: nothing to look at)
        self._running = False
        self._shutting_down = False

    def add(self, sock: socket.socket, timeout: float, nursery: trio.Nursery) -> Group:
        """Register a wait on ``sock`` that ends ``timeout`` seconds from now; the caller
        passes the group returned to :meth:`remove` once the wait is over."""
        group = self._groups.get(timeout)
        if group is None:
            group = self._groups[timeout] = OrderedDict()
        deadline = group[sock] = trio.current_time() + timeout
        if deadline < self._wake_at:  # the reaper sleeps past it (or has nothing to wait for)
            self._poke()
        if not self._running:
            self._running = True
            contextvars.Context().run(self._start, nursery)
        return group

    def _start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._reap, name="trioserve.keep_alive_waits")

    def remove(self, group: Group, sock: socket.socket) -> None:
        group.pop(sock, None)  # (gone already if the reaper ended it)
        if self._shutting_down:  # the reaper leaves once no wait is left
            self._poke()

    def shorten(self, deadline: float) -> None:
        """Shutdown: every current wait ends by ``deadline``; from now on the reaper leaves
        once no wait is left (so the connections nursery can close)."""
        self._shutting_down = True
        for group in self._groups.values():
            for sock, end in group.items():
                if end > deadline:
                    group[sock] = deadline  # (min with one value keeps the order)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.cancel()

    async def _reap(self) -> None:
        try:
            while True:
                wake = self._expire(trio.current_time())
                if self._shutting_down and not any(self._groups.values()):
                    return
                self._wake_at = wake
                with trio.CancelScope(deadline=wake) as self._wake:
                    await trio.sleep_forever()
                self._wake = None
        finally:
            self._running = False
            self._wake = None
            self._wake_at = math.inf

    def _expire(self, now: float) -> float:
        """End the waits past their deadline; return the first deadline left (inf: none)."""
        wake = math.inf
        for group in self._groups.values():
            while group:
                sock = next(iter(group))
                deadline = group[sock]
                if deadline > now:
                    wake = min(wake, deadline)
                    break
                del group[sock]
                if sock.fileno() != -1:  # (closed meanwhile: its task is already awake)
                    notify_closing(sock)  # its task's wait raises ClosedResourceError
        return wake

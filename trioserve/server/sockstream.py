"""A lean stream over a plain socket, and the accept call that makes them.

``trio.SocketStream`` costs a measurable share of a small request: every ``send_all`` and
``receive_some`` goes through a conflict detector, an error-translating context manager,
a memoryview, and trio's ``_try_sync``, which yields to the scheduler after each
successful syscall even when nothing had to wait. ``SocketListener.accept`` adds a
wrapper socket object, two setsockopt calls and a yield per connection. This module
keeps trio's semantics where the server relies on them and drops the rest:

- every call is a cancellation point (``checkpoint_if_cancelled`` first);
- ``send_all`` always yields to the scheduler (as trio's does), unless its caller takes
  that schedule point itself (``schedule=False``: a response's last write, taken by the
  connection once the request is done: ``PeerStream.defer_schedule_point``); such a write,
  if small, is sent with the others of the scheduler's pass, once 8 wait or just before
  trio waits for I/O (:mod:`.writebatch`), and the connection settles it after its
  schedule point;
  ``receive_some`` and ``accept`` yield when they had to wait, and otherwise every
  ``_YIELD_EVERY`` calls, so a client whose bytes are always there already cannot starve
  the other connections;
- OS errors become ``trio.BrokenResourceError``, a closed socket
  ``trio.ClosedResourceError``; closing wakes a task blocked on the socket with
  ``ClosedResourceError`` (``notify_closing``), as trio does;
- a second task calling ``send_all`` while one is blocked mid-send gets
  ``trio.BusyResourceError`` (the only interleaving that could corrupt the byte stream);
  two blocked readers get it from trio's ``wait_readable``.

A large ``send_all`` tries the whole buffer in one ``send``; on a partial send it waits
until writable and continues from a memoryview slice (no copies). ``TCP_NOTSENT_LOWAT``
is not set (trio sets 16 KiB): with it the kernel takes at most ~16 KiB of unsent data
per ``send``, so a 1 MiB body costs dozens of wake-ups.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import struct

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    notify_closing,
    wait_readable,
    wait_writable,
)

from .writebatch import DEFER_LIMIT, FLUSH_AT, WriteBatch, current_write_batch

DEFAULT_RECEIVE_SIZE = 65536
# Calls that complete without waiting between two forced yields to the scheduler.
_YIELD_EVERY = 16

# SO_LINGER on, zero seconds: close() sends RST and drops unsent data.
_LINGER_RESET = struct.pack("ii", 1, 0)
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
# accept() errors that concern only the connection being accepted (as trio ignores them).
_IGNORABLE_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("the socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class SocketStream(trio.abc.HalfCloseableStream):
    """``trio.abc.HalfCloseableStream`` over a connected, non-blocking stdlib socket.

    ``socket`` is the stdlib socket itself (for getpeername, setsockopt, ...). Slotted:
    thousands sit idle in a keep-alive server.
    """

    __slots__ = (
        "_batch",
        "_eof_sent",
        "_send_waiting",
        "_unyielded",
        "deferred",
        "deferred_error",
        "send_timed_out",
        "send_timeout",
        "socket",
    )

    def __init__(self, sock: socket.socket, batch: WriteBatch | None = None) -> None:
        self.socket = sock
        # The run's WriteBatch (None: every write is sent at once), the bytes of a write
        # waiting in it, and what sending them raised (for settle_deferred()).
        self._batch = batch
        self.deferred = b""
        self.deferred_error: OSError | None = None
        self._unyielded = 0  # calls since this stream last yielded to the scheduler
        self._send_waiting = False  # a send_all is blocked part-way through its data
        self._eof_sent = False
        # Seconds a send_all may wait for the peer to take its data (None: forever). Only
        # the slow path (the kernel took part of it) pays for the cancel scope.
        self.send_timeout: float | None = None
        self.send_timed_out = False  # a send_all gave up: the byte stream is cut

    async def _maybe_yield(self) -> None:
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            self._unyielded = 0
            await cancel_shielded_checkpoint()

    async def receive_some(
        self, max_bytes: int | None = None, timeout: float | None = None
    ) -> bytes:
        """As trio's; a ``timeout`` bounds the wait for readability (``trio.TooSlowError``
        past it): bytes already there are returned whatever the timeout, and only a read
        that has to wait pays for the deadline's cancel scope."""
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        await checkpoint_if_cancelled()
        sock = self.socket
        try:
            data = sock.recv(max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise _stream_error(exc) from exc
        else:
            self._unyielded += 1
            if self._unyielded >= _YIELD_EVERY:
                self._unyielded = 0
                await cancel_shielded_checkpoint()
            return data
        if timeout is None:
            return await self.receive_when_readable(max_bytes)
        with trio.fail_after(timeout):
            return await self.receive_when_readable(max_bytes)

    async def receive_when_readable(self, max_bytes: int) -> bytes:
        """Wait until the socket is readable, then read: for a caller that has just seen a
        read fail with nothing there (``receive_ready``), so it does not try again first.
        The wait is the checkpoint."""
        sock = self.socket
        while True:
            await wait_readable(sock)
            self._unyielded = 0
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _stream_error(exc) from exc

    def receive_ready(self, max_bytes: int) -> bytes | None:
        """What is already waiting in the kernel (``b""`` at EOF), or None when a read would
        block. Not a checkpoint: for a caller that arms a deadline only when it must wait
        (a WebSocket's keep-alive ping) and awaits a checkpoint of its own."""
        try:
            return self.socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _stream_error(exc) from exc

    async def peek(self, max_bytes: int) -> bytes:
        """Like ``receive_some`` but leaves the bytes in the kernel (``MSG_PEEK``)."""
        await checkpoint_if_cancelled()
        sock = self.socket
        while True:
            try:
                data = sock.recv(max_bytes, socket.MSG_PEEK)
            except BlockingIOError:
                await wait_readable(sock)
                self._unyielded = 0
                continue
            except OSError as exc:
                raise _stream_error(exc) from exc
            await self._maybe_yield()
            return data

    async def send_all(
        self, data: bytes | bytearray | memoryview | list[bytes], *, schedule: bool = True
    ) -> None:
        """``schedule=False``: a write taken whole returns without the schedule point; the
        caller takes it later (``PeerStream.defer_schedule_point``). A list of pieces (a
        response head and a large body) goes out in one gather write, without joining
        them (a copy of the body) or a write each (a syscall and a schedule point each)."""
        if self._send_waiting:
            raise trio.BusyResourceError("another task is sending on this stream")
        await checkpoint_if_cancelled()
        batch = self._batch
        if (
            not schedule
            and batch is not None
            and type(data) is bytes
            and len(data) <= DEFER_LIMIT
            and not self.deferred
        ):
            # Sent with the pass's other writes, before this task runs again.
            self.deferred = data
            streams = batch.streams
            streams.append(self)
            if len(streams) >= FLUSH_AT:
                batch.flush()
            return
        if self.deferred or self.deferred_error is not None:
            await self.settle_deferred()  # (never skipped: the byte stream stays in order)
        sock = self.socket
        pieces = data if isinstance(data, list) else None
        try:
            sent = sock.send(data) if pieces is None else sock.sendmsg(pieces)  # type: ignore[arg-type]
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise self._send_error(exc) from exc
        if sent == (len(data) if pieces is None else sum(map(len, pieces))):
            # Always a schedule point, unlike receive_some: without it a busy connection's
            # task goes straight on to its next read, and tail latency under load suffers
            # (hello, 64 connections: p99 ~90 ms instead of ~21 ms).
            self._unyielded = 0
            if schedule:
                await cancel_shielded_checkpoint()
            return
        if pieces is None:
            await self._send_rest(data, sent)  # type: ignore[arg-type]
            return
        for piece in pieces:  # what the kernel did not take, piece by piece (no joining)
            if sent < len(piece):
                await self._send_rest(piece, sent)
            sent = max(sent - len(piece), 0)

    def send_deferred(self) -> None:
        """The write batch's send of this stream's waiting write (never waits or raises):
        what the kernel did not take stays waiting, an error is kept."""
        data = self.deferred
        if not data:
            return
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            return
        except OSError as exc:
            self.deferred = b""
            self.deferred_error = exc
            return
        self.deferred = data[sent:] if sent < len(data) else b""

    async def settle_deferred(self) -> None:
        """After the schedule point that follows a deferred write: raise what sending it
        met, or send (waiting, within the send timeout) what the kernel did not take."""
        error = self.deferred_error
        if error is not None:
            self.deferred_error = None
            raise self._send_error(error) from error
        rest = self.deferred
        if rest:
            self.deferred = b""
            await self._send_rest(rest, 0)

    async def _send_rest(self, data: bytes | bytearray | memoryview, sent: int) -> None:
        """The slow path of a send the kernel took only part of: wait, send the rest."""
        sock = self.socket
        self._send_waiting = True
        timeout = self.send_timeout
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        try:
            with (
                trio.CancelScope(deadline=deadline) as scope,
                memoryview(data) as raw,
                raw.cast("B") as view,
            ):
                total = len(view)
                while sent < total:
                    await wait_writable(sock)
                    self._unyielded = 0
                    try:
                        with view[sent:] as rest:
                            sent += sock.send(rest)
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise self._send_error(exc) from exc
        finally:
            self._send_waiting = False
        if scope.cancelled_caught:
            self._give_up_sending(timeout)

    def _give_up_sending(self, timeout: float | None) -> None:
        self.send_timed_out = True
        # Close with a reset: a graceful close would leave the unsent bytes (megabytes,
        # for a client that never reads) in the kernel, still waiting on that client.
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:  # pragma: no cover - the socket is already gone
            pass
        raise trio.BrokenResourceError(f"send timed out after {timeout}s: peer not reading")

    async def send_file(self, fd: int, size: int) -> None:
        """``size`` bytes of the file ``fd`` by ``os.sendfile`` (no copy through Python).

        A file can rightly take longer than ``send_timeout`` to go out, so here the deadline
        is for a stall: ``send_timeout`` seconds in which the client took no byte.
        """
        sock = self.socket
        timeout = self.send_timeout
        offset = 0
        with trio.CancelScope() as scope:
            while offset < size:
                try:
                    sent = os.sendfile(sock.fileno(), fd, offset, size - offset)
                except BlockingIOError:
                    if timeout is not None and scope.deadline == math.inf:
                        scope.deadline = trio.current_time() + timeout
                    await wait_writable(sock)
                    continue
                except OSError as exc:
                    raise self._send_error(exc) from exc
                if sent == 0:  # the file is shorter than it was: the response can't be done
                    raise OSError(f"file ended {size - offset} bytes early")
                offset += sent
                scope.deadline = math.inf  # progress: the next stall starts its own clock
        if scope.cancelled_caught:
            self._give_up_sending(timeout)
        await trio.lowlevel.checkpoint()

    def _send_error(self, exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._eof_sent and exc.errno == errno.EPIPE:
            return trio.ClosedResourceError("can't send data after sending EOF")
        return _stream_error(exc)

    async def wait_send_all_might_not_block(self) -> None:
        if self._send_waiting:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self.socket.fileno() == -1:
            await checkpoint()
            raise trio.ClosedResourceError("the socket was already closed")
        await wait_writable(self.socket)
        self._unyielded = 0

    async def send_eof(self) -> None:
        if self._send_waiting:
            raise trio.BusyResourceError("another task is sending on this stream")
        await checkpoint()
        if self._eof_sent:
            return
        if self.deferred or self.deferred_error is not None:
            await self.settle_deferred()  # before the FIN, not lost behind it
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _stream_error(exc) from exc
        self._eof_sent = True

    def close(self) -> None:
        """Close now (never blocks); tasks blocked on the socket get ClosedResourceError.
        A write still waiting in the batch is tried first (what the kernel takes at once)."""
        sock = self.socket
        if self.deferred:
            self.send_deferred()
            self.deferred = b""
        if sock.fileno() != -1:
            notify_closing(sock)
            sock.close()

    async def aclose(self) -> None:
        self.close()
        await checkpoint()


class StreamListener:
    """Accepts connections on a listening socket as :class:`SocketStream` objects.

    The accepted socket is made non-blocking and, for TCP, gets ``TCP_NODELAY`` (a
    response's last segment must not wait for the client's delayed ACK).
    """

    __slots__ = ("_batch", "_tcp", "_unyielded", "socket")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock
        self._tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self._unyielded = 0
        self._batch: WriteBatch | None = None  # the run's, taken on the first accept()

    def close(self) -> None:
        """Stop listening; a task blocked in accept() gets ClosedResourceError."""
        sock = self.socket
        if sock.fileno() != -1:
            notify_closing(sock)
            sock.close()

    async def accept(self) -> SocketStream:
        """The next connection; ``OSError`` for errors that concern the listener itself.

        Yields like :class:`SocketStream` calls: when it waited, else every
        ``_YIELD_EVERY`` connections, so a burst of connections is taken in one go.
        """
        await checkpoint_if_cancelled()
        sock = self.socket
        if self._batch is None:
            self._batch = current_write_batch()
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                await wait_readable(sock)
                self._unyielded = 0
                continue
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError("the listener was closed") from None
                if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                    continue
                raise
            break
        conn.setblocking(False)
        if self._tcp:
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            except OSError:  # pragma: no cover - the peer is already gone
                pass
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            self._unyielded = 0
            await cancel_shielded_checkpoint()
        return SocketStream(conn, self._batch)

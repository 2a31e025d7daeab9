"""The peer at the other end of one connection: reads and writes in turns, in our words.

One object per connection, shared by the HTTP/1.1 code and the WebSocket that may follow:

- reads (optionally with a deadline) return ``b""`` once the peer closed its side or the
  connection broke, and remember it (``eof``);
- writes raise :class:`~trioserve.errors.ClientDisconnected` (an ``OSError``, as ASGI asks)
  once the peer is gone, and remember it (``broken``);
- only this class sets ``eof`` and ``broken``; the protocol code says *why* writing ends
  through named transitions: :meth:`PeerStream.lost` (the peer is known to be gone),
  :meth:`PeerStream.give_up` (we stop: an abort, a protocol error, an unanswered ping)
  and :meth:`PeerStream.answer_after_all` (the one way back: a bad request's refusal);
- one reader and one writer at a time, as a trio stream allows: a flag each, and a
  ``ParkingLot`` only once a second task waits (a held ``trio.Lock`` would cost a lot and a
  breaker entry per idle connection); the task that finishes hands the turn over;
- trio's ``BrokenResourceError``/``ClosedResourceError`` (``STREAM_ERRORS``) are translated
  here for the connection's reads and writes; the one exception is the WebSocket's message
  read, which catches ``STREAM_ERRORS`` inline so an idle WebSocket carries no coroutine
  frame of ours (~0.5 KiB each). The TLS and PROXY steps before a connection exists, in
  :mod:`.transport`, have their own answer: drop the connection.
"""

from __future__ import annotations

import select
import socket

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint

from ..errors import ClientDisconnected, SendTimeout
from .sockstream import SocketStream
from .transport import close_transport, linger_close

READ_SIZE = 64 * 1024
# A request body is read in larger pieces (asyncio's, so Uvicorn's, read size): while the app
# works on one piece the kernel gathers the next, and one read then hands it all over, so a
# framework pays its per-piece cost (a thread hop per multipart write) a few times per MiB.
BODY_READ_SIZE = 256 * 1024
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)

_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_GONE_EVENTS = select.POLLHUP | select.POLLERR | _POLLRDHUP


class PeerStream:
    """One connection's stream as the protocol code uses it; see the module docstring."""

    # Thousands sit idle in a keep-alive server: no per-instance __dict__.
    __slots__ = (
        "_read_waiters",
        "_reading",
        "_write_waiters",
        "_writing",
        "broken",
        "defer_schedule_point",
        "eof",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, send_timeout: float | None = None) -> None:
        self.stream = stream
        # The send deadline lives on the socket stream, where only a write that had to
        # wait pays for a cancel scope (TLS writes go through it too). In memory: none.
        sock_stream = _socket_stream_of(stream)
        if sock_stream is not None:
            sock_stream.send_timeout = send_timeout
        self.eof = False  # the peer closed its sending side (or reading failed)
        self.broken = False  # writing failed, or we gave up on the peer
        self._reading = False
        self._read_waiters: ParkingLot | None = None
        self._writing = False
        self._write_waiters: ParkingLot | None = None
        # Set by the caller before a response's last write: on a plain socket, a write the
        # kernel takes whole then skips the stream's schedule point, so an app's last
        # send() does not suspend its whole stack, and this stays set until the caller
        # takes the schedule point itself once the request is done (HTTP11Connection.run).
        self.defer_schedule_point = False

    # -- reading -----------------------------------------------------------------------------
    async def receive(self, timeout: float | None = None, size: int = READ_SIZE) -> bytes:
        """Read once (at most ``size`` bytes) in a read turn of its own; ``b""`` at EOF. A
        stall past ``timeout`` raises ``trio.TooSlowError``."""
        if self._reading:
            await self.take_read_turn()
        else:
            # Uncontended (the usual case): no trip through the scheduler here; the read
            # below is this call's checkpoint.
            self._reading = True
        try:
            if self.eof:
                await checkpoint()
                return b""
            stream = self.stream
            try:
                if timeout is None:
                    data = await stream.receive_some(size)
                elif type(stream) is SocketStream:  # a deadline only if the read must wait
                    data = await stream.receive_some(size, timeout)
                else:
                    with trio.fail_after(timeout):
                        data = await stream.receive_some(size)
            except STREAM_ERRORS:
                data = b""
            if not data:
                self.eof = True
            return bytes(data)
        finally:
            self.end_read_turn()

    def receive_ready(self, size: int = READ_SIZE) -> bytes | None:
        """What the peer has already sent (``b""``: it closed), read without waiting and
        without a checkpoint; None when a read would wait, while another task reads, or on
        a stream whose buffer is not the kernel's (TLS, in memory).

        For the wait between keep-alive requests: when the next request is already here
        (most of them under load) no deadline needs arming for it, and the response's
        write is the request's checkpoint.
        """
        stream = self.stream
        if self._reading or self.eof or type(stream) is not SocketStream:
            return None
        # (the socket read inline, not through SocketStream.receive_ready: a call fewer
        # on every keep-alive request; the errors are as its own)
        try:
            data = stream.socket.recv(size)
        except BlockingIOError:
            return None
        except OSError:  # (a reset, or a socket already closed: both end the reading)
            data = b""
        if not data:
            self.eof = True
        return data

    async def receive_waiting(self) -> bytes:
        """``receive()`` right after ``receive_ready()`` found nothing: a plain socket goes
        straight to waiting for readability instead of failing a read first."""
        stream = self.stream
        if self._reading or type(stream) is not SocketStream:
            return await self.receive()
        self._reading = True
        try:
            try:
                data = await stream.receive_when_readable(READ_SIZE)
            except STREAM_ERRORS:
                data = b""
            if not data:
                self.eof = True
            return data
        finally:
            self.end_read_turn()

    async def take_read_turn(self) -> None:
        """Wait for the read turn. Free (the usual case), it takes it without a checkpoint."""
        if self._reading:
            waiters = self._read_waiters
            if waiters is None:
                waiters = self._read_waiters = ParkingLot()
            await waiters.park()  # the reader that finishes hands the turn over
        else:
            self._reading = True

    def end_read_turn(self) -> None:
        waiters = self._read_waiters
        if waiters:
            waiters.unpark()  # the turn passes to the next reader in line
        else:
            self._reading = False

    @property
    def reading(self) -> bool:
        """Someone holds the read turn."""
        return self._reading

    @property
    def readers_waiting(self) -> bool:
        """Another task waits for the read turn."""
        return bool(self._read_waiters)

    def poll_gone(self) -> bool:
        """Whether the peer is already known to be gone, without reading or waiting.

        For a socket, ``poll()`` with a zero timeout: a hang-up, an error or (Linux) the
        peer's FIN (``POLLRDHUP``) count, whatever unread bytes sit before them. A stream
        without a socket (in memory) knows only what reads and writes told it.
        """
        if self.eof or self.broken:
            return True
        sock = _socket_of(self.stream)
        if sock is None or sock.fileno() == -1:
            return False
        poller = select.poll()
        poller.register(sock, select.POLLIN | _POLLRDHUP)
        return any(events & _GONE_EVENTS for _, events in poller.poll(0))

    async def end_deferred_write(self) -> None:
        """The schedule point a response's last write skipped (``defer_schedule_point``),
        taken by the connection once the request is done. On a plain socket that write
        may have waited for the end of the scheduler's pass (:mod:`.writebatch`): it went
        out before this task runs again; here what the kernel did not take is sent, and
        a failed send makes the peer broken, as in :meth:`send`."""
        self.defer_schedule_point = False
        await cancel_shielded_checkpoint()
        stream = self.stream
        if type(stream) is SocketStream and (stream.deferred or stream.deferred_error):
            try:
                await stream.settle_deferred()
            except STREAM_ERRORS:
                self.broken = True

    # -- writing -----------------------------------------------------------------------------
    async def send(self, data: bytes | list[bytes]) -> None:
        """Write all of ``data`` in a write turn; ClientDisconnected if the peer is gone. A
        list of pieces is one gather write on a plain socket (joined for other streams)."""
        if self._writing:
            waiters = self._write_waiters
            if waiters is None:
                waiters = self._write_waiters = ParkingLot()
            await waiters.park()  # the writer that finishes hands the turn over
        else:
            self._writing = True  # send_all() below is this call's checkpoint
        stream = self.stream
        try:
            if self.defer_schedule_point and type(stream) is SocketStream:
                await stream.send_all(data, schedule=False)
            else:
                self.defer_schedule_point = False
                if type(data) is list and type(stream) is not SocketStream:
                    data = b"".join(data)
                await stream.send_all(data)  # type: ignore[arg-type]
        except STREAM_ERRORS:
            self.broken = True
            if self.send_timed_out:
                raise SendTimeout("client did not read: send timed out") from None
            raise ClientDisconnected("client disconnected") from None
        finally:
            waiters = self._write_waiters
            if waiters:
                waiters.unpark()
            else:
                self._writing = False

    @property
    def send_timed_out(self) -> bool:
        """A write gave up after ``send_timeout`` (the peer stopped reading)."""
        sock_stream = _socket_stream_of(self.stream)
        return sock_stream is not None and sock_stream.send_timed_out

    @property
    def can_sendfile(self) -> bool:
        """A plain socket (TLS bytes must be encrypted by us, so no sendfile there)."""
        return type(self.stream) is SocketStream

    async def send_file(self, head: bytes, fd: int, size: int, tail: bytes) -> bool:
        """``head``, ``size`` bytes of the file ``fd`` by the kernel (no copy through us),
        then ``tail``, in one write turn. False (nothing written) unless the stream is a
        plain socket; ClientDisconnected if the peer is gone."""
        if type(self.stream) is not SocketStream:
            return False
        if self._writing:
            waiters = self._write_waiters
            if waiters is None:
                waiters = self._write_waiters = ParkingLot()
            await waiters.park()
        else:
            self._writing = True
        try:
            if head:
                await self.stream.send_all(head)
            await self.stream.send_file(fd, size)
            if tail:
                await self.stream.send_all(tail)
        except (*STREAM_ERRORS, OSError):
            self.broken = True
            if self.stream.send_timed_out:
                raise SendTimeout("client did not read: send timed out") from None
            raise ClientDisconnected("client disconnected") from None
        finally:
            waiters = self._write_waiters
            if waiters:
                waiters.unpark()
            else:
                self._writing = False
        return True

    # -- why writing ends (``broken``) ------------------------------------------------------
    def lost(self) -> None:
        """The peer is known to be gone (EOF mid-request, a hang-up seen by ``poll()``, the
        end a disconnect wait returned on): nothing more is written."""
        self.broken = True

    def give_up(self) -> None:
        """We stop talking to the peer (an aborted exchange, a frame we could not parse, a
        WebSocket whose peer stopped answering pings): nothing more is written."""
        self.broken = True

    def answer_after_all(self) -> None:
        """The exchange was given up because the request was bad, but the peer is still
        there to read the refusal: writes are allowed again (a failed one still marks the
        stream broken)."""
        self.broken = False

    async def send_quietly(self, data: bytes) -> None:
        """Write, ignoring a gone peer (``broken`` says so afterwards)."""
        try:
            await self.send(data)
        except ClientDisconnected:
            pass

    # -- closing -----------------------------------------------------------------------------
    async def close(self) -> None:
        """Close now, without waiting on the peer."""
        await close_transport(self.stream)

    async def linger_close(self) -> None:
        """Close after an answer without resetting it away (see ``linger_close``)."""
        await linger_close(self.stream)


def _socket_stream_of(stream: trio.abc.Stream) -> SocketStream | None:
    if type(stream) is SocketStream:
        return stream
    inner = getattr(stream, "transport_stream", None)  # TLS: the socket under it
    if type(inner) is SocketStream:
        return inner
    return None


def _socket_of(stream: trio.abc.Stream) -> socket.socket | None:
    sock_stream = _socket_stream_of(stream)
    return None if sock_stream is None else sock_stream.socket

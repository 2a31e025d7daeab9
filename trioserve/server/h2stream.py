"""One HTTP/2 stream as the shared code sees it.

:class:`H2Stream` is the request runner's port for a stream (body pieces from the buffer
the connection's read loop fills, each acknowledged to flow control as it is taken; sends
that wait for window credit); :class:`H2StreamIO` shows the same stream's DATA as a trio
stream, so the WebSocket code runs over HTTP/2 (RFC 8441) through its usual PeerStream.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable
from typing import Protocol

import trio

from ..errors import ClientDisconnected
from ..logs import error_log
from ..sansio.body import NOT_YET, BodyPiece
from ..sansio.events import (
    Data,
    EndData,
    InformationalResponse,
    OutboundEvent,
    Response,
    Sentinel,
)
from ..sansio.http2 import ErrorCodes, H2Protocol
from .request import refuse_stream
from .state import ServerState
from .transport import ConnectionInfo


class StreamOwner(Protocol):
    """What a stream needs of its connection (:class:`~.http2.HTTP2Connection`)."""

    proto: H2Protocol
    state: ServerState
    info: ConnectionInfo

    def kick(self) -> None:
        """Wake the writer: frames are waiting."""

    async def wait_space(self) -> None:
        """Wait while our output is above the mark (a checkpoint otherwise)."""

    async def wait_credit(self) -> None:
        """Wait for the peer to open a send window."""

    def consumed(self, stream_id: int, size: int) -> None:
        """The app took ``size`` body bytes of this stream."""


class H2Stream:
    """One request stream as the request runner sees it (its ``RequestPort``)."""

    __slots__ = (
        "_body",
        "_end",
        "_gone",
        "_waiter",
        "cancel_scope",
        "conn",
        "headers_sent",
        "stream_id",
    )

    def __init__(self, conn: StreamOwner, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self._body: deque[bytes] = deque()
        self._end = False  # END_STREAM arrived (after what is in _body)
        self._gone = False
        self._waiter: trio.Event | None = None
        self.headers_sent = False
        self.cancel_scope = trio.CancelScope()

    # -- fed by the read loop --------------------------------------------------------------
    def on_event(self, event: object) -> None:
        if type(event) is Data:
            self._body.append(event.data)
        elif type(event) is EndData:
            self._end = True
        else:  # StreamReset, or the connection's end
            self.vanish()
            return
        self._wake()

    def vanish(self) -> None:
        """The peer is gone for this stream: wake its waiters; cancel its app a bit later."""
        if self._gone:
            return
        self._gone = True
        self._body.clear()
        self._wake()
        grace = self.conn.state.config.h2_reset_grace
        self.cancel_scope.deadline = min(self.cancel_scope.deadline, trio.current_time() + grace)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    async def _wait(self) -> None:
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = trio.Event()
        await waiter.wait()

    # -- RequestPort -------------------------------------------------------------------------
    @property
    def gone(self) -> bool:
        return self._gone

    @property
    def can_inform(self) -> bool:
        return not self.headers_sent and not self._gone

    def body_piece(self) -> BodyPiece | Sentinel:
        if self._gone:
            return None
        body = self._body
        if body:
            data = body.popleft()
            self.conn.consumed(self.stream_id, len(data))
            return data, bool(body) or not self._end
        if self._end:
            return b"", False
        return NOT_YET

    async def receive_body(self, timeout: float | None) -> BodyPiece:
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            piece = self.body_piece()
            if piece is not NOT_YET:
                await trio.lowlevel.checkpoint()
                return piece  # type: ignore[return-value]
            with trio.move_on_at(deadline):
                await self._wait()
                continue
            error_log.info("%s: request body read timed out", self.conn.info.client_text)
            self.abort()
            return None

    def send_events(self, events: list[OutboundEvent]) -> Awaitable[None]:
        """HEADERS are framed now (not flow-controlled; a bad head raises before anything
        is written); the awaitable sends the body as the windows allow."""
        if self._gone:
            raise_gone()
        conn = self.conn
        head = events[0]
        cls = type(head)
        if cls is Response or cls is InformationalResponse:
            events = events[1:]
            # A response with nothing after it but the end goes as one HEADERS frame.
            end = cls is Response and len(events) == 1 and _is_bare_end(events[0])
            conn.proto.send_headers(self.stream_id, head.status, head.headers, end)  # type: ignore[union-attr]
            conn.kick()
            if cls is Response:
                self.headers_sent = True
            if end or not events:
                return conn.wait_space()
        return self._send(events)

    async def _send(self, events: list[OutboundEvent]) -> None:
        conn = self.conn
        proto = conn.proto
        sid = self.stream_id
        count = len(events)
        index = 0
        while index < count:
            if self._gone:
                raise_gone()
            event = events[index]
            index += 1
            if type(event) is Data:
                # The last piece and the end go as one DATA frame with END_STREAM.
                end = index < count and _is_bare_end(events[index])
                await self._send_data(event.data, end)
                if end:
                    index += 1
            elif type(event) is EndData:
                if event.headers:
                    proto.send_trailers(sid, event.headers)
                else:
                    proto.send_data(sid, b"", True)
                conn.kick()
        await conn.wait_space()

    async def _send_data(self, data: bytes, end: bool) -> None:
        conn = self.conn
        proto = conn.proto
        sid = self.stream_id
        if not data:
            if end:
                proto.send_data(sid, b"", True)
                conn.kick()
            return
        view = memoryview(data)
        while view:
            window = proto.send_window(sid)
            if window <= 0:
                if self._gone:
                    raise_gone()
                await conn.wait_credit()
                continue
            chunk = view[:window]
            view = view[len(chunk) :]
            proto.send_data(sid, bytes(chunk), end and not view)
            conn.kick()
            await conn.wait_space()
            if self._gone:
                raise_gone()

    async def wait_for_body(self) -> None:
        """Wait until more body arrives, it ends, or the stream is gone."""
        if not self._body and not self._end and not self._gone:
            await self._wait()

    async def send_body(self, data: bytes) -> None:
        """DATA as the windows allow (ClientDisconnected once the stream is gone)."""
        if self._gone:
            raise_gone()
        await self._send_data(data, False)

    def end(self) -> None:
        """END_STREAM now (a WebSocket's close), unless the stream is already gone."""
        if not self._gone and self.conn.proto.end_stream(self.stream_id):
            self.conn.kick()

    async def wait_disconnected(self) -> None:
        while not self._gone:
            await self._wait()

    def poll_disconnected(self) -> bool:
        return self._gone

    def close_after_response(self) -> None:
        """Other streams keep the connection: this one just ends with its response."""

    def abort(self) -> None:
        if not self._gone:
            self.conn.proto.reset(self.stream_id, ErrorCodes.INTERNAL_ERROR, trio.current_time())
            self.conn.kick()
            self.vanish()

    async def refuse(self, status: int, reason: str | None) -> None:
        conn = self.conn
        answered = self._gone or self.headers_sent
        await refuse_stream(self, conn.info, conn.state, status, reason, answered)


class H2StreamIO(trio.abc.Stream):
    """One HTTP/2 stream's DATA as a trio stream, so the WebSocket code (through its
    :class:`~.peer.PeerStream`) runs over HTTP/2 unchanged. Reads acknowledge flow control
    as they take data; writes wait for window credit; closing ends the stream."""

    def __init__(self, stream: H2Stream) -> None:
        self.h2 = stream
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        stream = self.h2
        while True:
            piece = stream.body_piece()
            if piece is NOT_YET:
                await stream.wait_for_body()
                continue
            await trio.lowlevel.checkpoint()
            if piece is None:
                return b""
            data, more = piece  # type: ignore[misc]
            if data or not more:
                return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            await self.h2.send_body(bytes(data))
        except ClientDisconnected:
            raise trio.BrokenResourceError("stream reset") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.h2.end()
        await trio.lowlevel.checkpoint()


def _is_bare_end(event: OutboundEvent) -> bool:
    return type(event) is EndData and not event.headers


def raise_gone() -> None:
    raise ClientDisconnected("client disconnected")

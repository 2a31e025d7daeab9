"""One request stream of a multiplexed connection (HTTP/2 or HTTP/3) as the shared code
sees it.

:class:`Stream` is the request runner's port for a stream, the same class for both
versions: the connection's I/O loop feeds it the same events (``Data``, ``EndData``,
``StreamReset``; :meth:`Stream.vanish` when the connection ends), it keeps the body buffer,
the gone state, the waiters and the reset grace, and it frames the response through the
version's sans-IO protocol (:class:`~trioserve.sansio.streams.StreamFramer`), waiting for
window credit and for the connection's output to drain. :class:`StreamIO` shows the same
stream's DATA as a trio stream, so the WebSocket code runs over it (RFC 8441, RFC 9220)
through its usual :class:`~.peer.PeerStream`. :func:`serve_stream` is what a stream's task
runs on either version: a refusal, a WebSocket, or the request runner.

What stays per version is the connection's I/O loop (:mod:`.http2`, :mod:`.quic`), behind
:class:`StreamOwner`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Protocol

import trio

from ..errors import ClientDisconnected
from ..logs import error_log
from ..sansio.body import NOT_YET, BodyPiece
from ..sansio.events import (
    BadRequest,
    Data,
    EndData,
    InformationalResponse,
    OutboundEvent,
    Request,
    Response,
    Sentinel,
)
from ..sansio.streams import StreamAnswer, StreamFramer
from ..sansio.websocket import wants_websocket_h2
from .context import stream_context
from .peer import PeerStream
from .request import RequestRunner, drive_app, refuse_stream
from .state import ServerState
from .transport import ConnectionInfo
from .websocket import serve_websocket


class StreamOwner(Protocol):
    """What a stream needs of its connection's I/O loop (HTTP/2 or HTTP/3)."""

    state: ServerState
    info: ConnectionInfo

    @property
    def framer(self) -> StreamFramer:
        """The version's sans-IO protocol, as its streams frame with it."""

    def kick(self) -> None:
        """Frames are waiting: wake the sender."""

    async def wait_space(self) -> None:
        """Wait while the connection's output is above its mark (a checkpoint otherwise)."""

    async def wait_credit(self, stream_id: int) -> None:
        """Wait until this stream's send window may have opened (or the stream or the
        connection ended)."""

    def stream_done(self, stream: Stream) -> None:
        """The stream's task is ending: free its slot (always called, once)."""


class Stream:
    """One request stream as the request runner sees it (its ``RequestPort``)."""

    __slots__ = (
        "_body",
        "_end",
        "_gone",
        "_waiter",
        "cancel_scope",
        "conn",
        "framer",
        "headers_sent",
        "stream_id",
    )

    def __init__(self, conn: StreamOwner, stream_id: int) -> None:
        self.conn = conn
        self.framer = conn.framer
        self.stream_id = stream_id
        self._body: deque[bytes] = deque()
        self._end = False  # the request body ended (after what is in _body)
        self._gone = False
        self._waiter: trio.Event | None = None
        self.headers_sent = False
        self.cancel_scope = trio.CancelScope()

    # -- fed by the connection's I/O loop ---------------------------------------------------
    def on_event(self, event: object) -> None:
        cls = type(event)
        if cls is Data:
            self._body.append(event.data)  # type: ignore[attr-defined]
        elif cls is EndData:
            self._end = True
        else:  # StreamReset
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
        """Everything buffered, as one piece (as HTTP/1.1 gives what it has parsed), so an
        app is not woken once per DATA frame; acknowledged to flow control as it is taken."""
        if self._gone:
            return None
        body = self._body
        if body:
            data = body.popleft() if len(body) == 1 else b"".join(body)
            body.clear()
            if self.framer.consumed(self.stream_id, len(data)):
                self.conn.kick()
            return data, not self._end
        if self._end:
            return b"", False
        return NOT_YET

    async def receive_body(self, timeout: float | None) -> BodyPiece:
        """The next piece; ``trio.TooSlowError`` if none came within ``timeout`` (the
        runner then answers 408, or resets the stream once its response has started)."""
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            # A cancelled read must leave the body where it was (trio's rule: cancelled
            # means nothing happened), so the check comes before the piece is taken and
            # the schedule point after it cannot raise.
            await trio.lowlevel.checkpoint_if_cancelled()
            piece = self.body_piece()
            if piece is not NOT_YET:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return piece  # type: ignore[return-value]
            with trio.move_on_at(deadline):
                await self._wait()
                continue
            raise trio.TooSlowError

    def send_events(self, events: list[OutboundEvent]) -> Awaitable[None]:
        """HEADERS are framed now (not flow-controlled; a bad head raises before anything
        is written); the awaitable sends the body as the windows allow."""
        if self._gone:  # (a stream our side can no longer write is gone too)
            return _raise_gone()
        conn = self.conn
        head = events[0]
        cls = type(head)
        if cls is Response or cls is InformationalResponse:
            events = events[1:]
            # A response with nothing after it but the end goes as one HEADERS frame.
            end = cls is Response and len(events) == 1 and _is_bare_end(events[0])
            self.framer.send_headers(self.stream_id, head.status, head.headers, end)  # type: ignore[union-attr]
            conn.kick()
            if cls is Response:
                self.headers_sent = True
            if end or not events:
                return conn.wait_space()
        return self._send(events)

    async def _send(self, events: list[OutboundEvent]) -> None:
        framer = self.framer
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
                    framer.send_trailers(sid, event.headers)
                else:
                    framer.send_data(sid, b"", True)
                self.conn.kick()
        # One wait per send (a checkpoint at least): _send_data waits only between pieces.
        await self.conn.wait_space()

    async def _send_data(self, data: bytes, end: bool) -> None:
        conn = self.conn
        framer = self.framer
        sid = self.stream_id
        if not data:
            if end:
                framer.send_data(sid, b"", True)
                conn.kick()
            return
        pos = 0
        size = len(data)
        while pos < size:
            window = framer.send_window(sid)
            if window <= 0:
                if self._gone or not framer.is_open(sid):
                    raise_gone()
                await conn.wait_credit(sid)
                continue
            chunk = data if pos == 0 and window >= size else data[pos : pos + window]
            pos += len(chunk)
            framer.send_data(sid, chunk, end and pos == size)
            conn.kick()
            if pos < size:
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
        await self.conn.wait_space()
        if self._gone:
            raise_gone()

    def end(self) -> None:
        """End our side now (a WebSocket's close), unless the stream is already gone."""
        if not self._gone and self.framer.end_stream(self.stream_id):
            self.conn.kick()

    async def wait_disconnected(self) -> None:
        while not self._gone:
            await self._wait()

    def poll_disconnected(self) -> bool:
        return self._gone

    def close_after_response(self) -> None:
        """Other streams keep the connection: this one just ends with its response."""

    def abort(self) -> None:
        """Give up on the exchange: reset the stream (both ways) and count it gone."""
        if not self._gone:
            self.framer.reset(self.stream_id, trio.current_time())
            self.conn.kick()
            self.vanish()

    def send_soon(self, events: list[OutboundEvent]) -> None:
        """A held response head, released while the app waits: ``send_events`` frames
        HEADERS at once and the connection's writer sends them, so what it returns (a
        wait for buffer space) is dropped unstarted."""
        write = self.send_events(events)
        if isinstance(write, Coroutine):
            write.close()  # (a coroutine never started: nothing to wait for)

    async def send_file(self, fd: int, size: int) -> bool:
        """No sendfile on a multiplexed stream: its DATA is framed (and, for HTTP/3,
        encrypted) by us, so the runner sends the file in pieces."""
        await trio.lowlevel.checkpoint()
        return False

    async def refuse(self, status: int, reason: str | None) -> None:
        conn = self.conn
        answered = self._gone or self.headers_sent
        await refuse_stream(self, conn.info, conn.state, status, reason, answered)


class StreamIO(trio.abc.Stream):
    """One stream's DATA as a trio stream, so the WebSocket code (through its
    :class:`~.peer.PeerStream`) runs over HTTP/2 and HTTP/3 unchanged. Reads acknowledge
    flow control as they take data; writes wait for window credit; closing ends the stream."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        stream = self.stream
        while True:
            # As in Stream.receive_body: a read cancelled by the WebSocket's keep-alive
            # deadline must not take the bytes with it (they were the peer's close frame).
            await trio.lowlevel.checkpoint_if_cancelled()
            piece = stream.body_piece()
            if piece is NOT_YET:
                await stream.wait_for_body()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            if piece is None:
                return b""
            data, more = piece  # type: ignore[misc]
            if data or not more:
                return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            await self.stream.send_body(bytes(data))
        except ClientDisconnected:
            raise trio.BrokenResourceError("stream reset") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.end()
        await trio.lowlevel.checkpoint()


async def serve_stream(
    stream: Stream, request: Request | BadRequest, nursery: trio.Nursery
) -> None:
    """A stream's task on either version: the refusal the sans-IO rules decided (for this
    stream only), a WebSocket (extended CONNECT), or the request runner. Inside the
    stream's cancel scope (the reset grace); no exception leaves it (a failure is logged
    once and the stream reset, the connection carries on); the connection always hears
    of its end (``stream_done``). ``nursery`` takes a WebSocket's helper tasks."""
    conn = stream.conn
    try:
        with stream.cancel_scope:
            if isinstance(request, BadRequest):
                await _refuse(stream, request)
            elif request.method == b"CONNECT" and wants_websocket_h2(request):
                await _serve_websocket(stream, request, nursery)
            else:
                context = stream_context(conn.state.config.reset_contextvars)
                await RequestRunner(stream, conn.state, request, conn.info, context).run()
    except Exception:
        error_log.exception("%s: stream %d failed", conn.info.client_text, stream.stream_id)
        stream.abort()
    finally:
        conn.stream_done(stream)


async def _refuse(stream: Stream, refusal: BadRequest) -> None:
    conn = stream.conn  # (stream.refuse counts the refusal once it answers it)
    if refusal.quiet:
        error_log.debug("%s %s: %s", conn.info.client_text, refusal.status, refusal.reason)
    await stream.refuse(refusal.status, None if refusal.quiet else refusal.reason)


async def _serve_websocket(stream: Stream, request: Request, nursery: trio.Nursery) -> None:
    """Extended CONNECT (RFC 8441, RFC 9220): the shared WebSocket code over the stream's
    DATA, answering through its own HTTP side (:class:`~..sansio.streams.StreamAnswer`)."""
    conn = stream.conn
    stream.headers_sent = True
    answer = StreamAnswer(stream.framer, stream.stream_id, conn.kick)
    io = StreamIO(stream)
    try:
        state = conn.state
        websocket = serve_websocket(PeerStream(io), state, conn.info, answer, request, nursery)
        context = stream_context(state.config.reset_contextvars)
        await (websocket if context is None else drive_app(websocket, context, None))
    finally:
        await io.aclose()


def _is_bare_end(event: OutboundEvent) -> bool:
    return type(event) is EndData and not event.headers


def raise_gone() -> None:
    raise ClientDisconnected("client disconnected")


async def _raise_gone() -> None:
    await trio.lowlevel.checkpoint()
    raise_gone()

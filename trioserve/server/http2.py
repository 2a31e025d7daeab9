"""One HTTP/2 connection: a read loop, a writer, and one task per stream.

- The **read loop** feeds h2 (through :class:`~trioserve.sansio.http2.H2Protocol`) and
  hands each stream its events without ever waiting on an app: DATA goes into the
  stream's buffer (bounded by the window we advertised, since DATA is acknowledged only as
  the app consumes it), a new request starts a task in the connection's nursery. It waits
  only on the socket, and on the writer when our output piles up (a client that does not
  read its PING ACKs stops being read).
- The **writer** is the only task that writes to the socket; streams and the reader put
  frames into the protocol's buffer and wake it. A stream's ``send`` waits for window
  credit and for the buffer to drain below a mark, so a stream with no credit blocks only
  itself, and streams with data take turns frame by frame.
- Each **stream** runs the version-independent request runner
  (:class:`~trioserve.server.request.RequestRunner`) over :class:`H2Stream`, its port; a
  WebSocket stream (RFC 8441) runs the shared WebSocket code over the stream's DATA.

Lifetime: the connection ends at the peer's EOF or GOAWAY, a protocol error (our GOAWAY
with its code, logged once), the idle timeout or ``keep_alive_max_requests`` (GOAWAY, then
open streams finish), or shutdown (GOAWAY; ``graceful_timeout`` bounds the rest, since no
write is shielded). A reset or vanished stream's app is told at once (``http.disconnect``,
``ClientDisconnected``) and cancelled ``h2_reset_grace`` seconds later.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable

import trio
from trio.lowlevel import ParkingLot

from ..errors import ClientDisconnected
from ..logs import error_log
from ..sansio.body import NOT_YET, BodyPiece
from ..sansio.events import (
    ConnectionClosed,
    Data,
    EndData,
    InformationalResponse,
    OutboundEvent,
    Request,
    Response,
    Sentinel,
    StreamReset,
)
from ..sansio.http2 import (
    ErrorCodes,
    H2Event,
    H2Limits,
    H2Protocol,
    H2StreamAnswer,
    H2Switch,
    SendCredit,
)
from ..sansio.websocket import wants_websocket_h2
from .peer import STREAM_ERRORS, PeerStream
from .request import REFUSED, RequestRunner
from .state import ServerState
from .transport import ConnectionInfo, linger_close
from .websocket import serve_websocket

READ_SIZE = 64 * 1024
# Our output waiting for the socket: streams pause above this, the reader far above it.
_SEND_MARK = 64 * 1024
_READ_MARK = 1024 * 1024
# How long the last frames (GOAWAY) may take to leave once the connection is over.
_FINAL_FLUSH = 2.0


def h2_limits(state: ServerState) -> H2Limits:
    config = state.config
    return H2Limits(
        max_concurrent_streams=config.h2_max_concurrent_streams,
        max_header_list_size=config.h2_max_header_list_size,
        max_inbound_frame_size=config.h2_max_inbound_frame_size,
        stream_window=config.h2_stream_window,
        connection_window=config.h2_connection_window,
        reset_rate=config.h2_reset_rate,
        reset_burst=config.h2_reset_burst,
    )


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

    def __init__(self, conn: HTTP2Connection, stream_id: int) -> None:
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
        for event in events:
            if self._gone:
                raise_gone()
            if type(event) is Data:
                await self._send_data(event.data, False)
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

    async def refuse(self, status: int, reason: str) -> None:
        error_log.info("%s %s: %s", self.conn.info.client_text, status, reason)
        if self._gone or self.headers_sent:
            return
        body = b"%d\n" % status
        headers = [
            *self.conn.state.default_headers(),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        try:
            await self.send_events([Response(status, headers), Data(body), EndData()])
        except ClientDisconnected:
            pass


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


class HTTP2Connection:
    """Serves the streams of one HTTP/2 connection; see the module docstring."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        state: ServerState,
        info: ConnectionInfo,
        *,
        switch: H2Switch | None = None,
    ) -> None:
        self.stream = stream
        self.state = state
        self.info = info
        switch = switch or H2Switch()
        self._received = switch.received  # bytes read before we knew it was HTTP/2
        self._upgrade = switch.upgrade  # h2c: the HTTP/1.1 request, served as stream 1
        self.proto = H2Protocol(h2_limits(state), upgrade_settings=switch.settings)
        self.streams: dict[int, H2Stream] = {}
        self.requests = 0
        self._writer_wake = trio.Event()
        self._space = ParkingLot()
        self._credit = ParkingLot()
        self._broken = False
        self._read_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    # -- what streams use ------------------------------------------------------------------
    def kick(self) -> None:
        self._writer_wake.set()

    async def wait_space(self) -> None:
        if self.proto.pending_output > _SEND_MARK and not self._broken:
            await self._space.park()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_credit(self) -> None:
        await self._credit.park()

    def consumed(self, stream_id: int, size: int) -> None:
        self.proto.consumed(stream_id, size)
        if self.proto.pending_output:
            self.kick()

    # -- the connection --------------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        state.shutdown_hooks.add(self._on_shutdown)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                async with trio.open_nursery() as streams:
                    self._nursery = streams
                    if self._upgrade is not None:
                        self._start_stream(1, self._upgrade, upgraded=True)
                    if state.shutting_down:
                        self._on_shutdown()
                    with self._read_scope:
                        await self._read_loop()
                    self._end_streams()
                self._finish()
                nursery.cancel_scope.deadline = trio.current_time() + _FINAL_FLUSH
            if not self._broken:
                # We ended it (GOAWAY): FIN, then drop what the client still sends, so a
                # reset does not destroy our last frames before the client reads them.
                await linger_close(self.stream)
        finally:
            state.shutdown_hooks.discard(self._on_shutdown)
        if self.proto.error is not None:
            error_log.info(
                "%s: HTTP/2 connection error: %s", self.info.client_text, self.proto.error
            )

    async def _read_loop(self) -> None:
        config = self.state.config
        proto = self.proto
        data = self._received
        self._received = b""
        while True:
            if data:
                self._dispatch(proto.receive_data(data, trio.current_time()))
                if proto.pending_output:
                    self.kick()
            if proto.closed or self._broken or self._drained():
                return
            while proto.pending_output > _READ_MARK and not self._broken:
                await self._space.park()  # a peer that does not read is not read either
            idle = proto.running == 0
            timeout = config.keep_alive_timeout if idle else math.inf
            with trio.move_on_after(timeout) as idle_scope:
                try:
                    data = bytes(await self.stream.receive_some(READ_SIZE))
                except STREAM_ERRORS:
                    data = b""
                if not data:
                    self._broken = True
                    return
            if idle_scope.cancelled_caught:
                self._goaway()
                return

    def _drained(self) -> bool:
        """GOAWAY was sent and every stream has finished: the connection is done."""
        return self.proto.last_stream_id is not None and self.proto.running == 0

    def _dispatch(self, events: list[H2Event]) -> None:
        streams = self.streams
        for stream_id, event in events:
            cls = type(event)
            if cls is Request:
                self._start_stream(stream_id, event)  # type: ignore[arg-type]
            elif cls is SendCredit:
                self._credit.unpark_all()
            elif cls is ConnectionClosed:
                self._end_streams()
            else:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_event(event)
                    if cls is StreamReset:
                        self._credit.unpark_all()  # its sender must see it's gone

    def _start_stream(self, stream_id: int, request: Request, upgraded: bool = False) -> None:
        assert self._nursery is not None
        stream = self.streams[stream_id] = H2Stream(self, stream_id)
        if upgraded:
            stream.on_event(EndData())
        self.requests += 1
        if self.requests >= self.state.config.keep_alive_max_requests:
            self._goaway()
        self._nursery.start_soon(self._serve_stream, stream, request)

    async def _serve_stream(self, stream: H2Stream, request: Request) -> None:
        try:
            with stream.cancel_scope:
                if request.method == b"CONNECT":
                    await self._serve_connect(stream, request)
                    return
                runner = RequestRunner(stream, self.state, request, self.info)
                if await runner.run() == REFUSED:
                    return
        finally:
            del self.streams[stream.stream_id]
            self.proto.stream_finished(stream.stream_id, trio.current_time())
            self.kick()
            if self._drained():
                self._read_scope.cancel()

    async def _serve_connect(self, stream: H2Stream, request: Request) -> None:
        """Extended CONNECT for a WebSocket (RFC 8441) runs the shared WebSocket code over
        the stream; any other CONNECT gets an error response (we do not tunnel)."""
        if wants_websocket_h2(request):
            assert self._nursery is not None
            stream.headers_sent = True  # the WebSocket answers through its own HTTP side
            answer = H2StreamAnswer(self.proto, stream.stream_id, self.kick)
            peer = PeerStream(H2StreamIO(stream))
            await serve_websocket(peer, self.state, self.info, answer, request, self._nursery)
            return
        if request.protocol is None:
            await stream.refuse(405, "CONNECT is not supported")
        else:
            await stream.refuse(501, "unknown :protocol")

    def _end_streams(self) -> None:
        for stream in list(self.streams.values()):
            stream.vanish()
        self._credit.unpark_all()
        self._space.unpark_all()

    def _goaway(self) -> None:
        self.proto.goaway()
        self.kick()
        if self._drained():
            self._read_scope.cancel()

    def _on_shutdown(self) -> None:
        self._goaway()

    def _finish(self) -> None:
        """Every stream is done: let the writer send what is left, then stop."""
        self.proto.goaway()
        self._closing = True
        self.kick()

    async def _write_loop(self) -> None:
        proto = self.proto
        self._closing = False
        while True:
            data = proto.data_to_send()
            if data:
                try:
                    await self.stream.send_all(data)
                except STREAM_ERRORS:
                    self._broken = True
                    self._read_scope.cancel()
                    self._end_streams()
                    return
                self._space.unpark_all()
                continue
            self._space.unpark_all()
            if self._closing:
                return
            self._writer_wake = trio.Event()
            await self._writer_wake.wait()

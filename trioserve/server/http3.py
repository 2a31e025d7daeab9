"""One HTTP/3 request stream: the connection interface the request runner talks to.

:class:`H3Stream` is what a request sees of its QUIC stream: body chunks the connection
task fed it (bounded: the stream's receive window only grows as the app reads, see
:mod:`trioserve.sansio.quic`), response events written into aioquic with ``send()``
waiting while more than ``h3_stream_buffer_size`` bytes wait unsent, and the peer's
RESET_STREAM / STOP_SENDING. After those, nothing more is written on the stream (ours is
reset, the client's stopped), the app's ``receive()`` gets ``http.disconnect``, ``send()``
raises :class:`~trioserve.errors.ClientDisconnected`, and the task is cancelled
``h2_reset_grace`` seconds later (the same grace as an HTTP/2 stream).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import trio
from aioquic.h3.connection import ErrorCode, H3Connection
from aioquic.h3.connection import ProtocolError as H3ProtocolError

from ..errors import ClientDisconnected
from ..logs import error_log
from ..sansio.body import NOT_YET, BodyPiece
from ..sansio.events import (
    Data,
    EndData,
    Headers,
    InformationalResponse,
    OutboundEvent,
    ProtocolError,
    Request,
    Response,
    Sentinel,
)
from ..sansio.http3 import H3Refusal, H3StreamAnswer, response_fields, trailer_fields
from ..sansio.websocket import wants_websocket_h2
from .context import stream_context
from .peer import PeerStream
from .request import RequestRunner, drive_app, refuse_stream
from .websocket import serve_websocket

if TYPE_CHECKING:
    from ..sansio.quic import BoundedQuicConnection
    from .quic import QuicConnectionTask


class H3Stream:
    """A request stream's state, shared by the connection task and the stream's task."""

    __slots__ = (
        "_body",
        "_readable",
        "_writable",
        "conn",
        "ended",
        "gone",
        "head_sent",
        "request",
        "scope",
        "stream_id",
    )

    def __init__(
        self,
        conn: QuicConnectionTask,
        stream_id: int,
        request: Request | H3Refusal,
        *,
        ended: bool,
    ) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.request = request
        self.ended = ended  # the client finished its body
        self.gone = False  # reset / stop-sending by the peer, or the connection is gone
        self.head_sent = False
        self.scope: trio.CancelScope | None = None
        self._body: deque[bytes] = deque()
        self._readable: trio.Event | None = None
        self._writable: trio.Event | None = None

    # -- fed by the connection task ---------------------------------------------------------
    def feed(self, data: bytes, ended: bool) -> None:
        if self.gone:
            return  # nobody will read it; the client was asked to stop sending
        if data:
            self._body.append(data)
            self.conn.quic.received(self.stream_id, len(data))
        if ended:
            self.ended = True
        if (data or ended) and self._readable is not None:
            self._readable.set()

    def peer_gone(self) -> None:
        """The client reset or stopped the stream (or the connection ended)."""
        if self.gone:
            return
        self.gone = True
        conn = self.conn
        self._body.clear()
        if not conn.terminated:
            # Both directions end: nothing more goes out on this stream whatever the app
            # does, and the client stops sending a body nobody will read.
            conn.quic.reset_stream(self.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            if not self.ended:
                conn.quic.stop_receiving(self.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            conn.wake()
        for event in (self._readable, self._writable):
            if event is not None:
                event.set()
        if self.scope is not None:
            grace = conn.state.config.h2_reset_grace
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace)

    def writable(self, quic: BoundedQuicConnection) -> bool:
        """Called after a flush: wake a blocked send() once its backlog has drained."""
        limit = self.conn.state.config.h3_stream_buffer_size
        if self.gone or quic.send_backlog(self.stream_id) <= limit:
            if self._writable is not None:
                self._writable.set()
            return True
        return False

    # -- the RequestPort (used by the request's task) --------------------------------------
    @property
    def can_inform(self) -> bool:
        return not self.head_sent and not self.gone

    def body_piece(self) -> BodyPiece | Sentinel:
        if self.gone:
            return None
        body = self._body
        if not body:
            return (b"", False) if self.ended else NOT_YET
        chunk = body.popleft()
        conn = self.conn
        conn.quic.consumed(self.stream_id, len(chunk))
        conn.wake()  # the window may have opened: the flush sends MAX_STREAM_DATA
        return chunk, bool(body) or not self.ended

    async def receive_body(self, timeout: float | None) -> BodyPiece:
        while True:
            piece = self.body_piece()
            if piece is not NOT_YET:
                await trio.lowlevel.checkpoint()
                return piece  # type: ignore[return-value]
            self._readable = trio.Event()
            try:
                with trio.fail_after(math.inf if timeout is None else timeout):
                    await self._readable.wait()
            except trio.TooSlowError:
                error_log.info(
                    "%s: HTTP/3 request body read timed out", self.conn.info.client_text
                )
                self.abort()
                return None
            finally:
                self._readable = None

    def send_events(self, events: list[OutboundEvent]) -> Awaitable[None]:
        """Frame into aioquic now (nothing is framed once the peer is gone); the returned
        awaitable waits while the stream's unsent bytes are over the bound."""
        if self.gone or not self.conn.quic.can_send(self.stream_id):
            return self._raise_gone()
        h3 = self.conn.h3
        assert h3 is not None
        try:
            self._frame(h3, events)
        except H3ProtocolError as exc:  # a wrong event order aioquic refuses to frame
            raise ProtocolError(str(exc)) from None
        self.conn.wake()
        return self._drain()

    def _frame(self, h3: H3Connection, events: list[OutboundEvent]) -> None:
        stream_id = self.stream_id
        count = len(events)
        i = 0
        while i < count:
            event = events[i]
            # An EndData without trailers right behind a head or a body chunk rides on that
            # frame's FIN.
            nxt = events[i + 1] if i + 1 < count else None
            end = type(nxt) is EndData and not nxt.headers
            cls = type(event)
            if cls is Response or cls is InformationalResponse:
                fields = response_fields(event.status, self._headers(event.headers))  # type: ignore[union-attr]
                h3.send_headers(stream_id, fields, end)
                self.head_sent = self.head_sent or cls is Response
            elif cls is Data:
                h3.send_data(stream_id, event.data, end)  # type: ignore[union-attr]
            elif cls is EndData:
                if event.headers:  # type: ignore[union-attr]
                    h3.send_headers(stream_id, trailer_fields(event.headers), True)  # type: ignore[union-attr]
                else:
                    h3.send_data(stream_id, b"", True)
            i += 2 if end else 1

    def _headers(self, headers: Headers) -> Headers:
        """Default headers minus Alt-Svc: it advertises HTTP/3 to HTTP/1.1 clients."""
        alt_svc = self.conn.state.alt_svc
        if not alt_svc:
            return headers
        return [h for h in headers if h[0] != b"alt-svc" or h not in alt_svc]

    async def _raise_gone(self) -> None:
        await trio.lowlevel.checkpoint()
        raise ClientDisconnected("client reset the HTTP/3 stream")

    async def _drain(self) -> None:
        conn = self.conn
        quic = conn.quic
        limit = conn.state.config.h3_stream_buffer_size
        while quic.send_backlog(self.stream_id) > limit and not self.gone:
            self._writable = trio.Event()
            conn.wait_writable(self)
            try:
                await self._writable.wait()
            finally:
                self._writable = None
        if self.gone:
            raise ClientDisconnected("client reset the HTTP/3 stream")
        await trio.lowlevel.checkpoint()

    async def wait_disconnected(self) -> None:
        while not self.gone:
            self._readable = trio.Event()
            try:
                await self._readable.wait()
            finally:
                self._readable = None

    def poll_disconnected(self) -> bool:
        return self.gone

    def close_after_response(self) -> None:
        """Nothing to do: other streams on the connection are unaffected."""

    def abort(self) -> None:
        """The response cannot be completed: reset our side (H3_INTERNAL_ERROR)."""
        conn = self.conn
        if not self.gone and not conn.terminated:
            conn.quic.reset_stream(self.stream_id, ErrorCode.H3_INTERNAL_ERROR)
            conn.wake()

    async def refuse(self, status: int, reason: str | None) -> None:
        """A short error answer in place of the app's, then the stream is done."""
        conn = self.conn
        answered = self.gone or self.head_sent
        await refuse_stream(self, conn.info, conn.state, status, reason, answered)


def quic_tls_extension(quic: BoundedQuicConnection, server_cert: str | None) -> dict[str, Any]:
    """The ASGI ``tls`` extension for a QUIC connection (always TLS 1.3)."""
    schedule = getattr(quic.tls, "key_schedule", None)
    suite = getattr(schedule, "cipher_suite", None)
    return {
        "server_cert": server_cert,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": int(suite) if suite is not None else None,
    }


async def serve_stream(conn: QuicConnectionTask, stream: H3Stream) -> None:
    """Run one request stream through the shared request runner; the connection always
    hears of its end, and no exception leaves the task."""
    try:
        with trio.CancelScope() as scope:
            stream.scope = scope
            if stream.gone:
                scope.deadline = trio.current_time() + conn.state.config.h2_reset_grace
            request = stream.request
            if isinstance(request, H3Refusal):
                await stream.refuse(request.status, request.reason)
            elif wants_websocket_h2(request):
                await _serve_websocket(conn, stream, request)
            else:
                context = stream_context(conn.state.config.reset_contextvars)
                await RequestRunner(stream, conn.state, request, conn.info, context).run()
    except Exception:
        error_log.exception("HTTP/3 stream %d failed", stream.stream_id)
        stream.abort()
    finally:
        conn.stream_done(stream)


async def _serve_websocket(conn: QuicConnectionTask, stream: H3Stream, request: Request) -> None:
    """Extended CONNECT for a WebSocket (RFC 9220): the shared WebSocket code runs over the
    stream's DATA, as over an HTTP/2 stream (RFC 8441)."""
    h3 = conn.h3
    assert h3 is not None and conn.nursery is not None
    stream.head_sent = True  # the WebSocket answers through its own HTTP side
    stream_id = stream.stream_id

    def can_send() -> bool:
        return not stream.gone and conn.quic.can_send(stream_id)

    answer = H3StreamAnswer(h3, stream_id, can_send, conn.wake)
    io = H3StreamIO(stream)
    try:
        websocket = serve_websocket(
            PeerStream(io), conn.state, conn.info, answer, request, conn.nursery
        )
        context = stream_context(conn.state.config.reset_contextvars)
        await (websocket if context is None else drive_app(websocket, context, None))
    finally:
        await io.aclose()


class H3StreamIO(trio.abc.Stream):
    """One HTTP/3 stream's DATA as a trio stream, so the WebSocket code (through its
    :class:`~.peer.PeerStream`) runs over HTTP/3 unchanged. Reads credit the receive window
    as they take data; writes wait as ``send()`` does; closing sends FIN."""

    def __init__(self, stream: H3Stream) -> None:
        self.h3 = stream
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            piece = await self.h3.receive_body(None)
            if piece is None:
                return b""
            data, more = piece
            if data or not more:
                return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            await self.h3.send_events([Data(bytes(data))])
        except ClientDisconnected:
            raise trio.BrokenResourceError("stream reset") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            stream = self.h3
            if not stream.gone and stream.conn.quic.can_send(stream.stream_id):
                try:
                    await stream.send_events([EndData()])
                except ClientDisconnected:
                    pass
        await trio.lowlevel.checkpoint()

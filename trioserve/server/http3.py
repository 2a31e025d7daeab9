"""One HTTP/3 request stream: the connection interface the request runner talks to.

:class:`H3Stream` is what a request sees of its QUIC stream: body chunks the connection
task fed it (bounded: the stream's receive window only grows as the app reads, see
:mod:`trioserve.sansio.quic`), response events written into aioquic with ``send()``
waiting while more than ``h3_stream_buffer_size`` bytes are unacknowledged, and the peer's
RESET_STREAM / STOP_SENDING. After those, nothing more is written on the stream, the app's
``receive()`` gets ``http.disconnect``, ``send()`` raises
:class:`~trioserve.errors.ClientDisconnected`, and the task is cancelled after
``STREAM_RESET_GRACE`` seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import trio
from aioquic.h3.connection import ErrorCode

from ..errors import ClientDisconnected
from ..logs import access_log, error_log
from ..sansio.accesslog import AccessLogAtoms, format_access_line
from ..sansio.asgi import HTTPResponseCycle, UnexpectedMessage, build_http_scope
from ..sansio.events import Data, EndData, OutboundEvent, Request, Response
from ..sansio.http3 import H3Refusal, response_fields

if TYPE_CHECKING:
    from ..sansio.quic import BoundedQuicConnection
    from .quic import QuicConnectionTask

# Seconds a reset stream's app gets to notice (disconnect / ClientDisconnected) before its
# task is cancelled.
STREAM_RESET_GRACE = 1.0


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
        if not conn.terminated:
            # Our side too: nothing more goes out on this stream, whatever the app does.
            conn.quic.reset_stream(self.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            conn.wake()
        for event in (self._readable, self._writable):
            if event is not None:
                event.set()
        if self.scope is not None:
            self.scope.deadline = min(
                self.scope.deadline, trio.current_time() + STREAM_RESET_GRACE
            )

    def writable(self, quic: BoundedQuicConnection) -> bool:
        """Called after a flush: wake a blocked send() once its backlog has drained."""
        limit = self.conn.state.config.h3_stream_buffer_size
        if self.gone or quic.send_backlog(self.stream_id) <= limit:
            if self._writable is not None:
                self._writable.set()
            return True
        return False

    # -- used by the request's task ---------------------------------------------------------
    async def next_body(self, timeout: float | None) -> tuple[bytes, bool] | None:
        """The next body chunk and whether more follows; None when the client is gone.

        Raises ``trio.TooSlowError`` when nothing arrives within ``timeout``.
        """
        while not self._body and not self.ended and not self.gone:
            self._readable = trio.Event()
            with trio.fail_after(math_inf_if_none(timeout)):
                await self._readable.wait()
            self._readable = None
        if self.gone:
            return None
        if not self._body:
            await trio.lowlevel.checkpoint()
            return b"", False
        chunk = self._body.popleft()
        conn = self.conn
        conn.quic.consumed(self.stream_id, len(chunk))
        conn.wake()  # the window may have opened: let the flush send MAX_STREAM_DATA
        return chunk, bool(self._body) or not self.ended

    async def send(self, events: list[OutboundEvent]) -> None:
        """Write response events; wait while the stream's unacknowledged bytes are over the
        bound. Raises ClientDisconnected once the peer is gone."""
        conn = self.conn
        quic = conn.quic
        h3 = conn.h3
        if self.gone or h3 is None or not quic.can_send(self.stream_id):
            raise ClientDisconnected("client reset the stream")
        count = len(events)
        i = 0
        while i < count:
            event = events[i]
            # An EndData right behind a head or a body chunk rides on its frame's FIN.
            end = i + 1 < count and type(events[i + 1]) is EndData
            if type(event) is Response:
                fields = response_fields(event.status, event.headers)
                h3.send_headers(self.stream_id, fields, end)
                self.head_sent = True
            elif type(event) is Data:
                h3.send_data(self.stream_id, event.data, end)
            elif type(event) is EndData:
                h3.send_data(self.stream_id, b"", True)
            i += 2 if end else 1
        conn.wake()
        limit = conn.state.config.h3_stream_buffer_size
        while quic.send_backlog(self.stream_id) > limit and not self.gone:
            self._writable = trio.Event()
            conn.wait_writable(self)
            await self._writable.wait()
            self._writable = None
        if self.gone:
            raise ClientDisconnected("client reset the stream")

    async def wait_gone(self) -> None:
        """Block until the client resets the stream or the connection ends."""
        while not self.gone:
            self._readable = trio.Event()
            await self._readable.wait()
            self._readable = None

    def abort(self) -> None:
        """The response cannot be completed: reset our side (H3_INTERNAL_ERROR)."""
        if not self.gone and not self.conn.terminated:
            self.conn.quic.reset_stream(self.stream_id, ErrorCode.H3_INTERNAL_ERROR)
            self.conn.wake()


def math_inf_if_none(timeout: float | None) -> float:
    return float("inf") if timeout is None else timeout


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


_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


async def serve_stream(conn: QuicConnectionTask, stream: H3Stream) -> None:
    """Run one request stream to its end; whatever happens, the connection hears of it."""
    try:
        with trio.CancelScope() as scope:
            stream.scope = scope
            if stream.gone:
                scope.deadline = trio.current_time() + STREAM_RESET_GRACE
            await _run_request(conn, stream)
    except Exception:
        error_log.exception("HTTP/3 stream %d failed", stream.stream_id)
        stream.abort()
    finally:
        conn.stream_done(stream)


async def _run_request(conn: QuicConnectionTask, stream: H3Stream) -> None:
    """Interim request runner (until the shared one lands): app call, receive, send, 500."""
    state = conn.state
    request = stream.request
    if isinstance(request, H3Refusal):
        error_log.info("%s %s: %s", conn.info.client_text, request.status, request.reason)
        body = request.reason.encode() + b"\n"
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await stream.send([Response(request.status, headers), Data(body), EndData()])
        return
    scope = state.scope_for(build_http_scope, request, conn.info)
    cycle = HTTPResponseCycle(
        is_head=request.method == b"HEAD", default_headers=state.default_headers_h3()
    )
    done = False
    body_done = False
    start = time.perf_counter()

    async def receive() -> dict[str, Any]:
        nonlocal body_done
        if done:
            return _DISCONNECT
        if body_done:
            await stream.wait_gone()
            return _DISCONNECT
        try:
            got = await stream.next_body(state.config.read_timeout)
        except trio.TooSlowError:
            stream.abort()
            return _DISCONNECT
        if got is None:
            await stream.wait_gone()
            return _DISCONNECT
        body_done = not got[1]
        return {"type": "http.request", "body": got[0], "more_body": got[1]}

    async def send(message: MutableMapping[str, Any]) -> None:
        if done:
            raise ClientDisconnected("response already complete")
        events = cycle.on_message(message)
        if events:
            await stream.send(events)

    state.in_flight += 1
    try:
        await state.app(scope, receive, send)
    except Exception as exc:
        if not stream.gone and not isinstance(exc, ClientDisconnected):
            error_log.error(
                "Exception in ASGI application (%s %s)",
                scope["method"],
                scope["path"],
                exc_info=exc,
            )
        if not stream.gone:
            if cycle.on_the_wire:
                stream.abort()
            else:
                await _send_500(stream, state.default_headers_h3(), cycle)
    else:
        if cycle.state != 2 and not stream.gone:
            error_log.error(
                "ASGI app returned without completing the response (%s %s)",
                scope["method"],
                scope["path"],
            )
            if cycle.on_the_wire:
                stream.abort()
            else:
                await _send_500(stream, state.default_headers_h3(), cycle)
    finally:
        done = True
        state.in_flight -= 1
        state.count_request()
    if access_log.isEnabledFor(20):
        atoms = AccessLogAtoms(
            scope, cycle.status or None, None, cycle.bytes_sent, time.perf_counter() - start
        )
        access_log.info(format_access_line(state.config.access_log_format, atoms))


async def _send_500(stream: H3Stream, defaults: Any, cycle: HTTPResponseCycle) -> None:
    cycle.status = 500
    body = b"Internal Server Error\n"
    headers = [*defaults, (b"content-type", b"text/plain; charset=utf-8")]
    try:
        await stream.send([Response(500, headers), Data(body), EndData()])
    except (ClientDisconnected, UnexpectedMessage):
        pass

"""One WebSocket, from the upgrade request its connection hands over to the end: an
HTTP/1.1 connection, or one stream of an HTTP/2 (RFC 8441) or HTTP/3 (RFC 9220)
connection, served by the same code with the same pings, watchdog and shutdown close.

The app runs in the connection's task, as for HTTP, and nothing else runs per WebSocket
in the common case:

- ``receive()`` pulls: it reads from the socket only when the app wants a message and
  none is parsed yet, feeds wsproto, and writes what the protocol owes the peer (pongs,
  the close echo, a 1009 or 1002 close) itself, batched per read. A slow app therefore
  stops the reads and TCP pushes back on the client, without a queue or a reader task.
- keep-alive pings (``websocket_ping_interval``) are driven by a deadline on that read:
  when it expires the reader sends the ping, or closes with 1011 when the pong is overdue
  (``websocket_ping_timeout``); the app then sees a 1006 disconnect.
- an app that stays away from ``receive()`` (it only streams out, or is busy) must still
  answer pings and notice the client's close. One watchdog task per server looks at the
  open WebSockets once a second; for one whose app has not called ``receive()`` for a
  whole interval and nobody is reading, it starts a *pump*: a task that reads on the
  app's behalf into a small buffer (``max_app_queue_size`` messages, then it stops:
  backpressure) and hands the socket back as soon as the app calls ``receive()`` again.
  An app that sends twice with no ``receive()`` between gets its pump at once, without
  waiting for the watchdog. A client close the pump reads makes the app's next ``send()``
  raise ClientDisconnected.
- the shutdown close: when graceful shutdown begins (a hook in ``ServerState``) a short
  task writes the 1001 close; the app then has until the connections nursery's deadline
  (``graceful_timeout``) to finish.

Helper tasks (pump, watchdog, shutdown close) run in the nursery the connection hands
over (the server's connections nursery today), so they share its graceful deadline and an
idle WebSocket carries no nursery of its own.

Reads and writes go through the connection's :class:`~trioserve.server.peer.PeerStream`
(one reader and one writer at a time, trio's errors translated there). The app's
``send()`` writes straight to the socket (a slow client slows the app). No send is ever
shielded, so the shutdown deadline holds. The reading side (pings, the pump) is
:class:`~.wsread.WebSocketReader`; the gates, counts, access log and the meaning of an
app's exception are :class:`~.exchange.Exchange`'s, shared with HTTP requests.
"""

from __future__ import annotations

import math
from collections.abc import Coroutine, MutableMapping
from typing import Any

import trio

from ..errors import ClientDisconnected
from ..logs import access_log, error_log
from ..sansio.events import Headers, Request
from ..sansio.websocket import (
    CLOSED,
    OPEN,
    HandshakeAnswer,
    HandshakeError,
    SessionClosed,
    WebSocketSession,
    build_websocket_scope,
    check_handshake,
)
from .exchange import REFUSAL_REASONS, Exchange
from .faults import belongs_to_server
from .peer import READ_SIZE, STREAM_ERRORS, PeerStream
from .state import ServerState
from .transport import ConnectionInfo
from .wsread import WebSocketReader
from .wswatch import watchdog_for

# How long we wait for the peer's close frame after we sent ours, before dropping it.
CLOSE_TIMEOUT = 5.0

_GONE: dict[str, Any] = {"type": "websocket.disconnect", "code": 1006, "reason": ""}
_CONNECT: dict[str, Any] = {"type": "websocket.connect"}
_SHUTDOWN_NAME = f"{__name__}.WebSocketHandler._close_on_shutdown"


def serve_websocket(
    peer: PeerStream,
    state: ServerState,
    info: ConnectionInfo,
    proto: HandshakeAnswer,
    request: Request,
    nursery: trio.Nursery,
) -> Coroutine[Any, Any, None]:
    """Serve one upgrade request: ``await`` it; it returns when the WebSocket (or the
    refusal) is over. Helper tasks start in ``nursery``.

    The same code serves WebSockets over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): ``peer``
    then reads and writes one stream's DATA and ``proto`` is the stream's answer
    (:class:`~trioserve.sansio.streams.StreamAnswer`).

    A plain function returning the coroutine to await (the WebSocket's ``run()`` or a
    refusal), so no frame of its own stays on the stack of an idle WebSocket. The caller
    closes the stream afterwards; the connection is never reused for HTTP.
    """
    try:
        key = check_handshake(request)
    except HandshakeError as exc:
        return _refuse(peer, state, info, exc.status, str(exc), exc.headers, proto)
    handler = WebSocketHandler(peer, state, info, proto, request, key, nursery)
    # The same gates as HTTP requests (server_names, limit_concurrency), the same code.
    status = handler._admit(request)
    if status:
        handler._leave()
        reason = REFUSAL_REASONS[status]
        return _refuse(peer, state, info, status, reason, None, proto, handler)
    return handler.run()


async def _refuse(
    peer: PeerStream,
    state: ServerState,
    info: ConnectionInfo,
    status: int,
    reason: str,
    headers: Headers | None,
    proto: HandshakeAnswer,
    exchange: Exchange | None = None,
) -> None:
    """Answer an upgrade request with a plain HTTP error; a refusal by the gates (with
    its ``exchange``) gets its access-log line, as an HTTP request's refusal does."""
    error_log.info("%s %s: WebSocket upgrade refused: %s", info.client_text, status, reason)
    state.metrics.refused(status)
    if exchange is not None and access_log.isEnabledFor(20):
        exchange.log_access(status, None, 0, 0.0)
    extra = [*state.default_headers(), *(headers or [])]
    data = proto.error_response(status, extra)
    try:
        await peer.send(data)
    except ClientDisconnected:
        return
    await peer.linger_close()


class WebSocketHandler(WebSocketReader):
    """The trio side of one :class:`~trioserve.sansio.websocket.WebSocketSession`: the
    app's channels and the WebSocket's lifetime, over the reads of its base class."""

    __slots__ = ("_accepted", "_connected", "_sends_since", "_watched")

    def __init__(
        self,
        peer: PeerStream,
        state: ServerState,
        info: ConnectionInfo,
        proto: HandshakeAnswer,
        request: Request,
        key: bytes,
        nursery: trio.Nursery,
    ) -> None:
        config = state.config
        session = WebSocketSession(
            request,
            proto,
            key=key,
            max_message_size=config.websocket_max_message_size,
            per_message_deflate=config.websocket_per_message_deflate,
        )
        scope = state.scope_for(build_websocket_scope, request, info)
        if request.raw_headers is not scope["headers"]:
            # The scope has what it needs; an idle WebSocket need not keep a second copy.
            request.raw_headers = None
        super().__init__(peer, state, info, session, scope, nursery)
        self._connected = False
        self._sends_since = -1  # receive() calls when the app last sent
        self._watched = False
        self._accepted: trio.Event | None = None  # only for a receive() before accept

    # -- the app's channels -----------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        self._calls += 1
        pending = self._pending
        if pending:
            return self._pop()
        if not self._connected:
            self._connected = True
            return dict(_CONNECT)
        session = self.session
        if session.disconnect is not None:
            return session.disconnect
        if session.conn is None:
            await self._wait_for_accept()
            if session.conn is None:
                return dict(_GONE)
        # Wait for the turn to read (another task of the app, or a pump, may hold it).
        peer = self.peer
        await peer.take_read_turn()
        try:
            while True:
                if pending:  # the pump, or the reader before us, got some
                    return self._pop()
                if session.disconnect is not None:
                    return session.disconnect
                if peer.broken:
                    return session.connection_lost() or dict(_GONE)
                if self._next_ping == math.inf and not session.backlog:
                    # _fill() and PeerStream.receive_in_turn() inlined for the usual case
                    # (no pings): no coroutine frame of theirs per idle WebSocket (~0.5 KiB
                    # each) or per message. STREAM_ERRORS is still PeerStream's definition.
                    try:
                        data = await peer.stream.receive_some(READ_SIZE)
                    except STREAM_ERRORS:
                        data = b""
                    messages = self._feed(data if data else None)
                    out = session.data_to_send()
                    if out and not peer.broken:
                        await peer.send_quietly(out)
                else:
                    messages = await self._fill()
                if messages:
                    if len(messages) == 1:
                        return messages[0]
                    self._hold(messages)
        finally:
            peer.end_read_turn()

    async def _wait_for_accept(self) -> None:
        """A receive() after connect but before accept: wait until the app answers."""
        if self._accepted is None:
            self._accepted = trio.Event()
        await self._accepted.wait()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        session = self.session
        if self.peer.broken:
            if isinstance(message, MutableMapping) and message.get("type") == "websocket.close":
                return
            raise ClientDisconnected("client disconnected")
        opening = session.state is not OPEN
        try:
            data = session.app_message(
                message, self.state.response_headers(self.scope) if opening else None
            )
        except SessionClosed:
            raise ClientDisconnected("WebSocket is closed") from None
        if data:
            await self.peer.send(data)
        if opening:
            # Over HTTP/2 and HTTP/3 the stream frames the accept itself (no bytes here),
            # so this does not depend on ``data``: pings, the watchdog and the shutdown
            # close start for every HTTP version.
            await self._answered()
        elif data and self._sends_since == self._calls:
            # A second send with no receive() between: the app streams out, so read for
            # it now (a pump), and the client's close reaches its next send() at once,
            # not at the watchdog's next round. An app that alternates receive() and
            # send() never gets here: the pull model stays as it is.
            self._start_pump()
        elif data:
            self._sends_since = self._calls

    # -- lifetime ---------------------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        state.websockets += 1
        try:
            # The app is called here rather than in a helper: one coroutine frame less
            # per idle WebSocket.
            try:
                await state.app(self.scope, self.receive, self.send)
            except BaseException as exc:
                # SystemExit, KeyboardInterrupt, ... fail this WebSocket, not the server.
                if belongs_to_server(exc):
                    raise
                await self._app_failed(exc)
            else:
                await self._app_returned()
            await self._await_close()
        finally:
            state.shutdown_hooks.discard(self._shutdown_started)
            self._release_all(final=True)
            if self._watched:
                watchdog_for(state).discard(self)
            if self._accepted is not None:
                self._accepted.set()
            state.websockets -= 1
            duration = self._leave()
        session = self.session
        state.metrics.websocket_done(session.status or 0, duration, session.bytes_sent)
        if access_log.isEnabledFor(20):
            self.log_access(session.status, None, session.bytes_sent, duration)
        await self._stop_reading()
        if self.peer.broken:
            await self.peer.close()
        else:
            await self.peer.linger_close()

    async def _answered(self) -> None:
        """The app's first answer went out: if it accepted, the WebSocket is open."""
        session = self.session
        if self._accepted is not None:
            self._accepted.set()
        if session.state is not OPEN:
            return
        # Frames that came with the upgrade request (or its EOF) are parsed now.
        messages = self._feed(None if self.peer.eof else b"")
        out = session.data_to_send()
        if out and not self.peer.broken:
            await self.peer.send_quietly(out)
        if messages:
            self._hold(messages)
        state = self.state
        config = state.config
        if config.websocket_ping_interval:
            self._next_ping = trio.current_time() + config.websocket_ping_interval
        if state.shutting_down:
            self._nursery.start_soon(self._close_on_shutdown, name=_SHUTDOWN_NAME)
        else:
            state.shutdown_hooks.add(self._shutdown_started)
        self._watched = True
        watchdog_for(state).add(self, self._nursery)

    async def _app_failed(self, exc: BaseException) -> None:
        session = self.session
        # The client leaving, in the app's words, once the peer is gone or the session
        # closed; anything else is the app's failure (counted as app_exception).
        gone = self.peer.broken or session.disconnect is not None or session.state is CLOSED
        self._report_app_error(exc, f"WebSocket {self.scope['path']}", gone=gone)
        if session.handshake_pending:
            await self.peer.send_quietly(session.refuse(500, self.state.default_headers()))
        elif session.denial_incomplete:
            self.peer.give_up()
        elif not self.peer.broken:
            data = session.close(1011, "internal error")
            if data:
                await self.peer.send_quietly(data)

    async def _app_returned(self) -> None:
        session = self.session
        if session.handshake_pending:
            error_log.error(
                "ASGI app returned without accepting or closing the WebSocket (%s)",
                self.scope["path"],
            )
            await self.peer.send_quietly(session.refuse(500, self.state.default_headers()))
        elif session.denial_incomplete:
            error_log.error(
                "ASGI app returned without finishing the denial response (%s)",
                self.scope["path"],
            )
            self.peer.give_up()
        elif not self.peer.broken:
            data = session.close(1000)
            if data:
                await self.peer.send_quietly(data)

    async def _await_close(self) -> None:
        """Give the peer a moment to answer our close frame (a clean close on both sides)."""
        session = self.session
        if session.conn is None or self.peer.broken or session.disconnect is not None:
            return
        self._release_all()
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._take_read_turn()
            while session.disconnect is None and not self.peer.broken:
                await self._fill()

    def _shutdown_started(self) -> None:
        self._nursery.start_soon(self._close_on_shutdown, name=_SHUTDOWN_NAME)

    async def _close_on_shutdown(self) -> None:
        try:
            data = self.session.close(1001, "server shutting down")
            if data and not self.peer.broken:
                await self.peer.send_quietly(data)
        except Exception:  # never take the server's connections nursery down
            error_log.exception("Unexpected error closing WebSocket %s", self.scope["path"])

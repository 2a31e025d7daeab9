"""One WebSocket, from the upgrade request the HTTP/1.1 connection hands over to the end.

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
shielded, so the shutdown deadline holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Coroutine, MutableMapping
from typing import Any

import trio
from trio.lowlevel import checkpoint_if_cancelled

from ..errors import ClientDisconnected
from ..logs import access_log, error_log
from ..sansio.accesslog import AccessLogAtoms, format_access_line
from ..sansio.asgi import UnexpectedMessage
from ..sansio.events import Headers, Request
from ..sansio.http11_rules import error_response
from ..sansio.proxy import host_allowed
from ..sansio.websocket import (
    OPEN,
    HandshakeAnswer,
    HandshakeError,
    SessionClosed,
    WebSocketSession,
    build_websocket_scope,
    check_handshake,
    message_bytes,
)
from .asyncio_bridge import report_needs_asyncio
from .faults import belongs_to_server
from .peer import READ_SIZE, STREAM_ERRORS, PeerStream
from .sockstream import SocketStream
from .state import ServerState
from .transport import ConnectionInfo
from .wsreadahead import budget_for
from .wswatch import watchdog_for

# How long we wait for the peer's close frame after we sent ours, before dropping it.
CLOSE_TIMEOUT = 5.0
# Bound on writing our close frame to a peer that stopped answering pings.
_ABORT_WRITE_TIMEOUT = 1.0
# Bound on waiting for a pump to hand the socket back once the WebSocket is over.
_STOP_TIMEOUT = 1.0

_GONE: dict[str, Any] = {"type": "websocket.disconnect", "code": 1006, "reason": ""}
_CONNECT: dict[str, Any] = {"type": "websocket.connect"}
_SHUTDOWN_NAME = f"{__name__}.WebSocketHandler._close_on_shutdown"
_PUMP_NAME = f"{__name__}.WebSocketHandler._pump"


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

    The same code serves WebSockets over HTTP/2 (RFC 8441): ``peer`` then reads and writes
    one stream's DATA and ``proto`` is the stream's :class:`~..sansio.http2.H2StreamAnswer`.

    A plain function returning the coroutine to await (the WebSocket's ``run()`` or a
    refusal), so no frame of its own stays on the stack of an idle WebSocket. The caller
    closes the stream afterwards; the connection is never reused for HTTP.
    """
    config = state.config
    try:
        key = check_handshake(request)
    except HandshakeError as exc:
        return _refuse(peer, state, info, exc.status, str(exc), exc.headers, proto)
    handler = WebSocketHandler(peer, state, info, proto, request, key, nursery)
    # The same gates as HTTP requests: server_names (404) and limit_concurrency (503).
    if config.server_names and not host_allowed(handler.scope["headers"], config.server_names):
        return _refuse(peer, state, info, 404, "Host not in server_names", None, proto)
    limit = config.limit_concurrency
    if limit is not None and state.in_flight >= limit:
        return _refuse(peer, state, info, 503, "limit_concurrency reached", None, proto)
    return handler.run()


async def _refuse(
    peer: PeerStream,
    state: ServerState,
    info: ConnectionInfo,
    status: int,
    reason: str,
    headers: Headers | None,
    proto: HandshakeAnswer,
) -> None:
    error_log.info("%s %s: WebSocket upgrade refused: %s", info.client_text, status, reason)
    state.metrics.refused(status)
    extra = [*state.default_headers(), *(headers or [])]
    # An HTTP/2 or HTTP/3 stream's answer (H2StreamAnswer, H3StreamAnswer) frames its own
    # refusal; the HTTP/1.1 protocol gets the plain response bytes.
    stream_refusal = getattr(proto, "error_response", None)
    if stream_refusal is not None:
        data = stream_refusal(status, extra)
    else:
        data = error_response(status, extra=extra)
    try:
        await peer.send(data)
    except ClientDisconnected:
        return
    await peer.linger_close()


class WebSocketHandler:
    """The trio side of one :class:`~trioserve.sansio.websocket.WebSocketSession`."""

    # Up to thousands of these sit idle: no per-instance __dict__.
    __slots__ = (
        "__weakref__",
        "_accepted",
        "_budget",
        "_calls",
        "_connected",
        "_held",
        "_next_ping",
        "_nursery",
        "_pending",
        "_ping_count",
        "_pong_due",
        "_pump_scope",
        "_queue_limit",
        "_seen_calls",
        "_sends_since",
        "_watched",
        "info",
        "peer",
        "scope",
        "session",
        "state",
    )

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
        self.peer = peer
        self.state = state
        self.info = info
        config = state.config
        self.session = WebSocketSession(
            request,
            proto,
            key=key,
            max_message_size=config.websocket_max_message_size,
            per_message_deflate=config.websocket_per_message_deflate,
        )
        self.scope = state.scope_for(build_websocket_scope, request, info)
        if request.raw_headers is not self.scope["headers"]:
            # The scope has what it needs; an idle WebSocket need not keep a second copy.
            request.raw_headers = None
        self._connected = False
        # Messages parsed but not yet given to the app, in reverse order (pop() is next).
        self._pending: list[dict[str, Any]] = []
        self._queue_limit = max(1, config.max_app_queue_size)
        # Inflated bytes in _pending, and the server-wide budget they count against.
        self._held = 0
        self._budget = budget_for(state)
        # receive() calls so far, and as the watchdog last saw them.
        self._calls = 0
        self._seen_calls = -1
        self._sends_since = -1  # receive() calls when the app last sent
        self._pump_scope: trio.CancelScope | None = None
        self._watched = False
        self._nursery = nursery
        self._accepted: trio.Event | None = None  # only for a receive() before accept
        # Keep-alive timers (trio clock); inf when off.
        self._next_ping = math.inf
        self._pong_due = math.inf
        self._ping_count = 0

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

    async def _fill(self, ahead: bool = False) -> list[dict[str, Any]]:
        """Read once (or until a keep-alive deadline) and parse: messages for the app.

        The caller holds the read turn; ``ahead``: it is a pump (see ``_feed``). Frames
        a parse left for later (``session.backlog``) are parsed before anything is read.
        Replies the protocol owes the peer are written here, in one write per read.
        """
        session = self.session
        peer = self.peer
        if session.backlog:
            return await self._parse_backlog(ahead)
        # PeerStream.receive_in_turn() inlined: no frame of its own per idle WebSocket.
        data: bytes | bytearray = b""
        try:
            stream = peer.stream
            if self._next_ping == math.inf:
                data = await stream.receive_some(READ_SIZE)
            elif type(stream) is SocketStream and (ready := await _ready(stream)) is not None:
                # Bytes already waiting need no deadline: a cancel scope per message would
                # cost about a third of an echo's CPU, and a peer that sends is alive.
                data = ready
            else:
                deadline = self._next_ping
                if session.awaiting_pong is not None and self._pong_due != math.inf:
                    deadline = self._pong_due
                with trio.CancelScope(deadline=deadline) as timer:
                    data = await peer.stream.receive_some(READ_SIZE)
                if timer.cancelled_caught:
                    return await self._on_timer()
        except STREAM_ERRORS:
            data = b""
        messages = self._feed(data if data else None, ahead)
        out = session.data_to_send()
        if out and not peer.broken:
            await peer.send_quietly(out)
        return messages

    async def _parse_backlog(self, ahead: bool) -> list[dict[str, Any]]:
        """Parse frames already read (a parse stopped at its limit) instead of reading."""
        await trio.lowlevel.checkpoint()
        messages = self._feed(b"", ahead)
        out = self.session.data_to_send()
        if out and not self.peer.broken:
            await self.peer.send_quietly(out)
        return messages

    def _feed(self, data: bytes | bytearray | None, ahead: bool = False) -> list[dict[str, Any]]:
        """Give wsproto what was read (None: the peer is gone); the messages for the app.

        A parse produces at most what the queue and the server-wide read-ahead budget
        have room for, counted inflated (a pump, ``ahead``, may get nothing); an app
        waiting in ``receive()`` always gets at least one message.
        """
        session = self.session
        budget = self._budget
        limit = self._queue_limit - len(self._pending)
        byte_limit = budget.limit - budget.used
        if not ahead:
            if limit < 1:
                limit = 1
            if byte_limit < 1:
                byte_limit = 1
        try:
            session.receive_data(data, limit)
            return session.app_messages(limit, byte_limit)
        except Exception:
            error_log.exception("Unexpected error reading WebSocket %s", self.scope["path"])
            self.peer.broken = True
            lost = session.connection_lost()
            return [lost] if lost is not None else []

    async def _on_timer(self) -> list[dict[str, Any]]:
        """A keep-alive deadline passed during a read: ping, or give up on the peer."""
        session = self.session
        now = trio.current_time()
        if session.awaiting_pong is not None and now >= self._pong_due:
            return await self._abort(f"no pong within {self.state.config.websocket_ping_timeout}s")
        if now >= self._next_ping:
            config = self.state.config
            self._next_ping = now + (config.websocket_ping_interval or math.inf)
            self._ping_count += 1
            data = session.ping(self._ping_count.to_bytes(4, "big"))
            if not data:
                self._next_ping = math.inf  # closing: no more pings
                return []
            timeout = config.websocket_ping_timeout
            self._pong_due = math.inf if timeout is None else now + timeout
            if not self.peer.broken:
                await self.peer.send_quietly(data)
        return []

    async def _abort(self, reason: str) -> list[dict[str, Any]]:
        """Give up on an unresponsive peer: close 1011, and the app sees 1006 once."""
        error_log.info(
            "%s: closing WebSocket %s: %s", self.info.client_text, self.scope["path"], reason
        )
        self._next_ping = self._pong_due = math.inf
        data = self.session.close(1011, "keepalive ping timeout")
        if data and not self.peer.broken:
            with trio.move_on_after(_ABORT_WRITE_TIMEOUT):
                await self.peer.send_quietly(data)
        self.peer.broken = True
        lost = self.session.connection_lost()
        return [lost] if lost is not None else []

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
                await self._answered()
            elif self._sends_since == self._calls:
                # A second send with no receive() between: the app streams out, so read
                # for it now (a pump), and the client's close reaches its next send()
                # at once, not at the watchdog's next round. An app that alternates
                # receive() and send() never gets here: the pull model stays as it is.
                self._start_pump()
            else:
                self._sends_since = self._calls

    # -- lifetime ---------------------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        start = time.perf_counter()
        state.in_flight += 1
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
            state.in_flight -= 1
            state.websockets -= 1
            state.count_request()
        duration = time.perf_counter() - start
        state.metrics.websocket_done(self.session.status or 0, duration, self.session.bytes_sent)
        if access_log.isEnabledFor(20):
            atoms = AccessLogAtoms(
                self.scope,
                self.session.status,
                None,
                self.session.bytes_sent,
                duration,
                time.time(),
            )
            access_log.info(format_access_line(state.config.access_log_format, atoms))
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
        self._log_app_error(exc)
        if session.handshake_pending:
            await self.peer.send_quietly(session.refuse(500, self.state.default_headers()))
        elif session.denial_incomplete:
            self.peer.broken = True
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
            self.peer.broken = True
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

    async def _take_read_turn(self) -> None:
        """Hold the read turn for good (the WebSocket is over): a pump is stopped first."""
        if self._pump_scope is not None:
            self._pump_scope.cancel()
        await self.peer.take_read_turn()

    async def _stop_reading(self) -> None:
        """No pump may still read once the stream is being closed."""
        if self._pump_scope is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(_STOP_TIMEOUT):
            await self._take_read_turn()

    def _shutdown_started(self) -> None:
        self._nursery.start_soon(self._close_on_shutdown, name=_SHUTDOWN_NAME)

    async def _close_on_shutdown(self) -> None:
        try:
            data = self.session.close(1001, "server shutting down")
            if data and not self.peer.broken:
                await self.peer.send_quietly(data)
        except Exception:  # never take the server's connections nursery down
            error_log.exception("Unexpected error closing WebSocket %s", self.scope["path"])

    # -- reading while the app is away ------------------------------------------------------
    def watch(self) -> None:
        """Called by the watchdog: start a pump if the app has stayed away from receive()."""
        calls = self._calls
        if calls != self._seen_calls:
            self._seen_calls = calls
            return
        self._start_pump()

    def _start_pump(self) -> None:
        if (
            self.peer.reading
            or self._pump_scope is not None
            or self.peer.broken
            or self.session.disconnect is not None
            or len(self._pending) >= self._queue_limit
            or self._budget.used >= self._budget.limit
        ):
            return
        self._pump_scope = trio.CancelScope()
        self._nursery.start_soon(self._pump, self._pump_scope, name=_PUMP_NAME)

    async def _pump(self, scope: trio.CancelScope) -> None:
        """Read for an app that is not reading, until it calls receive() again or the
        buffer is full; answering pings and the client's close on the way."""
        session = self.session
        pending = self._pending
        try:
            with scope:
                peer = self.peer
                if peer.reading:
                    return
                await peer.take_read_turn()  # free: taken without waiting
                try:
                    while (
                        not peer.readers_waiting
                        and session.disconnect is None
                        and not self.peer.broken
                        and len(pending) < self._queue_limit
                        and self._budget.used < self._budget.limit
                    ):
                        messages = await self._fill(ahead=True)
                        if messages:
                            self._hold(messages)
                finally:
                    peer.end_read_turn()
        except Exception:  # never take the server's connections nursery down
            error_log.exception("Unexpected error reading WebSocket %s", self.scope["path"])
            self.peer.broken = True
        finally:
            if self._pump_scope is scope:
                self._pump_scope = None

    # -- the read-ahead queue and its budget ------------------------------------------------
    def _hold(self, messages: list[dict[str, Any]]) -> None:
        """Queue parsed messages for the app (next first), counted against the budget."""
        if self._held < 0:  # the app has returned: a pump still winding down read these
            return
        self._held += self._budget.hold(messages)
        messages.reverse()
        self._pending[:0] = messages

    def _pop(self) -> dict[str, Any]:
        message = self._pending.pop()
        if self._held > 0:
            size = message_bytes(message)
            self._held -= size
            self._budget.used -= size
        return message

    def _release_all(self, final: bool = False) -> None:
        """The app will take no more messages: drop the queue and give its bytes back
        (``final``: the app has returned, nothing is queued from now on)."""
        self._pending.clear()
        if self._held > 0:
            self._budget.used -= self._held
        self._held = -1 if final else 0

    def _log_app_error(self, exc: BaseException) -> None:
        path = self.scope["path"]
        if isinstance(exc, ClientDisconnected):
            error_log.debug("client went away during WebSocket %s", path)
            return
        if isinstance(exc, UnexpectedMessage):
            error_log.error("ASGI protocol error in WebSocket %s: %s", path, exc)
            return
        report_needs_asyncio(exc)
        error_log.error("Exception in ASGI application (WebSocket %s)", path, exc_info=exc)


async def _ready(stream: SocketStream) -> bytes | None:
    """What a plain socket already holds, after a cancellation check (see ``_fill``)."""
    await checkpoint_if_cancelled()
    return stream.receive_ready(READ_SIZE)

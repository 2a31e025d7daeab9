"""One HTTP/1.1 connection, driven top to bottom in its own task.

The connection is the :class:`~trioserve.server.request.RequestPort` of each request it
carries, with the pull model: the app's ``receive()`` reads from the socket only when it
wants the next body piece, so a slow app stops the reads (backpressure) without a queue,
and ``send()`` writes straight to the socket, so a slow client slows the app. A client that
goes away is seen by the next ``receive()`` (one ``http.disconnect``) or ``send()``
(:class:`~trioserve.errors.ClientDisconnected`, an ``OSError``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from operator import attrgetter

import trio

from ..logs import error_log
from ..sansio.body import NOT_YET, BodyPiece
from ..sansio.events import (
    NEED_DATA,
    BadRequest,
    ConnectionClosed,
    Data,
    EndData,
    OutboundEvent,
    Request,
    Sentinel,
)
from ..sansio.h2c import H2C_SWITCHING, H2Switch, h2c_settings, is_h2_preface, upgraded_request
from ..sansio.http11_choice import make_http11_protocol
from ..sansio.http11_rules import HTTP11Interface, error_response
from ..sansio.websocket import wants_websocket
from .context import RequestContexts
from .peer import BODY_READ_SIZE, PeerStream
from .request import DONE_NORMALLY, LEAVE_BODY_UNREAD, RequestRunner, drive_app
from .sockstream import SocketStream
from .state import FIRST_REQUEST_GRACE, ServerState
from .transport import ConnectionInfo
from .websocket import serve_websocket

# Bytes of pipelined requests we buffer while waiting to see whether the client is gone.
_PIPELINE_BUFFER = 64 * 1024
# How often a connection whose pipeline buffer is full looks for the client's FIN or reset.
_GONE_POLL_INTERVAL = 0.25
# Response pieces up to this size are joined into one write; a larger body is written as is.
_JOIN_LIMIT = 64 * 1024


class HTTP11Connection:
    """Serves requests on one stream until the client leaves, a limit is hit, or shutdown."""

    # Thousands of these sit idle in a keep-alive server: no per-instance __dict__.
    __slots__ = ("info", "nursery", "peer", "proto", "refusal", "state", "switch", "unsent")

    def __init__(
        self,
        stream: trio.abc.Stream,
        state: ServerState,
        info: ConnectionInfo,
        nursery: trio.Nursery,
    ) -> None:
        self.peer = PeerStream(stream, state.config.send_timeout)
        self.nursery = nursery  # for the helper tasks of a WebSocket this may become
        self.state = state
        self.info = info
        config = state.config
        self.proto = make_http11_protocol(
            config.http, max_head_size=config.h11_max_incomplete_size
        )
        self.refusal: BadRequest | None = None  # a body we refused mid-way
        # Set when the connection turns out to be HTTP/2 (the prior-knowledge preface, or an
        # accepted "Upgrade: h2c"): run() returns and the caller serves HTTP/2 instead.
        self.switch: H2Switch | None = None
        # A response head framed by send_soon() that no write has taken yet.
        self.unsent = b""

    async def _next_request(self) -> Request | None:
        """Wait for the next request head; None means close the connection (quietly)."""
        config = self.state.config
        proto = self.proto
        peer = self.peer
        head_deadline = math.inf
        while True:
            if proto.idle and not peer.eof:
                # Between requests (inline, not a helper coroutine: every keep-alive
                # request passes here). A request already here is taken as it is; else
                # wait for as long as keep-alive allows.
                fresh = not proto.requests_seen
                data = peer.receive_ready()
                if data is None:
                    data = await self._wait_for_request(fresh)
                    if not data:  # the keep-alive wait ran out, or the client left
                        return None
                if fresh and is_h2_preface(data):  # h2c, prior knowledge (RFC 9113 3.3)
                    self.switch = H2Switch(received=data)
                    return None
                proto.receive_data(data)
            event = proto.next_event()
            if type(event) is Request:
                return event
            if event is NEED_DATA:
                if peer.eof:
                    return None
                if proto.idle:  # (only empty lines came): the keep-alive wait again
                    continue
                # Part of a head has arrived: it must complete by a fixed deadline that
                # trickling bytes do not extend (slowloris), answered with 408.
                now = trio.current_time()
                if head_deadline == math.inf:
                    head_deadline = now + config.request_head_timeout
                try:
                    proto.receive_data(await peer.receive(max(head_deadline - now, 0)))
                except trio.TooSlowError:
                    await self._refuse(408, "timed out waiting for the request head")
                    return None
                continue
            if type(event) is BadRequest:
                await self._refuse(event.status, event.reason, quiet=event.quiet)
                return None
            if type(event) is ConnectionClosed:
                return None
            raise AssertionError(f"unexpected event before a request: {event!r}")

    async def _wait_for_request(self, fresh: bool) -> bytes | None:
        """The keep-alive wait on an empty socket: the next bytes, or None (b"") when the
        wait ran out. A plain socket's deadline is kept by the server's KeepAliveWaits
        (no cancel scope per wait); another stream's by a scope that shutdown can shorten."""
        peer = self.peer
        idle_timeout = self._idle_timeout(fresh)
        stream = peer.stream
        if type(stream) is SocketStream:
            waits = self.state.keep_alive_waits
            sock = stream.socket
            group = waits.add(sock, idle_timeout, self.nursery)
            try:
                return await peer.receive_waiting()  # (b"" once the wait was ended)
            finally:
                waits.remove(group, sock)
        scopes = self.state.fresh_scopes if fresh else self.state.idle_scopes
        data = None
        with trio.move_on_after(idle_timeout) as scope:
            scopes.add(scope)
            try:
                data = await peer.receive_waiting()
            finally:
                scopes.discard(scope)
        return data

    def _idle_timeout(self, fresh: bool) -> float:
        """How long to wait for the next request head to start."""
        state = self.state
        config = state.config
        idle_timeout = config.keep_alive_timeout
        if idle_timeout <= 0 and fresh:
            # Keep-alive off: a new connection still gets time for its request.
            idle_timeout = config.request_head_timeout
        if state.shutting_down:  # a request may be on its way: answered, then closed
            idle_timeout = min(idle_timeout, FIRST_REQUEST_GRACE)
        return idle_timeout

    async def _refuse(self, status: int, reason: str | None, *, quiet: bool = False) -> None:
        self.state.metrics.refused(status)
        if reason is not None:
            error_log.log(10 if quiet else 20, "%s %s: %s", self.info.client_text, status, reason)
        peer = self.peer
        if not peer.broken:
            try:
                await peer.send(error_response(status, extra=self.state.default_headers()))
            except OSError:
                return
            await peer.linger_close()

    # -- serving ---------------------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        max_requests = state.config.keep_alive_max_requests
        if state.config.keep_alive_timeout <= 0:  # keep-alive off: one request per connection
            max_requests = 1
        contexts = RequestContexts(state.config.reset_contextvars)
        while True:
            request = await self._next_request()
            if request is None:
                return
            context = contexts.next()  # nothing an earlier request set reaches this one
            if state.shutting_down or self.proto.requests_seen >= max_requests:
                self.proto.close_after_response()
            if self.proto.requests_seen == 1 and self._upgrade_to_h2c(request):
                await self.peer.send(H2C_SWITCHING)
                return
            if wants_websocket(request):  # the connection becomes a WebSocket (or is refused)
                websocket = serve_websocket(
                    self.peer, state, self.info, self._hand_over_proto(), request, self.nursery
                )
                del request, contexts  # not kept alive by this frame for the WebSocket's life
                await (websocket if context is None else drive_app(websocket, context, None))
                return
            runner = RequestRunner(self, state, request, self.info, context)
            outcome = await runner.run()
            if self.peer.defer_schedule_point:
                # The response's last write skipped its schedule point (peer.send): the
                # connection takes it here, one per request as before, outside the app,
                # and settles that write (server/writebatch.py).
                await self.peer.end_deferred_write()
            if (
                outcome == DONE_NORMALLY
                and self.refusal is None
                and not self.peer.broken
                and self.proto.next_cycle()
            ):
                # The usual case, in one call (else the checks below decide). While the
                # connection waits for its next request it holds no request state (scope,
                # headers, response cycle): thousands of idle connections add up.
                del runner, request
                continue
            started = runner.cycle.started
            del runner, request
            if outcome != DONE_NORMALLY or self.refusal is not None or not self._reusable():
                await self._end(outcome, started)
            return  # (else the response was complete, but keep-alive ends here)

    def _upgrade_to_h2c(self, request: Request) -> bool:
        """Accept ``Upgrade: h2c`` on a first, cleartext, bodiless request (RFC 7540 3.2)."""
        if not self.state.config.h2c_upgrade or isinstance(self.peer.stream, trio.SSLStream):
            return False
        settings = h2c_settings(request)
        if settings is None:
            return False
        self.switch = H2Switch(upgrade=upgraded_request(request), settings=settings)
        return True

    def _hand_over_proto(self) -> HTTP11Interface:
        """Give the protocol to the WebSocket, keeping no reference to it here.

        The WebSocket drops it once accepted, so an idle WebSocket does not keep h11's
        connection state and buffers alive. This connection serves no more HTTP after it.
        """
        proto = self.proto
        del self.proto
        return proto

    def _reusable(self) -> bool:
        """The response is complete and the request body is read (or already buffered)."""
        return not self.peer.broken and self.proto.response_complete and self._drain_unread_body()

    async def _end(self, outcome: int, response_started: bool) -> None:
        """After a request that ends the connection: answer or close politely."""
        peer = self.peer
        if outcome != DONE_NORMALLY:
            if outcome == LEAVE_BODY_UNREAD and not peer.broken:
                # Answered without reading the rest of the body; linger so it survives.
                await peer.linger_close()
            return
        if self.refusal is not None:
            if not response_started:
                # The app was told "disconnect" (broken), but the client is still there and
                # gets the answer to the bad bytes it sent; a failed write is still caught.
                peer.answer_after_all()
                await self._refuse(self.refusal.status, self.refusal.reason)
            return
        if peer.broken or not self.proto.response_complete:
            return
        # The app answered without reading the whole body: close, but without a reset
        # that could destroy the response before the client reads it.
        await peer.linger_close()

    def _drain_unread_body(self) -> bool:
        """Discard a body the app never read if it is already buffered; else close."""
        proto = self.proto
        if proto.request_complete:
            return True
        while True:
            event = proto.next_event()
            if type(event) is Data:
                continue
            return type(event) is EndData

    # -- the RequestPort -------------------------------------------------------------------
    # ``peer.broken``, read by a C getter: the runner asks before every send(), and a
    # Python property would cost a frame each time.
    gone = property(attrgetter("peer.broken"))

    @property
    def can_inform(self) -> bool:
        return not self.peer.broken and not self.proto.response_started

    def body_piece(self, top_up: bool = True) -> BodyPiece | Sentinel:
        """``top_up=False``: the caller has just drained the kernel (``receive_body``), so
        no read without waiting is tried for more."""
        proto = self.proto
        if top_up and (wanted := proto.body_to_read(BODY_READ_SIZE)):
            more = self.peer.receive_ready(wanted)
            if more:
                proto.receive_data(more)
                top_up = False
        event = proto.next_event()
        cls = type(event)
        if cls is Data:
            return self._gather(event.data, top_up)  # type: ignore[union-attr]
        if cls is EndData:
            return b"", False
        if event is NEED_DATA:
            if self.peer.eof or self.peer.broken:
                self.peer.lost()  # a body cut short never completes
                return None
            return NOT_YET
        # BadRequest (e.g. a malformed chunk) or ConnectionClosed mid-body: the app sees
        # a disconnect; a refusal is answered once the app is done. A body cut short by
        # the client's FIN is the client leaving (499), not bad bytes to answer and count.
        if cls is BadRequest and not self.peer.eof:
            self.refusal = event  # type: ignore[assignment]
        self.peer.give_up()
        return None

    def _gather(self, data: bytes, top_up: bool) -> BodyPiece:
        """``data`` and every body byte behind it as one piece: a framework pays per piece,
        not per byte. What is parsed already (a chunked body in small chunks parses into
        many Data events), then, if the body goes on, what the kernel already holds, read
        without waiting: a body sent in one write but longer than the head's read (issue
        25's 64 KiB POST) comes as one piece, not as two with a wait for the last bytes.
        Bounded by one read (``BODY_READ_SIZE``). Looking one event past the data also
        lets the last piece carry more_body=False."""
        proto = self.proto
        parts = [data]
        size = len(data)
        topped_up = not top_up
        while True:
            nxt = proto.next_event()
            if type(nxt) is Data:
                parts.append(nxt.data)
                size += len(nxt.data)
                continue
            if nxt is NEED_DATA and not topped_up and size < BODY_READ_SIZE:
                topped_up = True
                more = self.peer.receive_ready(BODY_READ_SIZE - size)
                if more:  # (None: it would wait; b"": the peer left, seen by the next piece)
                    proto.receive_data(more)
                    continue
            break
        if len(parts) > 1:
            data = b"".join(parts)
        if type(nxt) is EndData:
            return data, False
        proto.push_back(nxt)
        return data, True

    async def receive_body(self, timeout: float | None) -> BodyPiece:
        peer = self.peer
        # One deadline for the piece, however many reads it takes (a trickle of chunk-size
        # lines must not restart it). Past it, TooSlowError: the runner answers 408.
        deadline = None if timeout is None else trio.current_time() + timeout
        while True:
            left = None if deadline is None else max(deadline - trio.current_time(), 0.0)
            self.proto.receive_data(await peer.receive(left, BODY_READ_SIZE))
            piece = self.body_piece(top_up=False)  # (one read is one piece's worth)
            if piece is not NOT_YET:
                return piece  # type: ignore[return-value]

    def send_events(self, events: list[OutboundEvent]) -> Awaitable[None]:
        data = self.proto.frame(events, _JOIN_LIMIT)
        if self.unsent:  # a head send_soon() framed goes first
            if type(data) is bytes:
                data = self.unsent + data
            else:
                data.insert(0, self.unsent)  # type: ignore[union-attr]
            self.unsent = b""
        if type(events[-1]) is EndData:
            self.peer.defer_schedule_point = True
        # A large body comes as a list of pieces (joining it to the head would copy it):
        # one gather write on a plain socket.
        return self.peer.send(data)

    def send_soon(self, events: list[OutboundEvent]) -> None:
        """Frame ``events`` (a held response head) now and have a helper task write them:
        the app's task is waiting elsewhere. Whichever write comes first takes them, the
        helper's or the next ``send_events``/``send_file``'s, so the order holds."""
        proto = self.proto
        self.unsent += b"".join([proto.send(event) for event in events])
        self.nursery.start_soon(self._write_unsent)

    async def _write_unsent(self) -> None:
        data, self.unsent = self.unsent, b""
        peer = self.peer
        if data and not peer.broken:
            try:
                await peer.send(data)
            except OSError:  # (ClientDisconnected, SendTimeout): the app's next send() says so
                pass
            except Exception:  # a task of the connections nursery: never take it down
                error_log.exception("Unexpected error writing a response head")
                peer.give_up()

    async def wait_disconnected(self) -> None:
        """Block until the client goes away, buffering what it pipelines meanwhile."""
        peer = self.peer
        buffered = 0
        while not peer.eof and not peer.broken:
            if buffered > _PIPELINE_BUFFER:
                # Reading more would buffer without bound, and the unread bytes keep the
                # socket readable, so waiting for readability spins. Look for the peer's
                # FIN or reset behind them instead, a few times a second.
                while True:
                    if peer.poll_gone():
                        break
                    await trio.sleep(_GONE_POLL_INTERVAL)
                break
            data = await peer.receive()
            self.proto.receive_data(data)
            buffered += len(data)
        peer.lost()  # the app is told the client is gone: send() now raises

    async def send_file(self, fd: int, size: int) -> bool:
        """http.response.pathsend's body by sendfile (zero-copy) on a plain socket; False
        (nothing written) over TLS, where the runner reads the file in pieces instead."""
        if not self.peer.can_sendfile:
            return False
        if self.unsent:
            await self._write_unsent()
        head, tail = self.proto.frame_file(size)
        return await self.peer.send_file(head, fd, size, tail)

    def poll_disconnected(self) -> bool:
        peer = self.peer
        if peer.poll_gone():
            peer.lost()  # as after wait_disconnected(): send() now raises
            return True
        return False

    def close_after_response(self) -> None:
        self.proto.close_after_response()

    def abort(self) -> None:
        self.peer.give_up()

    async def refuse(self, status: int, reason: str | None) -> None:
        await self._refuse(status, reason)

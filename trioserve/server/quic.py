"""HTTP/3 over QUIC in trio: one task per UDP socket, per connection, per request stream.

- :class:`QuicSocket` runs the socket's receive task. It only routes: each datagram goes,
  by connection ID, into its connection's bounded channel (full: the datagram is dropped,
  as a network would; QUIC retransmits). It never waits on a connection, so one stuck
  connection cannot stall the others on the socket.
- :class:`QuicConnectionTask` owns one ``QuicConnection``/``H3Connection`` pair and is the
  only place that sends its datagrams. Its receive waits under a cancel scope whose
  deadline is aioquic's timer (loss detection, idle timeout, pacing); the time is passed
  into the sans-IO core. Request streams write into aioquic from their own tasks and wake
  this task to flush.
- Each request stream runs in its own task (:mod:`.http3`).

No exception leaves a connection's task: a failure is logged once and the connection
closed, and the socket and process keep serving.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import trio
from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)

from ..logs import error_log
from ..sansio.events import Request
from ..sansio.h3limits import HeadersRefused, LimitedH3Connection
from ..sansio.http3 import H3Refusal, ServerH3Connection, request_from_fields
from ..sansio.quic import (
    Accept,
    BoundedQuicConnection,
    Deliver,
    QuicRouter,
    Reply,
    quic_configuration,
)
from .http3 import H3Stream, quic_tls_extension, serve_stream
from .state import ServerState
from .transport import ConnectionInfo, read_server_cert

# Datagrams queued for one connection before more are dropped (its task is behind).
INBOX_SIZE = 256
RECV_SIZE = 65536


class QuicSocket:
    """One UDP socket serving HTTP/3: the receive/route task and its connections."""

    def __init__(
        self,
        sock: socket.socket,
        state: ServerState,
        router: QuicRouter[QuicConnectionTask],
        server_cert: str | None,
    ) -> None:
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.raw = sock
        self.state = state
        self.router = router
        self.server_cert = server_cert
        host, port = sock.getsockname()[:2]
        self.server: tuple[str, int] = (str(host), int(port))
        self.live: set[QuicConnectionTask] = set()
        text_host = f"[{host}]" if ":" in str(host) else str(host)
        self.url = f"https://{text_host}:{port}"

    async def receive_loop(self, connections: trio.Nursery) -> None:
        """Route datagrams until cancelled. Awaits only the socket."""
        while True:
            try:
                data, addr = await self.sock.recvfrom(RECV_SIZE)
            except OSError:
                continue  # an ICMP error reported on the socket: not ours to handle
            try:
                self._dispatch(data, addr, connections)
            except Exception:  # a datagram must never stop the socket's routing
                error_log.exception("HTTP/3: datagram from %s could not be routed", addr)

    def _dispatch(self, data: bytes, addr: Any, connections: trio.Nursery) -> None:
        router = self.router
        decision = router.route(data, addr, trio.current_time())
        if decision is None:
            return
        if type(decision) is Deliver:
            decision.handle.deliver(data, addr)
        elif type(decision) is Reply:
            self.send_now(decision.data, addr)
        elif type(decision) is Accept:
            conn = QuicConnectionTask(self, decision.quic, addr)
            router.register(decision.cids, conn, addr)
            conn.cids.update(decision.cids)
            self.live.add(conn)
            connections.start_soon(conn.run, name="trioserve.quic.connection")
            conn.deliver(data, addr)

    def send_now(self, data: bytes, addr: Any) -> None:
        """Send without waiting: a full socket buffer loses the datagram, as the network may."""
        try:
            self.raw.sendto(data, addr)
        except OSError:
            pass

    def begin_shutdown(self) -> None:
        """Refuse new connections; every live one says GOAWAY and closes when idle."""
        self.router.accepting = False
        for conn in list(self.live):
            conn.begin_shutdown()


class QuicConnectionTask:
    """Drives one QUIC connection: datagrams in, events out, streams started, sends flushed."""

    def __init__(self, owner: QuicSocket, quic: BoundedQuicConnection, addr: Any) -> None:
        self.owner = owner
        self.state = owner.state
        self.quic = quic
        self.addr = addr
        self.h3: ServerH3Connection | None = None
        self.cids: set[bytes] = set()
        self.streams: dict[int, H3Stream] = {}
        self.established = False
        self.closing = False  # GOAWAY sent: no new streams, close when idle
        self.closed = False  # CONNECTION_CLOSE queued
        self.terminated = False
        self.highest_stream = -4  # the last request stream id taken (GOAWAY names the next)
        self.last_active = 0.0  # the handshake's end or the last stream's: idleness starts
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](INBOX_SIZE)
        self._wake_pending = False
        self._blocked: set[H3Stream] = set()
        self.nursery: trio.Nursery | None = None
        self.info = ConnectionInfo(
            client=(str(addr[0]), int(addr[1])), server=owner.server, scheme="https"
        )

    # -- called from other tasks ------------------------------------------------------------
    def deliver(self, data: bytes, addr: Any) -> None:
        try:
            self._inbox_send.send_nowait((data, addr))
        except trio.WouldBlock:
            pass  # behind: drop it, QUIC recovers from loss

    def wake(self) -> None:
        """A stream wrote or read: flush (and send window updates) on the next turn."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._inbox_send.send_nowait(None)
            except trio.WouldBlock:
                pass  # the inbox is full, so this task has plenty to wake up for

    def wait_writable(self, stream: H3Stream) -> None:
        self._blocked.add(stream)

    def begin_shutdown(self) -> None:
        """H3 GOAWAY naming the first stream not taken; close once the last stream ends."""
        if self.closing:
            return
        self.closing = True
        if self.h3 is not None and not self.terminated:
            self.h3.send_goaway(self.highest_stream + 4)
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """Called from a stream's or the server's task: close if it is time, and flush."""
        self._maybe_close()
        self.wake()

    def _maybe_close(self) -> None:
        """Shutting down: close once no stream runs and every response was delivered."""
        quic = self.quic
        if (
            self.closing
            and not self.closed
            and not self.streams
            and not self.terminated
            and quic.responses_delivered()
        ):
            self.closed = True
            quic.close(error_code=ErrorCode.H3_NO_ERROR, reason_phrase="shutting down")

    # -- the connection's task --------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    await self._drive()
                finally:
                    nursery.cancel_scope.cancel()
        except Exception:
            error_log.exception("HTTP/3 connection from %s failed", self.info.client_text)
        finally:
            self._forget()

    async def _drive(self) -> None:
        quic = self.quic
        inbox = self._inbox
        # A handshake that does not finish in time frees its half-open slot.
        handshake_deadline = trio.current_time() + self.state.config.ssl_handshake_timeout
        try:
            while not self.terminated:
                if not self.established and trio.current_time() >= handshake_deadline:
                    error_log.debug("%s: QUIC handshake timed out", self.info.client_text)
                    return
                timer = quic.get_timer()
                deadline = math.inf if timer is None else timer
                if not self.established:
                    deadline = min(deadline, handshake_deadline)
                deadline = min(deadline, self._idle_deadline())
                with trio.move_on_at(deadline):
                    item = await inbox.receive()
                    while True:
                        if item is not None:
                            quic.receive_datagram(item[0], item[1], trio.current_time())
                        try:
                            item = inbox.receive_nowait()
                        except trio.WouldBlock:
                            break
                now = trio.current_time()
                timer = quic.get_timer()
                if timer is not None and timer <= now:
                    quic.handle_timer(now)
                self._process_events()
                if trio.current_time() >= self._idle_deadline():
                    self.begin_shutdown()  # GOAWAY, then CONNECTION_CLOSE
                if self.closing and not self.closed:
                    self._maybe_close()  # acknowledgements may have just arrived
                await self._flush()
        finally:
            if not self.terminated:
                # Cancelled (the graceful deadline passed): tell the client, without waiting.
                quic.close(error_code=ErrorCode.H3_NO_ERROR, reason_phrase="server stopped")
                for data, addr in quic.datagrams_to_send(trio.current_time()):
                    self.owner.send_now(data, addr)

    def _idle_deadline(self) -> float:
        """``keep_alive_timeout`` after the handshake or the last request stream's end,
        while no stream is open. Only requests count as activity: a client's PINGs keep
        QUIC's own idle timer going, not this one."""
        if not self.established or self.streams or self.closing:
            return math.inf
        config = self.state.config
        timeout = config.keep_alive_timeout
        if timeout <= 0 and self.highest_stream < 0:
            timeout = config.request_head_timeout  # keep-alive off: time for one request
        return self.last_active + timeout

    async def _flush(self) -> None:
        self._wake_pending = False
        owner = self.owner
        raw = owner.raw
        for data, addr in self.quic.datagrams_to_send(trio.current_time()):
            # Straight to the socket; through trio only when its buffer is full (a trio
            # sendto per datagram costs a scheduler round trip each).
            try:
                raw.sendto(data, addr)
            except BlockingIOError:
                try:
                    await owner.sock.sendto(data, addr)
                except OSError:
                    pass
            except OSError:
                pass
        await trio.lowlevel.checkpoint()
        if self._blocked:
            quic = self.quic
            for stream in list(self._blocked):
                if stream.writable(quic):
                    self._blocked.discard(stream)

    def _forget(self) -> None:
        self.terminated = True
        router = self.owner.router
        router.remove(self.cids)
        router.closed(self.addr, self.established)
        self.owner.live.discard(self)
        for stream in list(self.streams.values()):
            stream.peer_gone()

    # -- events ------------------------------------------------------------------------------
    def _process_events(self) -> None:
        quic = self.quic
        while (event := quic.next_event()) is not None:
            self._quic_event(event)
            if self.h3 is not None:
                for h3_event in self.h3.handle_event(event):
                    self._h3_event(h3_event)

    def _quic_event(self, event: QuicEvent) -> None:
        kind = type(event)
        if kind is ProtocolNegotiated:
            self.h3 = LimitedH3Connection(
                self.quic, max_field_section_size=self.state.config.h3_max_field_section_size
            )
        elif kind is HandshakeCompleted:
            self.established = True
            self.last_active = trio.current_time()
            self.owner.router.established(self.addr)
            self.info.tls = quic_tls_extension(self.quic, self.owner.server_cert)
            if self.closing and self.h3 is not None:
                self.h3.send_goaway(0)
                self.close_if_idle()
        elif kind is ConnectionIdIssued:
            self.cids.add(event.connection_id)  # type: ignore[attr-defined]
            self.owner.router.add_cid(event.connection_id, self)  # type: ignore[attr-defined]
        elif kind is ConnectionIdRetired:
            self.cids.discard(event.connection_id)  # type: ignore[attr-defined]
            self.owner.router.remove_cid(event.connection_id)  # type: ignore[attr-defined]
        elif kind is ConnectionTerminated:
            self.terminated = True
        elif kind is StreamReset or kind is StopSendingReceived:
            stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
            if stream is not None:
                stream.peer_gone()

    def _h3_event(self, event: H3Event) -> None:
        if type(event) is DataReceived:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.feed(event.data, event.stream_ended)
        elif type(event) is HeadersReceived:
            stream = self.streams.get(event.stream_id)
            if stream is not None:  # trailers: not passed on (ASGI has no request trailers)
                if event.stream_ended:
                    stream.feed(b"", True)
                return
            self._new_request(event)
        elif type(event) is HeadersRefused:
            # A section over h3_max_field_section_size, refused undecoded: a head is
            # answered 431, trailers end the request (the app sees http.disconnect).
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.peer_gone()
            elif not event.trailers:
                self._new_request(event)

    def _new_request(self, event: HeadersReceived | HeadersRefused) -> None:
        stream_id = event.stream_id
        quic = self.quic
        self.highest_stream = max(self.highest_stream, stream_id)
        limit = self.state.config.h3_max_concurrent_streams
        if self.closing or len(self.streams) >= limit or self.nursery is None:
            # Over the limit only while reset streams' tasks finish their grace period.
            quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            quic.stop_receiving(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            return
        ended = False
        if type(event) is HeadersReceived:
            ended = event.stream_ended
            request: Request | H3Refusal = request_from_fields(
                event.headers, max_size=self.state.config.h3_max_field_section_size
            )
        else:
            request = H3Refusal(431, "request head over h3_max_field_section_size")
        stream = H3Stream(self, stream_id, request, ended=ended)
        self.streams[stream_id] = stream
        quic.start(stream_id)
        self.nursery.start_soon(serve_stream, self, stream, name="trioserve.quic.stream")

    def stream_done(self, stream: H3Stream) -> None:
        """A stream's task ended: free its slot, and stop reading a body nobody wants."""
        self.streams.pop(stream.stream_id, None)
        self._blocked.discard(stream)
        self.last_active = trio.current_time()
        quic = self.quic
        quic.forget(stream.stream_id)
        if not stream.ended and not stream.gone and not self.terminated:
            # RFC 9114 4.1.1: after a complete response, ask the client to stop its body.
            quic.stop_receiving(stream.stream_id, ErrorCode.H3_NO_ERROR)
        self.close_if_idle()


def open_quic_socket(sock: socket.socket, state: ServerState) -> QuicSocket:
    """An HTTP/3 server on a bound UDP socket, configured from the server's config."""
    config = state.config
    assert config.certfile is not None
    window = config.h3_stream_buffer_size
    configuration = quic_configuration(
        certfile=config.certfile,
        keyfile=config.keyfile,
        password=config.keyfile_password,
        idle_timeout=config.quic_idle_timeout,
        stream_window=window,
        # Every stream may fill its window at once; the connection window grows from there.
        max_data=window * max(1, min(config.h3_max_concurrent_streams, 16)),
    )
    router: QuicRouter[QuicConnectionTask] = QuicRouter(
        configuration,
        max_streams=config.h3_max_concurrent_streams,
        max_half_open=config.quic_max_half_open,
        max_per_ip=config.quic_max_connections_per_ip,
        retry=config.quic_retry,
        retry_threshold=config.quic_retry_threshold,
    )
    return QuicSocket(sock, state, router, read_server_cert(config.certfile))

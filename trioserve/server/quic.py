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
- Each request stream runs in its own task: the shared
  :class:`~trioserve.server.stream.Stream` (the same class as HTTP/2's) over
  :class:`~trioserve.sansio.http3.H3Protocol`, which translates aioquic's events and frames
  the responses; this module is only the I/O loop around it.

No exception leaves a connection's task: a failure is logged once and the connection
closed, and the socket and process keep serving.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import trio

from ..logs import error_log
from ..sansio.events import BadRequest, ConnectionClosed, Request
from ..sansio.h3protocol import (
    CidIssued,
    CidRetired,
    Established,
    H3Event,
    H3Protocol,
)
from ..sansio.quic import (
    Accept,
    BoundedQuicConnection,
    Deliver,
    QuicRouter,
    Reply,
    quic_configuration,
)
from .state import ServerState
from .stream import Stream, serve_stream
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
    """Drives one QUIC connection: datagrams in, events out, streams started, sends flushed.
    It is the :class:`~.stream.StreamOwner` of its streams."""

    def __init__(self, owner: QuicSocket, quic: BoundedQuicConnection, addr: Any) -> None:
        self.owner = owner
        self.state = state = owner.state
        config = state.config
        self.framer = H3Protocol(
            quic,
            max_field_section_size=config.h3_max_field_section_size,
            max_streams=config.h3_max_concurrent_streams,
            stream_buffer=config.h3_stream_buffer_size,
            strip=state.alt_svc,
        )
        self.addr = addr
        self.cids: set[bytes] = set()
        self.streams: dict[int, Stream] = {}
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](INBOX_SIZE)
        self._wake_pending = False
        self._blocked: dict[int, trio.Event] = {}  # streams waiting for their bytes to drain
        self.nursery: trio.Nursery | None = None
        self.last_active = 0.0  # the handshake's end or the last stream's: idleness starts
        self.info = ConnectionInfo(
            client=(str(addr[0]), int(addr[1])), server=owner.server, scheme="https"
        )

    @property
    def terminated(self) -> bool:
        return self.framer.terminated

    # -- called from other tasks ------------------------------------------------------------
    def deliver(self, data: bytes, addr: Any) -> None:
        try:
            self._inbox_send.send_nowait((data, addr))
        except trio.WouldBlock:
            pass  # behind: drop it, QUIC recovers from loss

    def kick(self) -> None:
        """A stream wrote or read: flush (and send window updates) on the next turn."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._inbox_send.send_nowait(None)
            except trio.WouldBlock:
                pass  # the inbox is full, so this task has plenty to wake up for

    async def wait_space(self) -> None:
        """aioquic buffers what a stream frames; a stream's own bound is its send window
        (:meth:`~trioserve.sansio.http3.H3Protocol.send_window`)."""
        await trio.lowlevel.checkpoint()

    async def wait_credit(self, stream_id: int) -> None:
        """Woken by the flush that drains this stream's backlog (or by its end)."""
        event = self._blocked.get(stream_id)
        if event is None:
            event = self._blocked[stream_id] = trio.Event()
        await event.wait()

    def begin_shutdown(self) -> None:
        """H3 GOAWAY naming the first stream not taken; close once the last stream ends."""
        self.framer.goaway()
        self.kick()

    # -- the connection's task --------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        state.connections += 1
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
            state.connections -= 1
            self._forget()

    async def _drive(self) -> None:
        framer = self.framer
        inbox = self._inbox
        # A handshake that does not finish in time frees its half-open slot.
        handshake_deadline = trio.current_time() + self.state.config.ssl_handshake_timeout
        try:
            while not framer.terminated:
                if not framer.established and trio.current_time() >= handshake_deadline:
                    error_log.debug("%s: QUIC handshake timed out", self.info.client_text)
                    return
                timer = framer.timer()
                deadline = math.inf if timer is None else timer
                if not framer.established:
                    deadline = min(deadline, handshake_deadline)
                deadline = min(deadline, self._idle_deadline())
                with trio.move_on_at(deadline):
                    item = await inbox.receive()
                    while True:
                        if item is not None:
                            framer.receive_datagram(item[0], item[1], trio.current_time())
                        try:
                            item = inbox.receive_nowait()
                        except trio.WouldBlock:
                            break
                self._dispatch(framer.events(trio.current_time()))
                if trio.current_time() >= self._idle_deadline():
                    self.begin_shutdown()  # GOAWAY, then CONNECTION_CLOSE
                await self._flush()
        finally:
            if not framer.terminated:
                # Cancelled (the graceful deadline passed): tell the client, without waiting.
                framer.stop()
                for data, addr in framer.datagrams_to_send(trio.current_time()):
                    self.owner.send_now(data, addr)

    def _idle_deadline(self) -> float:
        """``keep_alive_timeout`` after the handshake or the last request stream's end,
        while no stream is open. Only requests count as activity: a client's PINGs keep
        QUIC's own idle timer going, not this one."""
        framer = self.framer
        if not framer.established or self.streams or framer.closing:
            return math.inf
        config = self.state.config
        timeout = config.keep_alive_timeout
        if timeout <= 0 and framer.highest_stream < 0:
            timeout = config.request_head_timeout  # keep-alive off: time for one request
        return self.last_active + timeout

    async def _flush(self) -> None:
        self._wake_pending = False
        owner = self.owner
        raw = owner.raw
        for data, addr in self.framer.datagrams_to_send(trio.current_time()):
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
            framer = self.framer
            for sid in list(self._blocked):
                if framer.send_window(sid) > 0 or not framer.is_open(sid):
                    self._blocked.pop(sid).set()

    def _forget(self) -> None:
        self.framer.terminated = True
        router = self.owner.router
        router.remove(self.cids)
        router.closed(self.addr, self.framer.established)
        self.owner.live.discard(self)
        self._end_streams()

    def _end_streams(self) -> None:
        for stream in list(self.streams.values()):
            stream.vanish()
        for event in self._blocked.values():
            event.set()
        self._blocked.clear()

    # -- events ------------------------------------------------------------------------------
    def _dispatch(self, events: list[H3Event]) -> None:
        streams = self.streams
        for stream_id, event in events:
            cls = type(event)
            if cls is Request or cls is BadRequest:
                self._start_stream(stream_id, event)  # type: ignore[arg-type]
            elif stream_id >= 0:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_event(event)
                    if not stream.gone:
                        continue
                    blocked = self._blocked.pop(stream_id, None)
                    if blocked is not None:
                        blocked.set()  # its sender must see it's gone
            else:
                self._connection_event(event)

    def _connection_event(self, event: object) -> None:
        cls = type(event)
        router = self.owner.router
        if cls is Established:
            self.last_active = trio.current_time()
            router.established(self.addr)
            self.info.tls = self.framer.tls_extension(self.owner.server_cert)
        elif cls is CidIssued:
            self.cids.add(event.cid)  # type: ignore[attr-defined]
            router.add_cid(event.cid, self)  # type: ignore[attr-defined]
        elif cls is CidRetired:
            self.cids.discard(event.cid)  # type: ignore[attr-defined]
            router.remove_cid(event.cid)  # type: ignore[attr-defined]
        elif cls is ConnectionClosed:
            self._end_streams()

    def _start_stream(self, stream_id: int, request: Request | BadRequest) -> None:
        assert self.nursery is not None
        stream = self.streams[stream_id] = Stream(self, stream_id)
        self.nursery.start_soon(
            serve_stream, stream, request, self.nursery, name="trioserve.quic.stream"
        )

    def stream_done(self, stream: Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        self.last_active = trio.current_time()
        self.framer.stream_finished(stream.stream_id)
        self.kick()


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

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
  (:class:`~trioserve.server.request.RequestRunner`) over
  :class:`~trioserve.server.stream.Stream`, its port (the same class serves HTTP/3); a
  WebSocket stream (RFC 8441) runs the shared WebSocket code over the stream's DATA.

Lifetime: the connection ends at the peer's EOF or GOAWAY, a protocol error (our GOAWAY
with its code, logged once), the idle timeout or ``keep_alive_max_requests`` (GOAWAY, then
open streams finish), or shutdown (GOAWAY; ``graceful_timeout`` bounds the rest, since no
write is shielded). A reset or vanished stream's app is told at once (``http.disconnect``,
``ClientDisconnected``) and cancelled ``h2_reset_grace`` seconds later.
"""

from __future__ import annotations

import math

import trio
from trio.lowlevel import ParkingLot

from ..logs import error_log
from ..sansio.events import (
    BadRequest,
    ConnectionClosed,
    EndData,
    Request,
    StreamReset,
)
from ..sansio.h2c import H2Switch
from ..sansio.http2 import H2Event, H2Limits, H2Protocol, SendCredit
from .peer import STREAM_ERRORS
from .state import ServerState
from .stream import Stream, serve_stream
from .transport import ConnectionInfo, linger_close

READ_SIZE = 64 * 1024
# Our output waiting for the socket: streams pause above this, the reader far above it.
_SEND_MARK = 64 * 1024
_READ_MARK = 1024 * 1024
_STREAM_TASK = f"{__name__}.HTTP2Connection.stream"
_WRITER_TASK = f"{__name__}.HTTP2Connection._write_loop"
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
        small_data_rate=config.h2_small_data_rate,
        small_data_burst=config.h2_small_data_burst,
    )


class HTTP2Connection:
    """Serves the streams of one HTTP/2 connection; see the module docstring."""

    switch: H2Switch | None = None  # (a Connection member: HTTP/2 hands nothing over)

    def __init__(
        self,
        stream: trio.abc.Stream,
        state: ServerState,
        info: ConnectionInfo,
        nursery: trio.Nursery | None = None,
        *,
        switch: H2Switch | None = None,
    ) -> None:
        """``nursery`` (the connections') is not needed: streams run in our own."""
        self.stream = stream
        self.state = state
        self.info = info
        switch = switch or H2Switch()
        self._received = switch.received  # bytes read before we knew it was HTTP/2
        self._upgrade = switch.upgrade  # h2c: the HTTP/1.1 request, served as stream 1
        self.proto = H2Protocol(h2_limits(state), upgrade_settings=switch.settings)
        self.framer = self.proto  # what the streams frame with (StreamOwner)
        self.streams: dict[int, Stream] = {}
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

    async def wait_credit(self, stream_id: int) -> None:
        """Any WINDOW_UPDATE or SETTINGS may open it: every waiting stream looks again."""
        await self._credit.park()

    # -- the connection --------------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        state.shutdown_hooks.add(self._on_shutdown)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, name=_WRITER_TASK)
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
            timeout = math.inf
            if proto.running == 0:
                timeout = config.keep_alive_timeout
                if timeout <= 0 and not self.requests:
                    # Keep-alive off: a new connection still gets time for its request.
                    timeout = config.request_head_timeout
            if timeout == math.inf:  # (streams running: no cancel scope per read)
                data = await self._read()
            else:
                idle: bytes | None = None
                with trio.move_on_after(timeout):
                    idle = await self._read()
                if idle is None:
                    self._goaway()
                    return
                data = idle
            if not data:
                self._broken = True
                return

    async def _read(self) -> bytes:
        """The next bytes; ``b""`` at EOF or when the socket broke."""
        try:
            return bytes(await self.stream.receive_some(READ_SIZE))
        except STREAM_ERRORS:
            return b""

    def _drained(self) -> bool:
        """GOAWAY was sent and every stream has finished: the connection is done."""
        return self.proto.last_stream_id is not None and self.proto.running == 0

    def _dispatch(self, events: list[H2Event]) -> None:
        streams = self.streams
        for stream_id, event in events:
            cls = type(event)
            if cls is Request or cls is BadRequest:
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

    def _start_stream(
        self, stream_id: int, request: Request | BadRequest, upgraded: bool = False
    ) -> None:
        assert self._nursery is not None
        stream = self.streams[stream_id] = Stream(self, stream_id)
        if upgraded:
            stream.on_event(EndData())
        self.requests += 1
        config = self.state.config
        # Keep-alive off: one request per connection, as over HTTP/1.1.
        limit = config.keep_alive_max_requests if config.keep_alive_timeout > 0 else 1
        if self.requests >= limit:
            self._goaway()
        # A fixed name: trio would otherwise format one per task.
        nursery = self._nursery
        nursery.start_soon(serve_stream, stream, request, nursery, name=_STREAM_TASK)

    def stream_done(self, stream: Stream) -> None:
        del self.streams[stream.stream_id]
        self.proto.stream_finished(stream.stream_id, trio.current_time())
        self.kick()
        if self._drained():
            self._read_scope.cancel()

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

"""One WebSocket, from the upgrade request the HTTP/1.1 connection hands over to the end.

The app runs in the connection's task, as for HTTP. Once it accepts, helper tasks
join it in a nursery that lives exactly as long as the WebSocket:

- the reader: socket -> wsproto -> a bounded channel (``max_app_queue_size``) -> the app's
  ``receive()``. When the app falls behind, the channel fills, the reader stops reading
  and TCP pushes back on the client. Protocol replies (pongs, the close echo) are written
  by the reader itself, batched per read.
- the keep-alive (if ``websocket_ping_interval``): pings, and closes with 1011 when no
  pong comes within ``websocket_ping_timeout``; the app sees a 1006 disconnect.
- the shutdown close: when graceful shutdown begins (a hook in ``ServerState``, not a
  task waiting for it) a task closes with 1001; the app then has until the connections
  nursery's deadline (``graceful_timeout``) to finish.

The app's ``send()`` writes straight to the socket (a slow client slows the app); every
write takes its turn (a flag, with a parking lot once writers queue) because a trio
stream allows one writer at a time. No send is ever shielded, so the shutdown deadline
holds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import MutableMapping
from typing import Any

import trio

from ..errors import ClientDisconnected
from ..logs import access_log, error_log
from ..sansio.accesslog import AccessLogAtoms, format_access_line
from ..sansio.asgi import UnexpectedMessage
from ..sansio.events import Headers, Request
from ..sansio.http11 import HTTP11Protocol, error_response
from ..sansio.proxy import host_allowed
from ..sansio.websocket import (
    OPEN,
    HandshakeError,
    SessionClosed,
    WebSocketSession,
    build_websocket_scope,
    check_handshake,
)
from .state import ServerState
from .transport import ConnectionInfo, linger_close

READ_SIZE = 64 * 1024
# How long we wait for the peer's close frame after we sent ours, before dropping it.
CLOSE_TIMEOUT = 5.0
# Bound on writing our close frame to a peer that stopped answering pings.
_ABORT_WRITE_TIMEOUT = 1.0

_GONE: dict[str, Any] = {"type": "websocket.disconnect", "code": 1006, "reason": ""}
_NO_SCOPE = contextlib.nullcontext()
_READER_NAME = f"{__name__}.WebSocketHandler._reader"
_SHUTDOWN_NAME = f"{__name__}.WebSocketHandler._close_on_shutdown"
_KEEPALIVE_NAME = f"{__name__}.WebSocketHandler._keepalive"


async def serve_websocket(
    stream: trio.abc.Stream,
    state: ServerState,
    info: ConnectionInfo,
    proto: HTTP11Protocol,
    request: Request,
    *,
    eof: bool = False,
) -> None:
    """Serve one upgrade request; returns when the WebSocket (or the refusal) is over.

    The caller closes the stream afterwards; the connection is never reused for HTTP.
    """
    config = state.config
    try:
        key = check_handshake(request)
    except HandshakeError as exc:
        await _refuse(stream, info, exc.status, str(exc), exc.headers)
        return
    handler = WebSocketHandler(stream, state, info, proto, request, key, eof)
    del proto  # the session owns it now, and drops it once the WebSocket is accepted
    # The same gates as HTTP requests: server_names (404) and limit_concurrency (503).
    if config.server_names and not host_allowed(handler.scope["headers"], config.server_names):
        await _refuse(stream, info, 404, "Host not in server_names")
        return
    limit = config.limit_concurrency
    if limit is not None and state.in_flight >= limit:
        await _refuse(stream, info, 503, "limit_concurrency reached")
        return
    await handler.run()


async def _refuse(
    stream: trio.abc.Stream,
    info: ConnectionInfo,
    status: int,
    reason: str,
    headers: Headers | None = None,
) -> None:
    error_log.info("%s %s: WebSocket upgrade refused: %s", info.client_text, status, reason)
    try:
        await stream.send_all(error_response(status, extra=headers or []))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    await linger_close(stream)


class WebSocketHandler:
    """The trio side of one :class:`~trioserve.sansio.websocket.WebSocketSession`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        state: ServerState,
        info: ConnectionInfo,
        proto: HTTP11Protocol,
        request: Request,
        key: bytes,
        eof: bool,
    ) -> None:
        self.stream = stream
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
        self._to_app, self._from_reader = trio.open_memory_channel[dict[str, Any]](
            max(0, config.max_app_queue_size)
        )
        # One writer at a time. Not a trio.Lock: acquiring one registers the task with
        # trio's parking-lot breaker table (a dict entry and an inspect call per message).
        # A flag does it; the lot exists only once a second writer waits.
        self._writing = False
        self._write_waiters: trio.lowlevel.ParkingLot | None = None
        self._connected = False
        self.eof = eof
        self.broken = False  # writing failed, or we gave up on the peer
        self._nursery: trio.Nursery | None = None
        # Only the keep-alive cancels the reader; without pings no scope is needed (an
        # entered CancelScope costs ~0.6 KiB per idle WebSocket).
        self._reader_scope = trio.CancelScope() if config.websocket_ping_interval else None
        # Created only when run() waits for the reader at the end.
        self._reader_finished = False
        self._reader_done: trio.Event | None = None
        self._pong: trio.Event | None = None

    # -- the app's channels -----------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        channel = self._from_reader
        try:
            return channel.receive_nowait()
        except trio.WouldBlock:
            pass
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return self.session.disconnect or dict(_GONE)
        try:
            return await channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return self.session.disconnect or dict(_GONE)

    async def send(self, message: MutableMapping[str, Any]) -> None:
        session = self.session
        if self.broken:
            if isinstance(message, MutableMapping) and message.get("type") == "websocket.close":
                return
            raise ClientDisconnected("client disconnected")
        opening = session.state is not OPEN
        try:
            data = session.app_message(message, self.state.default_headers() if opening else None)
        except SessionClosed:
            raise ClientDisconnected("WebSocket is closed") from None
        if data:
            await self._write(data)
            if opening and session.state is OPEN:
                self._start_tasks()

    async def _write(self, data: bytes) -> None:
        if self._writing:
            # Wait in line; the writer that finishes hands the turn over (_writing stays True).
            waiters = self._write_waiters
            if waiters is None:
                waiters = self._write_waiters = trio.lowlevel.ParkingLot()
            await waiters.park()
        else:
            self._writing = True  # send_all() below is this call's checkpoint
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            raise ClientDisconnected("client disconnected") from None
        finally:
            waiters = self._write_waiters
            if waiters:
                waiters.unpark()
            else:
                self._writing = False

    async def _write_quietly(self, data: bytes) -> None:
        try:
            await self._write(data)
        except ClientDisconnected:
            pass

    # -- lifetime ---------------------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        start = time.perf_counter()
        state.in_flight += 1
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._run_app()
                    self._from_reader.close()  # the reader now drops what still arrives
                    await self._await_close()
                    nursery.cancel_scope.cancel()
                finally:
                    # Before the nursery closes: the hook starts a task in it.
                    state.shutdown_hooks.discard(self._shutdown_started)
        finally:
            state.in_flight -= 1
            state.count_request()
        if access_log.isEnabledFor(20):
            atoms = AccessLogAtoms(
                self.scope,
                self.session.status,
                None,
                self.session.bytes_sent,
                time.perf_counter() - start,
            )
            access_log.info(format_access_line(state.config.access_log_format, atoms))
        if self.broken:
            await trio.aclose_forcefully(self.stream)
        else:
            await linger_close(self.stream)

    async def _run_app(self) -> None:
        session = self.session
        try:
            await self.state.app(self.scope, self.receive, self.send)
        except Exception as exc:
            self._log_app_error(exc)
            if session.handshake_pending:
                await self._write_quietly(session.refuse(500, self.state.default_headers()))
            elif session.denial_incomplete:
                self.broken = True
            elif not self.broken:
                data = session.close(1011, "internal error")
                if data:
                    await self._write_quietly(data)
            return
        if session.handshake_pending:
            error_log.error(
                "ASGI app returned without accepting or closing the WebSocket (%s)",
                self.scope["path"],
            )
            await self._write_quietly(session.refuse(500, self.state.default_headers()))
        elif session.denial_incomplete:
            error_log.error(
                "ASGI app returned without finishing the denial response (%s)",
                self.scope["path"],
            )
            self.broken = True
        elif not self.broken:
            data = session.close(1000)
            if data:
                await self._write_quietly(data)

    async def _await_close(self) -> None:
        """Give the peer a moment to answer our close frame (a clean close on both sides)."""
        if self.session.conn is None or self.broken or self._reader_finished:
            return
        done = self._reader_done = trio.Event()
        with trio.move_on_after(CLOSE_TIMEOUT):
            await done.wait()

    def _start_tasks(self) -> None:
        nursery = self._nursery
        assert nursery is not None
        config = self.state.config
        # Fixed task names: trio would otherwise format a new string for every task.
        nursery.start_soon(self._reader, name=_READER_NAME)
        if self.state.shutting_down:
            nursery.start_soon(self._close_on_shutdown, name=_SHUTDOWN_NAME)
        else:
            self.state.shutdown_hooks.add(self._shutdown_started)
        if config.websocket_ping_interval:
            nursery.start_soon(
                self._keepalive,
                config.websocket_ping_interval,
                config.websocket_ping_timeout,
                name=_KEEPALIVE_NAME,
            )

    def _shutdown_started(self) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._close_on_shutdown, name=_SHUTDOWN_NAME)

    # -- helper tasks -----------------------------------------------------------------------
    async def _deliver(self, message: dict[str, Any]) -> None:
        channel = self._to_app
        try:
            channel.send_nowait(message)
        except trio.WouldBlock:
            try:
                await channel.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the app has finished: nobody reads any more
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _reader(self) -> None:
        session = self.session
        stream = self.stream
        try:
            with self._reader_scope or _NO_SCOPE:
                if self.eof:
                    session.receive_data(None)
                while True:
                    messages = session.app_messages()
                    out = session.data_to_send()
                    if out:
                        await self._write_quietly(out)
                    pong = self._pong
                    if pong is not None and session.awaiting_pong is None:
                        pong.set()
                    for message in messages:
                        await self._deliver(message)
                    if session.disconnect is not None:
                        self._to_app.close()
                        return
                    try:
                        data = await stream.receive_some(READ_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    session.receive_data(data if data else None)
        except Exception:
            error_log.exception("Unexpected error reading WebSocket %s", self.scope["path"])
            self.broken = True
            lost = session.connection_lost()
            if lost is not None:
                await self._deliver(lost)
            self._to_app.close()
        finally:
            self._reader_finished = True
            if self._reader_done is not None:
                self._reader_done.set()

    async def _close_on_shutdown(self) -> None:
        data = self.session.close(1001, "server shutting down")
        if data and not self.broken:
            await self._write_quietly(data)

    async def _keepalive(self, interval: float, timeout: float | None) -> None:
        session = self.session
        count = 0
        while True:
            await trio.sleep(interval)
            count += 1
            self._pong = pong = trio.Event()
            data = session.ping(count.to_bytes(4, "big"))
            if not data or self.broken:
                return
            try:
                await self._write(data)
            except ClientDisconnected:
                return
            if timeout is None:
                continue
            with trio.move_on_after(timeout):
                await pong.wait()
            if session.awaiting_pong is not None and session.conn is not None:
                await self._abort(f"no pong within {timeout}s")
                return

    async def _abort(self, reason: str) -> None:
        """Give up on an unresponsive peer: close 1011, and the app sees 1006 once."""
        error_log.info(
            "%s: closing WebSocket %s: %s", self.info.client_text, self.scope["path"], reason
        )
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        data = self.session.close(1011, "keepalive ping timeout")
        if data and not self.broken:
            with trio.move_on_after(_ABORT_WRITE_TIMEOUT):
                await self._write_quietly(data)
        self.broken = True
        message = self.session.connection_lost()
        if message is not None:
            await self._deliver(message)
        self._to_app.close()

    def _log_app_error(self, exc: Exception) -> None:
        path = self.scope["path"]
        if isinstance(exc, ClientDisconnected):
            error_log.debug("client went away during WebSocket %s", path)
            return
        if isinstance(exc, UnexpectedMessage):
            error_log.error("ASGI protocol error in WebSocket %s: %s", path, exc)
            return
        error_log.error("Exception in ASGI application (WebSocket %s)", path, exc_info=exc)

"""One HTTP/1.1 connection, driven top to bottom in its own task.

The app runs in the connection's task. Its ``receive()`` pulls bytes from the socket only
when it wants the next body chunk, so a slow app stops the reads (backpressure) without a
queue, and ``send()`` writes straight to the socket, so a slow client slows the app. A
client that goes away is seen by the next ``receive()`` (one ``http.disconnect``) or
``send()`` (:class:`~trioserve.errors.ClientDisconnected`, an ``OSError``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import h11
import trio

from ..errors import ClientDisconnected
from ..logs import access_log, error_log
from ..sansio.accesslog import AccessLogAtoms, format_access_line
from ..sansio.asgi import HTTPResponseCycle, UnexpectedMessage, build_http_scope
from ..sansio.events import (
    NEED_DATA,
    BadRequest,
    ConnectionClosed,
    Data,
    EndData,
    InformationalResponse,
    Request,
    Response,
)
from ..sansio.http11 import HTTP11Protocol, error_response
from ..sansio.http11_fast import make_http11_protocol
from ..sansio.proxy import host_allowed
from ..sansio.websocket import wants_websocket
from .faults import belongs_to_server
from .state import FIRST_REQUEST_GRACE, ServerState
from .transport import ConnectionInfo, linger_close
from .websocket import serve_websocket

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

READ_SIZE = 64 * 1024
# Bytes of pipelined requests we buffer while waiting to see whether the client is gone.
_PIPELINE_BUFFER = 64 * 1024
# Response pieces up to this size are joined into one write; a larger body is written as is.
_JOIN_LIMIT = 64 * 1024

_REQUEST_DONE: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


class HTTP11Connection:
    """Serves requests on one stream until the client leaves, a limit is hit, or shutdown."""

    # Thousands of these sit idle in a keep-alive server: no per-instance __dict__.
    __slots__ = (
        "_read_waiters",
        "_reading",
        "broken",
        "eof",
        "info",
        "proto",
        "refusal",
        "state",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, state: ServerState, info: ConnectionInfo) -> None:
        self.stream = stream
        self.state = state
        self.info = info
        config = state.config
        self.proto = make_http11_protocol(
            config.http, max_head_size=config.h11_max_incomplete_size
        )
        self.eof = False  # the peer closed its sending side
        self.broken = False  # writing failed: the peer is gone for good
        self.refusal: BadRequest | None = None  # a body we refused mid-way
        # One reader at a time. Not a trio.Lock: an idle connection sits in _read() holding
        # it, and a held Lock (its ParkingLot, trio's per-task breaker entry) costs ~0.35 KiB
        # per connection. A flag does it; the lot exists only once a second reader waits.
        self._reading = False
        self._read_waiters: trio.lowlevel.ParkingLot | None = None

    # -- reading ---------------------------------------------------------------------------
    async def _read(self, timeout: float | None = None) -> int:
        """Receive once into the protocol and return the byte count (0 at EOF).

        A stall past ``timeout`` raises TooSlowError.
        """
        if self._reading:
            # Another task is reading (rare: an app calling receive() from two tasks). Wait
            # in line; the reader that finishes hands the turn over (_reading stays True).
            waiters = self._read_waiters
            if waiters is None:
                waiters = self._read_waiters = trio.lowlevel.ParkingLot()
            await waiters.park()
        else:
            # Uncontended (the usual case): no trip through the scheduler here;
            # receive_some() below is this call's checkpoint.
            self._reading = True
        try:
            if self.eof:
                await trio.lowlevel.checkpoint()
                return 0
            try:
                if timeout is None:
                    data = await self.stream.receive_some(READ_SIZE)
                else:
                    with trio.fail_after(timeout):
                        data = await self.stream.receive_some(READ_SIZE)
                data = bytes(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.eof = True
            self.proto.receive_data(data)
            return len(data)
        finally:
            waiters = self._read_waiters
            if waiters:
                waiters.unpark()  # the turn passes to the next reader in line
            else:
                self._reading = False

    async def _next_request(self) -> Request | None:
        """Wait for the next request head; None means close the connection (quietly)."""
        config = self.state.config
        proto = self.proto
        head_deadline = math.inf
        while True:
            event = proto.next_event()
            if type(event) is Request:
                return event
            if event is NEED_DATA:
                if self.eof:
                    return None
                if proto.idle:
                    fresh = not proto.requests_seen
                    if self.state.shutting_down and not fresh:
                        return None
                    idle_timeout = config.keep_alive_timeout
                    if idle_timeout <= 0 and fresh:
                        # Keep-alive off: a new connection still gets time for its request.
                        idle_timeout = config.request_head_timeout
                    if self.state.shutting_down:  # accepted as draining began
                        idle_timeout = min(idle_timeout, FIRST_REQUEST_GRACE)
                    scopes = self.state.fresh_scopes if fresh else self.state.idle_scopes
                    with trio.move_on_after(idle_timeout) as scope:
                        scopes.add(scope)
                        try:
                            await self._read()
                        finally:
                            scopes.discard(scope)
                    if scope.cancelled_caught:
                        return None
                    continue
                # Part of a head has arrived: it must complete by a fixed deadline that
                # trickling bytes do not extend (slowloris), answered with 408.
                now = trio.current_time()
                if head_deadline == math.inf:
                    head_deadline = now + config.request_head_timeout
                try:
                    await self._read(max(head_deadline - now, 0))
                except trio.TooSlowError:
                    await self._refuse(408, "timed out waiting for the request head")
                    return None
                continue
            if type(event) is BadRequest:
                await self._refuse(event.status, event.reason)
                return None
            if type(event) is ConnectionClosed:
                return None
            raise AssertionError(f"unexpected event before a request: {event!r}")

    async def _refuse(self, status: int, reason: str) -> None:
        error_log.info("%s %s: %s", self.info.client_text, status, reason)
        if not self.broken:
            try:
                await self.stream.send_all(error_response(status))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.broken = True
                return
            await linger_close(self.stream)

    # -- serving ---------------------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        max_requests = state.config.keep_alive_max_requests
        if state.config.keep_alive_timeout <= 0:  # keep-alive off: one request per connection
            max_requests = 1
        while True:
            request = await self._next_request()
            if request is None:
                return
            if state.shutting_down or self.proto.requests_seen >= max_requests:
                self.proto.close_after_response()
            if wants_websocket(request):  # the connection becomes a WebSocket (or is refused)
                await serve_websocket(
                    self.stream, state, self.info, self._hand_over_proto(), request, eof=self.eof
                )
                return
            keep_going = await self._serve_request(request)
            if not keep_going or not self.proto.keep_alive:
                return
            self.proto.start_next_cycle()

    def _hand_over_proto(self) -> HTTP11Protocol:
        """Give the protocol to the WebSocket, keeping no reference to it here.

        The WebSocket drops it once accepted, so an idle WebSocket does not keep h11's
        connection state and buffers alive. This connection serves no more HTTP after it.
        """
        proto = self.proto
        del self.proto
        return proto

    async def _serve_request(self, request: Request) -> bool:
        """Run the app for one request. Returns whether the connection may be reused."""
        state = self.state
        config = state.config
        proto = self.proto
        info = self.info
        scope = state.scope_for(build_http_scope, request, info)
        cycle = HTTPResponseCycle(
            is_head=request.method == b"HEAD", default_headers=state.default_headers()
        )
        # Refusals (server_names, limit_concurrency, an announced body over the limit) go
        # through the normal response path with a tiny app in place of the user's.
        app = state.app
        refused = _refusal(request, scope, state)
        if refused:
            app = _refusal_app(refused)
            proto.close_after_response()
        body_limit = config.max_request_body_size
        body_received = 0
        body_rejected = False  # the body grew past max_request_body_size while streaming
        response_headers: Any = None
        body_done = False
        continue_pending = request.expects_continue
        finished = False
        start = time.perf_counter()

        async def receive() -> dict[str, Any]:
            nonlocal body_done, continue_pending, body_received, body_rejected
            if finished or body_rejected:
                return _DISCONNECT
            if refused:
                body_done = True
                return _REQUEST_DONE
            if body_done:
                await self._wait_for_disconnect()
                self.broken = True  # the app is told the client is gone: send() now raises
                return _DISCONNECT
            if continue_pending:
                continue_pending = False
                if not cycle.started and not self.broken:
                    try:
                        await self._write(proto.send(InformationalResponse(100, [])))
                    except ClientDisconnected:  # receive() reports a gone client, never raises
                        body_done = True
                        return _DISCONNECT
            while True:
                event = proto.next_event()
                cls = type(event)
                if cls is Data:
                    body = event.data  # type: ignore[union-attr]
                    body_received += len(body)
                    if body_limit is not None and body_received > body_limit:
                        body_rejected = True
                        body_done = True
                        return _DISCONNECT
                    nxt = proto.next_event()
                    if type(nxt) is EndData:
                        body_done = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    proto.push_back(nxt)
                    return {"type": "http.request", "body": body, "more_body": True}
                if cls is EndData:
                    body_done = True
                    return _REQUEST_DONE
                if event is NEED_DATA:
                    if self.eof or self.broken:
                        self.broken = True  # a body cut short never completes
                        body_done = True
                        return _DISCONNECT
                    try:
                        await self._read(config.read_timeout)
                    except trio.TooSlowError:
                        error_log.info("%s: request body read timed out", info.client_text)
                        self.broken = True
                        body_done = True
                        return _DISCONNECT
                    continue
                # BadRequest (e.g. a malformed chunk) or ConnectionClosed mid-body: the
                # app sees a disconnect; a refusal is answered once the app is done.
                if cls is BadRequest:
                    self.refusal = event  # type: ignore[assignment]
                self.broken = True
                body_done = True
                return _DISCONNECT

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal response_headers
            if finished or self.broken or body_rejected:
                raise ClientDisconnected("client disconnected")
            events = cycle.on_message(message)
            if events:
                if type(events[0]) is Response:
                    response_headers = events[0].headers
                    if state.shutting_down:  # tell the client not to reuse it
                        proto.close_after_response()
                try:
                    chunks = [proto.send(event) for event in events]
                except h11.LocalProtocolError as exc:
                    raise UnexpectedMessage(str(exc)) from None
                if len(chunks) == 1 or sum(map(len, chunks)) < _JOIN_LIMIT:
                    await self._write(b"".join(chunks))
                else:  # a large body goes out as it is: joining it to the head would copy it
                    for chunk in chunks:
                        if chunk:
                            await self._write(chunk)

        state.in_flight += 1
        try:
            await app(scope, receive, send)
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, ... from an app fail one request, not the server.
            if belongs_to_server(exc):
                raise
            if not body_rejected:
                self._log_app_error(scope, exc, cycle)
            if isinstance(exc, UnexpectedMessage):
                # The app broke the message protocol: don't trust the connection's state.
                proto.close_after_response()
            if body_rejected:
                pass  # answered with 413 below
            elif not cycle.on_the_wire and not self.broken:
                # Nothing was written yet (the head is held until the first body), so
                # the client can still get a clean 500 instead of a cut connection.
                await self._send_500(cycle)
            else:
                self.broken = True
        else:
            if cycle.state != 2 and not self.broken and not body_rejected:  # not DONE
                if not cycle.started:
                    error_log.error(
                        "ASGI app returned without sending a response (%s %s)",
                        scope["method"],
                        scope["path"],
                    )
                    await self._send_500(cycle)
                else:
                    error_log.error(
                        "ASGI app returned without finishing the response (%s %s)",
                        scope["method"],
                        scope["path"],
                    )
                    if cycle.on_the_wire:
                        self.broken = True
                    else:  # the head is still held back: a 500 replaces it
                        await self._send_500(cycle)
        finally:
            finished = True
            state.in_flight -= 1
            state.count_request()
        if body_rejected and not cycle.started:
            cycle.status = 413
        if access_log.isEnabledFor(20):
            atoms = AccessLogAtoms(
                scope,
                cycle.status or None,
                response_headers,
                cycle.bytes_sent,
                time.perf_counter() - start,
            )
            access_log.info(format_access_line(config.access_log_format, atoms))
        if body_rejected or refused == 413:
            # Answer without reading the rest of the body; linger so the answer survives.
            if body_rejected and not cycle.started:
                await self._refuse(413, "request body over max_request_body_size")
            elif not self.broken:
                await linger_close(self.stream)
            return False
        if self.refusal is not None:
            if not cycle.started:
                # The app was told "disconnect" (broken), but the client is still there and
                # gets the answer to the bad bytes it sent; a failed write is still caught.
                self.broken = False
                await self._refuse(self.refusal.status, self.refusal.reason)
            return False
        if self.broken or not proto.response_complete:
            return False
        if self._drain_unread_body():
            return True
        # The app answered without reading the whole body: close, but without a reset
        # that could destroy the response before the client reads it.
        await linger_close(self.stream)
        return False

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

    async def _wait_for_disconnect(self) -> None:
        """Block until the client goes away, buffering what it pipelines meanwhile."""
        buffered = 0
        while not self.eof and not self.broken:
            if buffered > _PIPELINE_BUFFER:
                await trio.sleep_forever()
            buffered += await self._read()

    async def _write(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            raise ClientDisconnected("client disconnected") from None

    async def _send_500(self, cycle: HTTPResponseCycle) -> None:
        cycle.status = 500
        body = b"Internal Server Error\n"
        headers = [
            *self.state.default_headers(),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        proto = self.proto
        try:
            data = proto.send(Response(500, headers))
            if not cycle.is_head:
                data += proto.send(Data(body))
            data += proto.send(EndData())
        except h11.LocalProtocolError:
            self.broken = True
            return
        try:
            await self._write(data)
        except ClientDisconnected:
            pass

    def _caused_by_disconnect(self, exc: BaseException) -> bool:
        """Whether an app error is just the client leaving, re-raised in the app's words.

        Frameworks catch our ``OSError`` from ``send()`` and raise their own exception
        (Starlette's ``ClientDisconnect``), sometimes inside an exception group.
        """
        if not self.broken:
            return False
        seen: set[int] = set()
        stack: list[BaseException | None] = [exc]
        while stack:
            current = stack.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, ClientDisconnected):
                return True
            if isinstance(current, BaseExceptionGroup):
                stack.extend(current.exceptions)
            stack.extend((current.__cause__, current.__context__))
        return False

    def _log_app_error(
        self, scope: dict[str, Any], exc: BaseException, cycle: HTTPResponseCycle
    ) -> None:
        if self._caused_by_disconnect(exc):
            error_log.debug("client went away during %s %s", scope["method"], scope["path"])
            return
        if isinstance(exc, UnexpectedMessage):
            # The traceback points at the app's offending send().
            error_log.error(
                "ASGI protocol error in %s %s: %s",
                scope["method"],
                scope["path"],
                exc,
                exc_info=exc,
            )
            return
        error_log.error(
            "Exception in ASGI application (%s %s)",
            scope["method"],
            scope["path"],
            exc_info=exc,
        )


_REFUSAL_BODIES = {
    404: b"Not Found\n",
    413: b"Payload Too Large\n",
    503: b"Service Unavailable\n",
}


def _refusal(request: Request, scope: dict[str, Any], state: ServerState) -> int:
    """The status to refuse a request with before the app sees it (0: serve it)."""
    config = state.config
    if config.server_names and not host_allowed(scope["headers"], config.server_names):
        return 404  # Hypercorn's answer for a Host not in server_names
    limit = config.limit_concurrency
    if limit is not None and state.in_flight >= limit:
        return 503
    body_limit = config.max_request_body_size
    if body_limit is not None:
        for name, value in request.headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > body_limit:
                    return 413
                break
    return 0


def _refusal_app(status: int) -> Any:
    body = _REFUSAL_BODIES[status]

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse

"""One ASGI HTTP request, whatever HTTP version carries it.

:class:`RequestRunner` owns what every version shares: the app call, ``receive()`` and
``send()``, the failure policy (a 500 while nothing was written, an aborted exchange once
something was, one log line), the refusals made before the app runs (413, 503,
``server_names``), the access log, and the in-flight and request counters. It talks to the
connection only through :class:`RequestPort`. The gates, the counts, the access-log line
and what an app's exception means are shared with WebSockets, in
:class:`~.exchange.Exchange`.

HTTP/1.1 (:class:`~trioserve.server.http11.HTTP11Connection`) is the port itself, with the
pull model: a body piece is read from the socket only when the app asks for it, and a
response is written straight to the socket.

An HTTP/2 (or HTTP/3) stream implements the port per stream. The connection's read loop
parses frames and appends a stream's DATA to that stream's bounded buffer;
``body_piece()`` pops from it without waiting, ``receive_body()`` waits until a piece or
the end arrives, and taking a piece acknowledges it to flow control (WINDOW_UPDATE), so a
slow app slows its own stream's sender and no other. ``send_events()`` frames HEADERS and
DATA through the shared h2 state and waits for the send window; ``wait_disconnected()``
returns on RST_STREAM or the connection's end; ``abort()`` resets the stream;
``close_after_response()`` asks for GOAWAY; ``can_inform`` is "no HEADERS sent yet".
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Awaitable, MutableMapping
from typing import Any, Protocol

import trio

from ..errors import ClientDisconnected, SendTimeout
from ..logs import access_log, error_log
from ..sansio.asgi import (
    DONE,
    HTTPResponseCycle,
    UnexpectedMessage,
)
from ..sansio.body import (
    CONTINUE,
    NOT_YET,
    READ,
    SEND_CONTINUE,
    TIMED_OUT,
    TOO_LARGE,
    WAIT_FOR_DISCONNECT,
    BodyPiece,
    RequestBody,
)
from ..sansio.events import (
    Data,
    EndData,
    InformationalResponse,
    OutboundEvent,
    ProtocolError,
    Request,
    Response,
    Sentinel,
)
from .appcall import drive_app as drive_app  # (imported from here by the connections)
from .exchange import Exchange
from .faults import belongs_to_server
from .refusals import refusal_app
from .refusals import refuse_stream as refuse_stream  # (imported from here by stream.py)
from .state import ServerState
from .transport import ConnectionInfo

# What run() leaves the connection to do.
DONE_NORMALLY = 0  # the exchange ended: the connection decides about reuse
LEAVE_BODY_UNREAD = 1  # answered without reading the body: close it politely (H2: reset)
REFUSED = 2  # the port's refuse() answered and closed: nothing left to do

_INTERNAL_ERROR_BODY = b"Internal Server Error\n"
NO_RESPONSE = 444  # the access-log status of a request cut before any response was sent
# The body states in which the app was told the client is gone (413 or 408 follows).
_CUT_SHORT = (TOO_LARGE, TIMED_OUT)
# http.response.pathsend reads the file in pieces of this size.
_FILE_PIECE = 256 * 1024


class RequestPort(Protocol):
    """The connection as one request sees it (HTTP/1.1 connection, HTTP/2 stream, ...)."""

    @property
    def gone(self) -> bool:
        """The peer is gone for this request: nothing more can be written."""

    @property
    def can_inform(self) -> bool:
        """An informational (1xx) response can still be sent."""

    def body_piece(self) -> BodyPiece | Sentinel:
        """The next body piece if it is already here, else ``NOT_YET``. Never waits."""

    async def receive_body(self, timeout: float | None) -> BodyPiece:
        """Wait for the next body piece. ``trio.TooSlowError`` if none came in ``timeout``
        (the port may not be reused then: the rest of the body is unread)."""

    def send_events(self, events: list[OutboundEvent]) -> Awaitable[None]:
        """Frame ``events`` (raising :class:`ProtocolError` before writing anything if they
        cannot be framed) and return the awaitable that writes them. The write raises
        :class:`ClientDisconnected` once the peer is gone."""

    async def wait_disconnected(self) -> None:
        """Return once the peer is gone (``gone`` is then true)."""

    def poll_disconnected(self) -> bool:
        """Whether the peer is already known to be gone, looking without waiting (once
        true, so is ``gone``)."""

    def close_after_response(self) -> None:
        """Do not reuse the connection after this response (HTTP/1.1: Connection: close)."""

    def abort(self) -> None:
        """Give up on this exchange: nothing more is written and it is not reused."""

    async def refuse(self, status: int, reason: str | None) -> None:
        """Answer with a minimal error response instead of the app's, then close.
        ``reason`` is logged (None: the runner has logged already)."""

    def send_soon(self, events: list[OutboundEvent]) -> None:
        """Frame ``events`` (a held response head) now and have them written without the
        calling task waiting: the app waits on something else. Raises
        :class:`ProtocolError` before framing anything if they cannot be framed; a later
        write goes after them."""

    async def send_file(self, fd: int, size: int) -> bool:
        """http.response.pathsend's body, ``size`` bytes of the file ``fd``, by the kernel
        (sendfile) where the port can; False (nothing written) where it cannot, and the
        runner sends the file in pieces through ``send_events``."""


class RequestRunner(Exchange):
    """Runs the app for one request on a :class:`RequestPort`; see the module docstring."""

    __slots__ = (
        "aborted",
        "body",
        "context",
        "cut_by",
        "cycle",
        "finished",
        "port",
        "refused",
        "response_headers",
        "target",
        "waiting",
        "written",
    )

    def __init__(
        self,
        port: RequestPort,
        state: ServerState,
        request: Request,
        info: ConnectionInfo,
        context: contextvars.Context | None = None,
    ) -> None:
        self.port = port
        self.context = context  # where the app runs (server/context.py); None: this task
        self.state = state
        scope, extensions = state.http_scope(request, info)
        self.scope = scope
        # (response_headers() only to echo the id: one call fewer per request without it)
        defaults = state.response_headers(scope) if state.echo_id else state.default_headers()
        self.cycle = HTTPResponseCycle(
            is_head=request.method == b"HEAD",
            default_headers=defaults,
            extensions=extensions,
        )
        # Refusals (server_names, limit_concurrency, an announced body over the limit) go
        # through the normal response path with a tiny app in place of the user's.
        self.refused = refused = self._admit(request)
        if refused:
            port.close_after_response()
            state.metrics.refused(refused)
        self.body = RequestBody(
            state.config.max_request_body_size,
            expects_continue=request.expects_continue,
            skip=bool(refused),
        )
        self.response_headers: Any = None
        self.finished = False
        self.written = False  # response bytes were handed to the port for writing
        self.target = request.target  # as received, for the access log
        self.aborted = False  # we gave up on the exchange (not the client leaving)
        self.waiting: trio.CancelScope | None = None  # a receive() waiting for the peer
        self.cut_by = ""  # the deadline that ended the exchange, if one did

    # -- the app's channels ------------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        body = self.body
        action = body.action()
        if action == READ:
            piece = self.port.body_piece()
            if piece is NOT_YET:
                try:
                    piece = await self._wait_for_body()
                except trio.TooSlowError:
                    self._deadline_hit("request body")
                    return body.on_timeout()
            return body.on_piece(piece)  # type: ignore[arg-type]
        if action == WAIT_FOR_DISCONNECT:
            # An answer already known comes back without waiting, so it reaches even a
            # receive() in a cancelled scope (Starlette's is_disconnected()).
            if not self.port.poll_disconnected() and not self._draining():
                await self._wait_disconnected()
            return body.on_disconnect()
        if action == SEND_CONTINUE:
            body.continue_handled()
            port = self.port
            if not self.cycle.started and port.can_inform:
                try:
                    await port.send_events([InformationalResponse(100, [])])
                except ClientDisconnected:  # receive() reports a gone client, never raises
                    return body.on_disconnect()
            return await self.receive()
        return body.on_disconnect()

    async def _wait_for_body(self) -> BodyPiece:
        """The peer's next body piece, within read_timeout (one stall) and the body's
        budget (request_body_timeout, earned back at request_body_min_rate)."""
        config = self.state.config
        body = self.body
        timeout = config.read_timeout
        budget = body.wait_budget(config.request_body_timeout, config.request_body_min_rate)
        if budget is not None and (timeout is None or budget < timeout):
            timeout = budget
        start = trio.current_time()
        try:
            return await self.port.receive_body(timeout)
        finally:
            body.waited += trio.current_time() - start

    def _deadline_hit(self, what: str) -> None:
        self.cut_by = what
        scope = self.scope
        error_log.info(
            "%s: %s timed out (%s %s, %d body bytes in %.1fs of waiting); closing",
            _client_text(scope),
            what,
            scope["method"],
            scope["path"],
            self.body.received,
            self.body.waited,
        )

    def _draining(self) -> bool:
        """Draining, with this response started: the app is told the client is gone, so
        a streaming loop (SSE) ends cleanly instead of being cut at the deadline."""
        return self.state.shutting_down and self.cycle.started

    async def _wait_disconnected(self) -> None:
        """Wait until the peer leaves, or a drain begins once the response started."""
        hooks = self.state.shutdown_hooks
        with trio.CancelScope() as self.waiting:
            hooks.add(self._drain_started)
            try:
                await self.port.wait_disconnected()
            finally:
                hooks.discard(self._drain_started)
        self.waiting = None

    def _drain_started(self) -> None:
        if self.waiting is not None and self._draining():
            self.waiting.cancel()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        port = self.port
        # (body.state, not its too_large/timed_out properties: two calls fewer per send)
        if self.finished or port.gone or self.body.state in _CUT_SHORT:
            raise ClientDisconnected("client disconnected")
        if self.waiting is not None:
            self._drain_started()  # a response that starts during a drain
        events = self.cycle.on_message(message)
        if events:
            if type(events[0]) is Response:
                self.response_headers = events[0].headers
                if self.state.shutting_down or self.body.state == CONTINUE:
                    # Draining, or the client may still send a body it was never asked
                    # for (100-continue unanswered): tell it the connection ends here.
                    port.close_after_response()
            try:
                write = port.send_events(events)
            except ProtocolError as exc:
                raise UnexpectedMessage(str(exc)) from None
            self.written = True
            try:
                await write
            except SendTimeout:
                self._deadline_hit("send")
                raise
        if self.cycle.file_path is not None:
            await self._send_file()

    async def _send_file(self) -> None:
        """http.response.pathsend: by sendfile where the port can (cleartext HTTP/1.1),
        else the file in bounded pieces, each through the port (so HTTP/2 flow control
        and a slow client pace the reads); then the end."""
        cycle = self.cycle
        path = cycle.file_path
        cycle.file_path = None
        port = self.port
        if not cycle.no_body and path is not None:
            async with await trio.open_file(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                try:
                    sent = await port.send_file(file.fileno(), size)
                except ProtocolError as exc:
                    raise UnexpectedMessage(str(exc)) from None
                if sent:
                    cycle.bytes_sent += size
                else:
                    while chunk := await file.read(_FILE_PIECE):
                        cycle.bytes_sent += len(chunk)
                        await port.send_events([Data(chunk)])
        await port.send_events([EndData()])

    def release_head(self) -> None:
        """The app waits (on anything: a timer, a queue, the request body) while its
        response head is held: send the head now, as Uvicorn and Hypercorn would, so an
        SSE client sees its headers (``EventSource.onopen``, a proxy's first-byte timer)
        before the first event. From here an app error aborts instead of becoming a 500.

        The head is framed now and written without this task waiting for it
        (``RequestPort.send_soon``): HTTP/1.1's helper task writes it, and the next write
        goes after it; a multiplexed stream frames at once and its connection's writer
        sends.
        """
        port = self.port
        head = self.cycle.held_head
        if head is None or port.gone:
            return
        try:
            port.send_soon([head])
        except ProtocolError:
            return  # still held: the app's next send() meets the error and answers 500
        self.cycle.release_head()
        self.written = True

    # -- one request -------------------------------------------------------------------------
    async def run(self) -> int:
        """Run the app; returns DONE_NORMALLY, LEAVE_BODY_UNREAD or REFUSED."""
        app = self.state.app if not self.refused else refusal_app(self.refused)
        cancelled = False
        try:
            context = self.context
            if context is None:
                call = app(self.scope, self.receive, self.send)
            else:
                call = context.run(app, self.scope, self.receive, self.send)
            await drive_app(call, context, self)
        except Exception as exc:
            await self._app_failed(exc)
        except trio.Cancelled:
            cancelled = True
            raise
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, ... from an app fail one request, not the server.
            if belongs_to_server(exc):
                raise
            await self._app_failed(exc)
        else:
            if self.cycle.state != DONE:  # (no await for a finished response)
                await self._app_returned()
        finally:
            self.finished = True
            self.body.finish()
            duration = self._leave()
            if cancelled:
                # The shutdown deadline (or a second Ctrl-C) cut the request: one line, with
                # the status the client got: the app's if its head went out, else 444 (nginx's
                # "connection closed without a response"), as 499 for a client that left.
                status = self.cycle.status if self.written else NO_RESPONSE
                self._done(duration, status, cut=True)
        cycle = self.cycle
        too_large = (body_state := self.body.state) == TOO_LARGE  # (2 calls fewer than .too_large)
        if too_large and not cycle.started:
            cycle.status = 413
        timed_out = body_state == TIMED_OUT
        if timed_out and not cycle.started:
            cycle.status = 408
        # 499 (nginx's "client closed request"): the client left before the response was
        # complete, whatever status the app had chosen (not when a deadline of ours cut it).
        left = cycle.state != DONE and self.port.gone and not self.aborted and not self.cut_by
        self._done(duration, 499 if left else cycle.status, cut=left)
        if timed_out:
            if not cycle.started:
                await self.port.refuse(408, None)  # _deadline_hit logged it
                return REFUSED
            self._abort()
            return DONE_NORMALLY
        if too_large:
            if not cycle.started:
                await self.port.refuse(413, "request body over max_request_body_size")
                return REFUSED
            return LEAVE_BODY_UNREAD
        if self.refused == 413:
            return LEAVE_BODY_UNREAD
        return DONE_NORMALLY

    async def _app_failed(self, exc: BaseException) -> None:
        port = self.port
        if self.body.too_large or self.body.timed_out:
            return  # the app saw the disconnect we made: answered with 413 or 408
        scope = self.scope
        what = f"{scope['method']} {scope['path']}"
        self._report_app_error(exc, what, gone=port.gone)
        if isinstance(exc, UnexpectedMessage):
            # The app broke the message protocol: don't trust the connection's state.
            port.close_after_response()
        if self.cycle.state == DONE and self.written:
            # The response is complete and framed (Starlette's ServerErrorMiddleware sends
            # its 500, then re-raises): logged once, nothing to undo.
            return
        if not self.written and not port.gone:
            # Nothing was written yet (the head is held until the first body, and a framing
            # error is caught before writing), so the client can still get a clean 500.
            await self._send_500()
        elif not port.gone:  # (a client that left is not ours to abort: logged as 499)
            self._abort()

    async def _app_returned(self) -> None:
        cycle = self.cycle
        if self.port.gone or self.body.too_large or self.body.timed_out:
            return
        scope = self.scope
        if not cycle.started:
            error_log.error(
                "ASGI app returned without sending a response (%s %s)",
                scope["method"],
                scope["path"],
            )
            await self._send_500()
            return
        error_log.error(
            "ASGI app returned without finishing the response (%s %s)",
            scope["method"],
            scope["path"],
        )
        if self.written:
            self._abort()
        else:  # only the held-back head: a 500 replaces it, and the connection ends
            self.port.close_after_response()
            await self._send_500()

    async def _send_500(self) -> None:
        cycle = self.cycle
        cycle.status = 500
        body = _INTERNAL_ERROR_BODY
        headers = [
            *self.state.default_headers(),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        events: list[OutboundEvent] = [Response(500, headers)]
        if not cycle.is_head:
            events.append(Data(body))
        events.append(EndData())
        port = self.port
        try:
            write = port.send_events(events)
        except ProtocolError:
            # The protocol took part of the app's response before refusing it: answer
            # outside it, and close.
            await port.refuse(500, None)
            self._abort()
            return
        try:
            await write
        except ClientDisconnected:
            pass

    def _abort(self) -> None:
        self.aborted = True
        self.port.abort()

    # -- logs and metrics --------------------------------------------------------------------
    def _done(self, duration: float, status: int, *, cut: bool) -> None:
        """The request is finalised: count it (no status if it was cut) and log it."""
        scope = self.scope
        cycle = self.cycle
        metrics = self.state.metrics
        if metrics.enabled:  # (off: not even a call to the no-op)
            metrics.request_done(
                scope["method"], 0 if cut else status, scope["http_version"], duration,
                self.body.received, cycle.bytes_sent,
            )  # fmt: skip
        if access_log.isEnabledFor(20):
            complete = cycle.state == DONE and not self.cut_by and not self.port.gone
            self.log_access(
                status or None, self.response_headers, cycle.bytes_sent, duration,
                self.target, complete,
            )  # fmt: skip


def _client_text(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"

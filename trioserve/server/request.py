"""One ASGI HTTP request, whatever HTTP version carries it.

:class:`RequestRunner` owns what every version shares: the app call, ``receive()`` and
``send()``, the failure policy (a 500 while nothing was written, an aborted exchange once
something was, one log line), the refusals made before the app runs (413, 503,
``server_names``), the access log, and the in-flight and request counters. It talks to the
connection only through :class:`RequestPort`.

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
import sys
import time
import types
from collections.abc import Awaitable, Generator, MutableMapping
from typing import Any, Protocol

import trio

from ..errors import ClientDisconnected, SendTimeout
from ..logs import access_log, error_log
from ..sansio.accesslog import AccessLogAtoms, format_access_line
from ..sansio.asgi import (
    DONE,
    HTTPResponseCycle,
    UnexpectedMessage,
    build_http_scope,
    response_extensions,
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
from ..sansio.headers import plain_error
from ..sansio.proxy import host_allowed
from .asyncio_bridge import report_needs_asyncio
from .faults import belongs_to_server
from .state import ServerState
from .transport import ConnectionInfo

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

# What run() leaves the connection to do.
DONE_NORMALLY = 0  # the exchange ended: the connection decides about reuse
LEAVE_BODY_UNREAD = 1  # answered without reading the body: close it politely (H2: reset)
REFUSED = 2  # the port's refuse() answered and closed: nothing left to do

_INTERNAL_ERROR_BODY = b"Internal Server Error\n"
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


class RequestRunner:
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
        "scope",
        "state",
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
        self.scope = scope = state.scope_for(build_http_scope, request, info)
        extensions = response_extensions(request)
        scope["extensions"].update(extensions)
        self.cycle = HTTPResponseCycle(
            is_head=request.method == b"HEAD",
            default_headers=state.response_headers(scope),
            extensions=extensions,
        )
        # Refusals (server_names, limit_concurrency, an announced body over the limit) go
        # through the normal response path with a tiny app in place of the user's.
        self.refused = refused = refusal_status(request, scope, state)
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
                send_file = getattr(port, "send_file", None)
                size = os.fstat(file.fileno()).st_size
                try:
                    sent = send_file is not None and await send_file(file.fileno(), size)
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

        The head is framed now and written without this task waiting for it: HTTP/1.1's
        port has ``send_soon`` (a helper task writes it, and the next write goes after
        it); a multiplexed stream frames at once and its connection's writer sends, so
        the awaitable ``send_events`` returns only waits for buffer space, which the
        app's next ``send()`` waits for anyway.
        """
        port = self.port
        head = self.cycle.held_head
        if head is None or port.gone:
            return
        try:
            send_soon = getattr(port, "send_soon", None)
            if send_soon is not None:
                send_soon([head])
            else:
                write = port.send_events([head])
                close = getattr(write, "close", None)
                if close is not None:
                    close()  # (a coroutine never started: nothing to wait for)
        except ProtocolError:
            return  # still held: the app's next send() meets the error and answers 500
        self.cycle.release_head()
        self.written = True

    # -- one request -------------------------------------------------------------------------
    async def run(self) -> int:
        """Run the app; returns DONE_NORMALLY, LEAVE_BODY_UNREAD or REFUSED."""
        state = self.state
        app = state.app if not self.refused else refusal_app(self.refused)
        start = time.perf_counter()
        state.in_flight += 1
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
            # The shutdown deadline (or a second Ctrl-C) cut the request: still one line,
            # with the status the client got: the app's if its head went out, else 444
            # (nginx's "connection closed without a response"), as 499 for a client that left.
            status = self.cycle.status if self.written else NO_RESPONSE
            self._done(time.perf_counter() - start, status, cut=True)
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
            state.in_flight -= 1
            state.count_request()
        cycle = self.cycle
        too_large = self.body.too_large
        if too_large and not cycle.started:
            cycle.status = 413
        timed_out = self.body.timed_out
        if timed_out and not cycle.started:
            cycle.status = 408
        # 499 (nginx's "client closed request"): the client left before the response was
        # complete, whatever status the app had chosen (not when a deadline of ours cut it).
        left = cycle.state != DONE and self.port.gone and not self.aborted and not self.cut_by
        self._done(time.perf_counter() - start, 499 if left else cycle.status, cut=left)
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
        self._log_app_error(exc)
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
        self.state.metrics.request_done(
            scope["method"], 0 if cut else status, scope["http_version"], duration,
            self.body.received, self.cycle.bytes_sent,
        )  # fmt: skip
        if access_log.isEnabledFor(20):
            self._log_access(duration, status)

    def _log_access(self, duration: float, status: int) -> None:
        cycle = self.cycle
        atoms = AccessLogAtoms(
            self.scope,
            status or None,
            self.response_headers,
            cycle.bytes_sent,
            duration,
            time.time(),
            self.target,
            complete=cycle.state == DONE and not self.cut_by and not self.port.gone,
        )
        access_log.info(format_access_line(self.state.config.access_log_format, atoms))

    def _log_app_error(self, exc: BaseException) -> None:
        scope = self.scope
        if self.port.gone and _caused_by_disconnect(exc):
            error_log.debug("client went away during %s %s", scope["method"], scope["path"])
            return
        self.state.metrics.app_exception()
        ids = {"request_id": scope.get("request_id")}
        if isinstance(exc, UnexpectedMessage):
            # The traceback points at the app's offending send().
            error_log.error(
                "ASGI protocol error in %s %s: %s",
                scope["method"],
                scope["path"],
                exc,
                exc_info=exc,
                extra=ids,
            )
            return
        report_needs_asyncio(exc)
        error_log.error(
            "Exception in ASGI application (%s %s)",
            scope["method"],
            scope["path"],
            exc_info=exc,
            extra=ids,
        )


@types.coroutine
def drive_app(
    call: Awaitable[None],
    context: contextvars.Context | None,
    runner: RequestRunner | None,
) -> Generator[Any, Any, None]:
    """Await the app's ``call``: each step in ``context`` (None: this task's own), and,
    for a ``runner``, releasing its held response head when the app waits.

    trio runs other tasks only when a task yields to the scheduler, and every wait of the
    app (a sleep, a lock, a read) yields through here. So a yield while the head is still
    held means the app waits on something other than its own next ``send()``, and
    :meth:`RequestRunner.release_head` sends the head. A hello response (start, then body,
    back to back) never yields in between: its head still leaves with the body, in one
    write, and an error before the first body still becomes a clean 500. The context is how
    requests that share a connection's task keep their contextvars apart (server/context.py).
    The cost is this frame: one resumption and one ``send()`` per yield of the app (and one
    ``Context.run``), no task switch. A WebSocket (no held head) passes no runner.
    """
    coro: Any = call
    try:
        send = coro.send  # a coroutine (an app's async def): driven as it is
    except AttributeError:  # any other awaitable
        coro = call.__await__()
        send = coro.send
    throw = coro.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                trap = send(value) if context is None else context.run(send, value)
            else:
                thrown, error = error, None
                trap = throw(thrown) if context is None else context.run(throw, thrown)
        except StopIteration:
            return
        if runner is not None and runner.cycle.held_head is not None:
            runner.release_head()
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # trio's Cancelled, KeyboardInterrupt: the app's to see
            value = None
            error = exc


def _caused_by_disconnect(exc: BaseException) -> bool:
    """Whether an app error is just the client leaving, re-raised in the app's words.

    Frameworks catch our ``OSError`` from ``send()`` and raise their own exception
    (Starlette's ``ClientDisconnect``), sometimes inside an exception group.
    """
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


NO_RESPONSE = 444  # the access-log status of a request cut before any response was sent

_REFUSAL_BODIES = {
    404: b"Not Found\n",
    413: b"Payload Too Large\n",
    503: b"Service Unavailable\n",
}


def refusal_status(request: Request, scope: dict[str, Any], state: ServerState) -> int:
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


def refusal_app(status: int) -> Any:
    """A tiny ASGI app that answers ``status``: refusals take the normal response path."""
    body = _REFUSAL_BODIES[status]

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


def _client_text(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


async def refuse_stream(
    port: RequestPort,
    info: ConnectionInfo,
    state: ServerState,
    status: int,
    reason: str | None,
    answered: bool,
) -> None:
    """``RequestPort.refuse`` for one stream of a multiplexed connection (HTTP/2, HTTP/3):
    one log line, then a short plain-text answer unless the stream is gone or answered."""
    if reason is not None:
        error_log.info("%s %s: %s", info.client_text, status, reason)
    if answered:
        return
    headers, body = plain_error(status, state.default_headers())
    try:
        await port.send_events([Response(status, headers), Data(body), EndData()])
    except ClientDisconnected:
        pass

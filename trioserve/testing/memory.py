"""An httpx transport that runs requests through trioserve's own HTTP code, in memory.

``httpx.ASGITransport`` calls the app directly: it buffers the whole response, never runs
lifespan, and builds its own scope. This transport instead opens an in-memory stream pair per
connection and runs the real server's entry point for an accepted connection
(:func:`~trioserve.server.connection.handle_stream`) on the server end, with an h11 client on
the other. So the app sees exactly the scope, framing, keep-alive, timeouts and disconnects
the real server gives it, and the test sees bytes as they are sent. No sockets and no
threads: everything runs in the test's trio run, so it works under
``trio.testing.MockClock(autojump_threshold=0)`` and time-outs cost no wall-clock time.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any

import h11
import httpx
import trio
import trio.testing

from ..config import Config
from ..server.connection import handle_stream
from ..server.lifecycle import running
from ..server.state import ServerState
from ..server.transport import ConnectionInfo
from .failures import AppErrors, connection_errors
from .live import make_test_config
from .memory_h2 import H2Client

__all__ = ["InMemoryTransport", "open_memory_client"]

_READ_SIZE = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Key = tuple[str, str, int]


class _Connection:
    """The client end of one in-memory connection, speaking HTTP/1.1 with h11."""

    def __init__(self, stream: trio.abc.Stream, key: Key) -> None:
        self.stream = stream
        self.key = key
        self.h11 = h11.Connection(h11.CLIENT)
        self.server_done = trio.Event()
        # Exceptions the app raised on this connection, appended by the recording wrapper.
        self.app_errors: list[BaseException] = []
        self.closed = False
        self.reused = False

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self, timeout: float | None) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                if timeout is None:
                    data = await self.stream.receive_some(_READ_SIZE)
                else:
                    with trio.fail_after(timeout):
                        data = await self.stream.receive_some(_READ_SIZE)
            except trio.TooSlowError:
                raise httpx.ReadTimeout(f"no response data within {timeout}s") from None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.h11.receive_data(bytes(data))

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await trio.aclose_forcefully(self.stream)


class _ResponseStream(httpx.AsyncByteStream):
    """Yields body bytes as they arrive; closing early is a client disconnect."""

    def __init__(
        self, conn: _Connection, transport: InMemoryTransport, timeout: float | None
    ) -> None:
        self._conn = conn
        self._transport = transport
        self._timeout = timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while not self._done:
            try:
                event = await conn.next_event(self._timeout)
            except httpx.RemoteProtocolError as exc:
                self._done = True
                await conn.close()
                self._transport._raise_app_error(conn, exc)
                raise
            if type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                self._done = True
                await self._transport._release(conn)
            else:  # ConnectionClosed before the end: h11 raised already for framed bodies
                self._done = True
                await conn.close()
                lost = httpx.RemoteProtocolError("server closed the connection mid-response")
                self._transport._raise_app_error(conn, lost)
                raise lost

    async def aclose(self) -> None:
        if not self._done:
            # The test stopped reading: hang up, as a browser closing a tab would. The
            # server sees EOF, and the app gets http.disconnect.
            self._done = True
            await self._conn.close()


class InMemoryTransport(httpx.AsyncBaseTransport):
    """Serve ``app`` with trioserve's HTTP/1.1 code over in-memory streams.

    Use it as an async context manager, usually through the client:
    ``async with httpx.AsyncClient(transport=InMemoryTransport(app), base_url=...)``.
    Entering runs the app's lifespan startup (a failure raises
    :class:`~trioserve.errors.LifespanFailure`), leaving hangs up every connection and runs
    lifespan shutdown, once for the client's whole life, as a real server would.

    With ``http2=True`` requests go over HTTP/2 (prior knowledge, one multiplexed connection
    per origin, httpcore's HTTP/2 client), served by trioserve's HTTP/2 code.

    Options are config keys, as for :func:`~trioserve.testing.open_server`. Connections are
    kept alive and reused like a real client's; ``connections_opened`` counts them, so a test
    can see the server closing idle ones after ``keep_alive_timeout``.

    With ``raise_app_exceptions`` (the default), an exception the app raises is raised from
    the request it broke (instead of returning the 500 the server sent, or a protocol error if
    the response had started), and any not raised that way are raised on exit.
    """

    def __init__(
        self,
        app: Any,
        *,
        config: Config | None = None,
        raise_app_exceptions: bool = True,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        http2: bool = False,
        **options: Any,
    ) -> None:
        self.config = make_test_config(config, dict(options))
        self.raise_app_exceptions = raise_app_exceptions
        self.errors = AppErrors()
        self.app = self.errors.wrap(app)
        self.connections_opened = 0
        self._client_host = client[0]
        self._client_ports = itertools.count(client[1])
        self._state: ServerState | None = None
        self._nursery: trio.Nursery | None = None
        self._idle: dict[Key, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._lifecycle: AbstractAsyncContextManager[None] | None = None
        self.http2 = http2
        self._h2: dict[Key, tuple[H2Client, _Connection]] = {}

    # -- life --------------------------------------------------------------------------------
    async def __aenter__(self) -> InMemoryTransport:
        if self._lifecycle is not None:
            raise RuntimeError("this InMemoryTransport is already running")
        lifecycle = self._run()
        await lifecycle.__aenter__()  # on failure (lifespan startup) it can be entered again
        self._lifecycle = lifecycle
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if self._lifecycle is None:
            return
        lifecycle, self._lifecycle = self._lifecycle, None
        await lifecycle.__aexit__(exc_type, exc_value, traceback)
        if self.raise_app_exceptions:
            self.errors.raise_unreported(exc_value)

    async def aclose(self) -> None:
        await self.__aexit__()

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        # The real server's start-up and shutdown (lifespan, metrics, Alt-Svc, request
        # limits), with in-memory connections in place of listeners.
        failure: BaseException | None = None
        trigger = trio.Event()  # set at max_requests: the server drains, as serve() does
        async with running(self.app, self.config, trigger=trigger) as state:
            # Exceptions leave after the nursery, so trio does not wrap them in a group.
            async with trio.open_nursery() as connections:
                self._state, self._nursery = state, connections
                state.metrics.set_lifespan("serving")
                connections.start_soon(_drain_on, trigger, state)
                try:
                    yield
                except BaseException as exc:
                    failure = exc
                    connections.cancel_scope.cancel()
                finally:
                    trigger.set()  # (ends _drain_on)
                    await self._hang_up(state, connections)
            if failure is not None:
                raise failure  # (lifespan shutdown still runs, as in serve())

    @property
    def state(self) -> ServerState | None:
        """The server's state (its ``metrics``, counts, ...); None before it started."""
        return self._state

    async def _hang_up(self, state: ServerState, connections: trio.Nursery) -> None:
        """The client is done: close what it still holds, as a real server's shutdown would."""
        self._nursery = None
        state.begin_shutdown()
        for conn in list(self._open):
            await conn.close()
        self._idle.clear()
        self._h2.clear()
        connections.cancel_scope.deadline = trio.current_time() + self.config.graceful_timeout

    # -- connections -------------------------------------------------------------------------
    async def open_stream(
        self, scheme: str = "http", host: str = "testserver", port: int | None = None
    ) -> trio.abc.Stream:
        """A new connection to the app: the client end of a stream pair (for WebSockets)."""
        return (await self._connect((scheme, host, port or _DEFAULT_PORTS[scheme]))).stream

    async def _connect(self, key: Key) -> _Connection:
        nursery, state = self._nursery, self._state
        if nursery is None or state is None:
            raise RuntimeError(
                "InMemoryTransport is not running: use it as `async with "
                "httpx.AsyncClient(transport=InMemoryTransport(app)) as client:` so the "
                "app's lifespan runs around the client"
            )
        if state.shutting_down:  # (max_requests reached): a real server stops accepting
            raise httpx.ConnectError("the server is shutting down")
        client_end, server_end = trio.testing.memory_stream_pair()
        conn = _Connection(client_end, key)
        scheme, host, port = key
        info = ConnectionInfo(
            client=(self._client_host, next(self._client_ports)),
            server=(host, port),
            scheme="https" if scheme in ("https", "wss") else "http",
        )
        self.connections_opened += 1
        self._open.add(conn)
        nursery.start_soon(self._serve_connection, server_end, state, info, conn, nursery)
        return conn

    async def _serve_connection(
        self,
        stream: trio.abc.Stream,
        state: ServerState,
        info: ConnectionInfo,
        conn: _Connection,
        nursery: trio.Nursery,
    ) -> None:
        connection_errors.set(conn.app_errors)
        try:
            # The real server's entry point; a server bug is also recorded for the test.
            await handle_stream(stream, state, info, nursery, on_error=self.errors.record)
        finally:
            conn.server_done.set()
            self._open.discard(conn)

    def _take_idle(self, key: Key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.server_done.is_set() and not conn.closed:
                conn.reused = True
                return conn
        return None

    async def _release(self, conn: _Connection) -> None:
        """The response ended: keep the connection for the next request if both sides can."""
        h = conn.h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE and self._nursery is not None:
            h.start_next_cycle()
            self._idle.setdefault(conn.key, []).append(conn)
        else:
            await conn.close()

    def _raise_app_error(self, conn: _Connection, cause: BaseException | None = None) -> None:
        """Raise the app's exception from this connection, if there is one to raise."""
        if not self.raise_app_exceptions:
            return
        for exc in conn.app_errors:
            if exc in self.errors.unreported():
                self.errors.mark_reported(exc)
                conn.app_errors.clear()
                raise exc from cause

    # -- requests ----------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        key: Key = (scheme, url.host, url.port or _DEFAULT_PORTS.get(scheme, 80))
        if self.http2:
            return await self._h2_request(key, request)
        timeout = request.extensions.get("timeout", {}).get("read")
        conn = self._take_idle(key)
        if conn is not None and isinstance(request.stream, httpx.ByteStream):
            try:
                return await self._exchange(conn, request, timeout)
            except _StaleConnection:
                pass  # the server closed it while idle: retry once on a new connection
        elif conn is not None:
            await conn.close()
        conn = await self._connect(key)
        try:
            return await self._exchange(conn, request, timeout)
        except _StaleConnection:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response."
            ) from None

    async def _h2_request(self, key: Key, request: httpx.Request) -> httpx.Response:
        entry = self._h2.get(key)
        if entry is None or not entry[0].usable() or entry[1].server_done.is_set():
            conn = await self._connect(key)
            entry = self._h2[key] = (H2Client(conn.stream, *key), conn)
        client, conn = entry
        try:
            response = await client.request(request)
        except httpx.RemoteProtocolError as exc:
            self._raise_app_error(conn, exc)
            raise
        if response.status_code >= 500:
            self._raise_app_error(conn)
        return response

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, timeout: float | None
    ) -> httpx.Response:
        try:
            head = await self._send_request(conn, request, timeout)
        except BaseException:
            await conn.close()
            raise
        if head.status_code >= 500:
            self._raise_app_error(conn)
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=_ResponseStream(conn, self, timeout),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(head.reason)},
            request=request,
        )

    async def _send_request(
        self, conn: _Connection, request: httpx.Request, timeout: float | None
    ) -> h11.Response:
        target = request.url.raw_path
        try:
            await conn.send(
                h11.Request(method=request.method, target=target, headers=request.headers.raw)
            )
            assert isinstance(request.stream, httpx.AsyncByteStream)
            async for chunk in request.stream:
                if chunk:
                    await conn.send(h11.Data(data=chunk))
            await conn.send(h11.EndOfMessage())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The server stopped reading (an early answer, or it closed): read what it said.
            pass
        while True:
            event = await conn.next_event(timeout)
            if type(event) is h11.Response:
                return event
            if type(event) is h11.InformationalResponse:
                continue
            # ConnectionClosed before any response.
            await conn.close()
            self._raise_app_error(conn)
            if conn.reused:
                raise _StaleConnection
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before it saw the request."""


@asynccontextmanager
async def open_memory_client(
    app: Any, *, base_url: str = "http://testserver", **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on an :class:`InMemoryTransport`; lifespan runs around it.

    ``options`` go to the transport (config keys, ``raise_app_exceptions``); pass client
    options such as ``timeout`` by building the client yourself.
    """
    transport = InMemoryTransport(app, **options)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


async def _drain_on(trigger: trio.Event, state: ServerState) -> None:
    """What serve() does when ``max_requests`` sets its trigger: stop taking connections
    and drain (the transport's own end at exit does the rest)."""
    await trigger.wait()
    state.begin_shutdown()

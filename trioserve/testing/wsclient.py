"""A small WebSocket client for tests: wsproto over a trio stream (TCP or in memory).

The same client talks to a live server (a ``ws://`` URL or a
:class:`~trioserve.testing.LiveServer`) and to an
:class:`~trioserve.testing.InMemoryTransport`, so one test can run both ways. A refused
handshake is an exception carrying the server's status, headers and body; a close from the
server is an exception carrying its code and reason, so a test asserts on them directly.
"""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate

__all__ = ["WebSocketClosed", "WebSocketDenied", "WebSocketSession", "ws_connect"]

_READ_SIZE = 64 * 1024
_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


class WebSocketDenied(Exception):
    """The server answered the handshake with an HTTP response instead of accepting."""

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"WebSocket handshake denied with HTTP {status_code}: {body[:200]!r}")
        self.status_code = status_code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as latin-1."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None


class WebSocketClosed(Exception):
    """The connection is closed; ``code`` and ``reason`` are what the server sent."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


class WebSocketSession:
    """One open WebSocket. Made by :func:`ws_connect`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSConnection,
        accept: AcceptConnection,
        pending: deque[Event],
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._pending = pending
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        self._send_lock = trio.Lock()
        self.subprotocol: str | None = accept.subprotocol
        self.response_headers: list[tuple[bytes, bytes]] = list(accept.extra_headers)
        self.extensions: list[Extension] = list(accept.extensions)
        self.close_code: int | None = None
        self.close_reason: str = ""

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    # -- sending ---------------------------------------------------------------------------
    async def _send(self, event: Event) -> None:
        if self.closed:
            raise WebSocketClosed(self.close_code or 1006, self.close_reason)
        async with self._send_lock:
            try:
                await self._stream.send_all(self._ws.send(event))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._gone()
                raise WebSocketClosed(1006, "connection lost") from None

    async def send_text(self, data: str) -> None:
        await self._send(TextMessage(data=data))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(BytesMessage(data=data))

    async def send_json(self, data: Any) -> None:
        await self.send_text(json.dumps(data))

    async def ping(self, payload: bytes = b"") -> None:
        await self._send(Ping(payload))

    # -- receiving -------------------------------------------------------------------------
    async def receive(self) -> str | bytes:
        """The next whole message. Raises :class:`WebSocketClosed` once the peer closed."""
        while True:
            if not self._pending:
                if self.closed:
                    raise WebSocketClosed(self.close_code or 1006, self.close_reason)
                await self._fill()
                continue
            event = self._pending.popleft()
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return text
            elif isinstance(event, BytesMessage):
                self._bytes.append(bytes(event.data))
                if event.message_finished:
                    data, self._bytes = b"".join(self._bytes), []
                    return data
            elif isinstance(event, Ping):
                await self._answer_ping(event)
            elif isinstance(event, CloseConnection):
                await self._on_close(event)

    async def receive_text(self) -> str:
        message = await self.receive()
        if not isinstance(message, str):
            raise TypeError(f"expected a text message, got bytes: {message[:100]!r}")
        return message

    async def receive_bytes(self) -> bytes:
        message = await self.receive()
        if not isinstance(message, bytes):
            raise TypeError(f"expected a bytes message, got text: {message[:100]!r}")
        return message

    async def receive_json(self) -> Any:
        return json.loads(await self.receive())

    async def _fill(self) -> None:
        try:
            data = await self._stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self._gone()
            return
        self._ws.receive_data(bytes(data))
        self._pending.extend(self._ws.events())

    async def _answer_ping(self, ping: Ping) -> None:
        # Quietly: if the peer is gone, its close frame may still be waiting to be read.
        if self.closed or self._ws.state.name != "OPEN":
            return
        try:
            async with self._send_lock:
                await self._stream.send_all(self._ws.send(ping.response()))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _on_close(self, event: CloseConnection) -> None:
        self.close_code = event.code
        self.close_reason = event.reason or ""
        if self._ws.state.name == "REMOTE_CLOSING":
            try:
                async with self._send_lock:
                    await self._stream.send_all(self._ws.send(event.response()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(self._stream)

    def _gone(self) -> None:
        if self.close_code is None:
            self.close_code = 1006
            self.close_reason = "connection closed without a close frame"

    # -- closing ---------------------------------------------------------------------------
    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        """Send a close frame and wait (up to ``timeout``) for the server's answer."""
        if not self.closed:
            try:
                async with self._send_lock:
                    await self._stream.send_all(
                        self._ws.send(CloseConnection(code=code, reason=reason or None))
                    )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._gone()
            with trio.move_on_after(timeout):
                while not self.closed:
                    try:
                        await self.receive()
                    except WebSocketClosed:
                        break
        await trio.aclose_forcefully(self._stream)


async def _handshake(
    stream: trio.abc.Stream,
    host: str,
    target: str,
    subprotocols: Sequence[str],
    headers: Sequence[tuple[str | bytes, str | bytes]],
    compress: bool,
) -> WebSocketSession:
    ws = WSConnection(ConnectionType.CLIENT)
    extra = [(_b(k), _b(v)) for k, v in headers]
    extensions: list[Extension] = [PerMessageDeflate()] if compress else []
    request = Request(
        host=host,
        target=target,
        subprotocols=list(subprotocols),
        extra_headers=extra,
        extensions=extensions,
    )
    await stream.send_all(ws.send(request))
    pending: deque[Event] = deque()
    reject: RejectConnection | None = None
    body: list[bytes] = []
    while True:
        while pending:
            event = pending.popleft()
            if isinstance(event, AcceptConnection):
                return WebSocketSession(stream, ws, event, pending)
            if isinstance(event, RejectConnection):
                reject = event
                if not event.has_body:
                    raise WebSocketDenied(event.status_code, list(event.headers), b"")
            elif isinstance(event, RejectData):
                body.append(bytes(event.data))
                if event.body_finished and reject is not None:
                    raise WebSocketDenied(reject.status_code, list(reject.headers), b"".join(body))
        try:
            data = await stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            if reject is not None:
                raise WebSocketDenied(reject.status_code, list(reject.headers), b"".join(body))
            raise WebSocketClosed(1006, "connection closed during the handshake")
        ws.receive_data(bytes(data))
        pending.extend(ws.events())


def _b(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def _join(base_path: str, path: str) -> str:
    if not path:
        return base_path or "/"
    if not base_path or base_path == "/":
        return path if path.startswith("/") else "/" + path
    return base_path.rstrip("/") + "/" + path.lstrip("/")


async def _open_target(
    target: Any, path: str, ssl_context: ssl.SSLContext | None
) -> tuple[trio.abc.Stream, str, str]:
    """Resolve what ``ws_connect`` was given into (stream, Host header, request target)."""
    memory = _memory_transport_class()
    client_transport = getattr(target, "_transport", None)  # an httpx.AsyncClient's
    transport: Any = None
    if memory is not None and isinstance(client_transport, memory):
        transport, url = client_transport, str(target.base_url)
    elif memory is not None and isinstance(target, memory):
        transport, url = target, "http://testserver"
    elif client_transport is not None:
        url = str(target.base_url)
    else:
        url = target if isinstance(target, str) else target.url
    if transport is not None:
        parts = urlsplit(url)
        host = parts.hostname or "testserver"
        stream = await transport.open_stream(parts.scheme or "http", host, parts.port)
        return stream, parts.netloc or host, _join(parts.path, path)
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    request_target = _join(parts.path, path) + (f"?{parts.query}" if parts.query else "")
    tcp = await trio.open_tcp_stream(host, port)
    if not secure:
        return tcp, parts.netloc, request_target
    tls = trio.SSLStream(tcp, ssl_context or ssl.create_default_context(), server_hostname=host)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls, parts.netloc, request_target


def _memory_transport_class() -> type[Any] | None:
    try:
        from .memory import InMemoryTransport  # needs httpx, which only in-memory use needs
    except ImportError:  # pragma: no cover - httpx not installed
        return None
    return InMemoryTransport


@asynccontextmanager
async def ws_connect(
    target: Any,
    path: str = "",
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str | bytes, str | bytes]] = (),
    compress: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketSession]:
    """Open a WebSocket to ``target`` + ``path`` for the ``async with`` block.

    ``target`` is a ``ws://``/``wss://``/``http://`` URL, a
    :class:`~trioserve.testing.LiveServer`, an :class:`~trioserve.testing.InMemoryTransport`,
    or an ``httpx.AsyncClient`` (its in-memory transport, else its ``base_url``). Raises
    :class:`WebSocketDenied` if the server refuses the handshake. Leaving the block closes
    with code 1000 unless the connection is already closed.
    """
    stream, host, request_target = await _open_target(target, path, ssl_context)
    try:
        session = await _handshake(stream, host, request_target, subprotocols, headers, compress)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    try:
        yield session
    finally:
        with trio.CancelScope(shield=True):
            await session.close(timeout=1.0)

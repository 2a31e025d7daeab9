"""The ASGI side of a WebSocket: the upgrade check, the scope, and a session object that
turns the app's ``websocket.*`` messages into bytes and the peer's frames into messages.

One object, :class:`WebSocketSession`, owns the whole life of a WebSocket:

- before ``websocket.accept`` it answers through the HTTP/1.1 protocol object that parsed
  the upgrade request (denial responses, 403, 500), so h11 frames those responses;
- ``websocket.accept`` writes the 101 and creates exactly one
  ``wsproto.Connection(SERVER, extensions, trailing_data)`` fed with the bytes h11 had
  already buffered after the request, so nothing is parsed twice or lost;
- afterwards frames go through wsproto, except plain data frames when no extension is
  negotiated, which :mod:`.wsframes` parses and builds directly.

Replies the protocol owes the peer (pongs, the close echo, a close for a protocol error or
an oversized message) collect in an outbound buffer the I/O layer flushes, so several of
them leave in one write.

The same session serves a WebSocket over an HTTP/2 stream (RFC 8441) or an HTTP/3 stream
(RFC 9220): the handshake is an extended CONNECT, and the HTTP side is the stream's
(``HandshakeAnswer``). The handshake checks and the scope live in :mod:`.wshandshake`
(re-exported here).
"""

from __future__ import annotations

import sys
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, generate_accept_token

from .asgi import HTTPResponseCycle, UnexpectedMessage
from .events import Data, EndData, Headers, Request, Response
from .headers import InvalidHeader, validate_response_headers
from .wsdeflate import negotiate_deflate
from .wsframes import lighten, message_bytes, server_frame, simple_frames, wsproto_idle
from .wshandshake import (
    EXTENDED_CONNECT_VERSIONS,
    HandshakeAnswer,
    HandshakeError,
    build_websocket_scope,
    check_handshake,
    wants_websocket,
    wants_websocket_h2,
)

__all__ = [
    "CLOSED",
    "DENYING",
    "HANDSHAKE",
    "OPEN",
    "HandshakeAnswer",
    "HandshakeError",
    "SessionClosed",
    "WebSocketSession",
    "build_websocket_scope",
    "check_handshake",
    "message_bytes",
    "negotiate_deflate",
    "wants_websocket",
    "wants_websocket_h2",
]

# Session states.
HANDSHAKE, DENYING, OPEN, CLOSED = "handshake", "denying", "open", "closed"

# Headers the server writes itself in the 101; an app's copy of them is dropped.
_HANDSHAKE_HEADERS = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
        b"transfer-encoding",
    }
)


class SessionClosed(Exception):
    """The WebSocket is closed (by either side); the I/O layer raises ClientDisconnected."""


# No limit on what app_messages() parses.
_UNLIMITED = sys.maxsize


def _close_code(message: Any) -> tuple[int, str]:
    code = message.get("code", 1000)
    reason = message.get("reason") or ""
    if code is None:
        code = 1000
    if type(code) is not int or not 1000 <= code <= 4999:
        raise UnexpectedMessage(f"invalid WebSocket close code {code!r}")
    if not isinstance(reason, str):
        raise UnexpectedMessage(f"close reason must be str, got {type(reason).__name__}")
    return code, reason


def _disconnect(code: int, reason: str = "") -> dict[str, Any]:
    return {"type": "websocket.disconnect", "code": int(code), "reason": reason}


class WebSocketSession:
    """One WebSocket from the upgrade request to the end: app messages in, bytes out;
    bytes in, app messages out. No I/O, no clock."""

    __slots__ = (
        "_cycle",
        "_key",
        "_max_size",
        "_out",
        "_parts",
        "_plain",
        "_ready",
        "_size",
        "_text",
        "awaiting_pong",
        "backlog",
        "bytes_sent",
        "close_sent",
        "conn",
        "deflate",
        "disconnect",
        "proto",
        "request",
        "state",
        "status",
    )

    def __init__(
        self,
        request: Request,
        proto: HandshakeAnswer,
        *,
        key: bytes,
        max_message_size: int,
        per_message_deflate: bool = True,
    ) -> None:
        # The request and the HTTP/1.1 side (for a refusal or a denial response): dropped
        # once accepted (an idle WebSocket need not keep them, nor h11's state and buffers).
        self.request: Request | None = request
        self.proto: HandshakeAnswer | None = proto
        self._key = key
        self._max_size = max_message_size
        self.deflate = per_message_deflate
        self.state = HANDSHAKE
        self.conn: Connection | None = None
        self._cycle: HTTPResponseCycle | None = None
        self.status: int | None = None  # what the access log reports: 101, 403, ...
        self.bytes_sent = 0
        self.close_sent = False
        self.disconnect: dict[str, Any] | None = None  # set once: the final app message
        self.awaiting_pong: bytes | None = None
        # app_messages() stopped at its limit: frames may wait unparsed in wsproto's buffer
        # (parse them before reading more; see app_messages).
        self.backlog = False
        self._out = b""  # (bytes: an idle WebSocket holds no buffer of its own)
        # No extension negotiated: data frames are plain and may skip wsproto (see
        # simple_frames / server_frame).
        self._plain = False
        self._ready: list[dict[str, Any]] | None = None  # messages parsed without wsproto
        self._parts: list[Any] | None = None  # a fragmented message's pieces so far
        self._size = 0
        self._text = False

    # -- app -> peer ------------------------------------------------------------------------
    def app_message(self, message: Any, default_headers: Headers | None = None) -> bytes:
        """Check one message from the app; return the bytes to write (maybe empty).

        Raises :class:`UnexpectedMessage` for a wrong message and :class:`SessionClosed`
        for ``websocket.send`` once the WebSocket is closed.
        """
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise UnexpectedMessage(f"ASGI message without a type: {message!r}") from None
        state = self.state
        if state is OPEN:
            if kind == "websocket.send":
                return self._send_data(message)
            if kind == "websocket.close":
                code, reason = _close_code(message)
                return self.close(code, reason)
        elif state is HANDSHAKE:
            if kind == "websocket.accept":
                return self._accept(message, default_headers or [])
            if kind == "websocket.close":
                _close_code(message)
                return self.refuse(403, default_headers)
            if kind == "websocket.http.response.start":
                self._cycle = HTTPResponseCycle(
                    is_head=False, default_headers=list(default_headers or [])
                )
                self.state = DENYING
                self._http().close_after_response()
                return self._deny({**message, "type": "http.response.start"})
        elif state is DENYING:
            if kind == "websocket.http.response.body":
                return self._deny({**message, "type": "http.response.body"})
        else:  # CLOSED
            if kind == "websocket.close":
                return b""  # closing twice (or after the peer left) is harmless
            if kind == "websocket.send":
                raise SessionClosed("WebSocket is closed")
        raise UnexpectedMessage(f"unexpected {kind!r} while the WebSocket is {state}")

    def _send_data(self, message: Any) -> bytes:
        data = message.get("bytes")
        text = message.get("text")
        if (data is None) == (text is None):
            raise UnexpectedMessage("websocket.send needs exactly one of 'bytes' or 'text'")
        if text is not None:
            if type(text) is not str:
                raise UnexpectedMessage(f"'text' must be str, got {type(text).__name__}")
            self.bytes_sent += len(text)
        else:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise UnexpectedMessage(f"'bytes' must be bytes, got {type(data).__name__}")
            self.bytes_sent += len(data)
        conn = self.conn
        assert conn is not None
        if self._plain and conn.state is ConnectionState.OPEN:
            # What wsproto would write for a finished message without extensions (it keeps
            # no state for one: only a message sent in parts would).
            if text is not None:
                return server_frame(0x81, text.encode("utf-8"))
            return server_frame(0x82, bytes(data))
        event: Message[Any] = (
            TextMessage(data=text) if text is not None else BytesMessage(data=bytes(data))
        )
        try:
            return conn.send(event)
        except LocalProtocolError:  # pragma: no cover - state is OPEN here
            raise SessionClosed("WebSocket is closed") from None

    def _accept(self, message: Any, default_headers: Headers) -> bytes:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            raise UnexpectedMessage("'subprotocol' must be a str or None")
        try:
            extra = validate_response_headers(message.get("headers", []))
        except InvalidHeader as exc:
            raise UnexpectedMessage(str(exc)) from None
        headers: Headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(self._key)),
        ]
        extensions: list[Any] = []
        request = self.request
        assert request is not None  # (state is HANDSHAKE)
        if self.deflate:
            negotiated = negotiate_deflate(request.headers, self._max_size)
            if negotiated is not None:
                extensions.append(negotiated[0])
                headers.append((b"sec-websocket-extensions", negotiated[1]))
        if subprotocol:
            headers.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
        present = {name for name, _ in headers}
        for name, value in extra:
            if name not in _HANDSHAKE_HEADERS:
                headers.append((name, value))
                present.add(name)
        headers.extend(h for h in default_headers if h[0] not in present)
        if request.http_version in EXTENDED_CONNECT_VERSIONS:
            # RFC 8441 5 / RFC 9220 3: a 200 on the stream, without the HTTP/1.1 handshake
            # fields.
            out = self._http().send(Response(200, headers[3:]))
            head = [out]
            self.status = 200
        else:
            head = [b"HTTP/1.1 101 Switching Protocols\r\n"]
            head.extend(name + b": " + value + b"\r\n" for name, value in headers)
            head.append(b"\r\n")
            self.status = 101
        self.conn = lighten(
            Connection(
                ConnectionType.SERVER, extensions, trailing_data=self._http().take_trailing_data()
            )
        )
        self._plain = not extensions
        self.proto = self.request = None
        self._key = b""
        self.state = OPEN
        return b"".join(head)

    def _deny(self, message: dict[str, Any]) -> bytes:
        cycle = self._cycle
        assert cycle is not None
        events = cycle.on_message(message)
        if cycle.status and self.status is None:
            self.status = cycle.status
        proto = self._http()
        out = b"".join([proto.send(event) for event in events])
        self.bytes_sent = cycle.bytes_sent
        if cycle.state == 2:  # DONE
            self.state = CLOSED
        return out

    def refuse(self, status: int, default_headers: Headers | None = None) -> bytes:
        """A complete plain-text HTTP answer instead of the upgrade (403, 500)."""
        self.state = CLOSED
        self.status = status
        body = b"Forbidden\n" if status == 403 else b"Internal Server Error\n"
        headers = [
            *(default_headers or []),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        proto = self._http()
        proto.close_after_response()
        return (
            proto.send(Response(status, headers)) + proto.send(Data(body)) + proto.send(EndData())
        )

    def _http(self) -> HandshakeAnswer:
        proto = self.proto
        if proto is None:  # pragma: no cover - only HTTP answers use it, all before accept
            raise SessionClosed("the WebSocket was accepted: no HTTP answer any more")
        return proto

    @property
    def handshake_pending(self) -> bool:
        """Nothing has been answered yet: a failure can still become an HTTP 500."""
        return self.state is HANDSHAKE

    @property
    def denial_incomplete(self) -> bool:
        return self.state is DENYING

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """Server-side close (app, shutdown 1001, error 1011); b"" if already closing."""
        conn = self.conn
        if conn is None or self.close_sent or conn.state is not ConnectionState.OPEN:
            if self.state is OPEN and conn is not None and conn.state is not ConnectionState.OPEN:
                self.state = CLOSED
            return b""
        self.close_sent = True
        self.state = CLOSED
        return conn.send(CloseConnection(code=code, reason=reason))

    def ping(self, payload: bytes) -> bytes:
        """A keep-alive ping; the matching pong clears :attr:`awaiting_pong`."""
        conn = self.conn
        if conn is None or conn.state is not ConnectionState.OPEN:
            return b""
        self.awaiting_pong = payload
        return conn.send(Ping(payload=payload))

    def connection_lost(self) -> dict[str, Any] | None:
        """The peer vanished (or stopped answering): the one disconnect (1006), if not sent."""
        self.state = CLOSED
        if self.disconnect is not None:
            return None
        self.disconnect = _disconnect(1006)
        return self.disconnect

    # -- peer -> app ------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | None, limit: int = _UNLIMITED) -> None:
        """Feed bytes from the peer; ``None`` means the connection ended.

        At most ``limit`` plain messages are parsed here; the rest waits in wsproto's
        buffer for :meth:`app_messages`, which applies the same limit.
        """
        conn = self.conn
        if conn is None or self.disconnect is not None:
            return
        if conn.state is ConnectionState.CLOSED:
            return
        if data and self._plain and conn.state is ConnectionState.OPEN and wsproto_idle(conn):
            ready = self._ready
            if ready is None:
                ready = self._ready = []
            used = simple_frames(data, self._max_size, ready, limit)
            if used == len(data):
                return
            if used:
                data = data[used:]
        conn.receive_data(data)  # type: ignore[arg-type]

    def data_to_send(self) -> bytes:
        """Replies the protocol owes the peer (pongs, close frames), in one piece."""
        out = self._out
        if out:
            self._out = b""
        return out

    def app_messages(
        self, limit: int = _UNLIMITED, byte_limit: int = _UNLIMITED
    ) -> list[dict[str, Any]]:
        """Turn what was received into ASGI messages; the last one may be the disconnect.

        Parsing stops once ``limit`` messages or ``byte_limit`` bytes of payload (inflated:
        what the app will hold) are out; the frames not parsed yet stay compressed in
        wsproto's buffer and :attr:`backlog` is set, so the caller parses them (calling
        this again) before it reads more. That is what bounds a read-ahead: one read may
        carry many deflated messages, each up to ``websocket_max_message_size`` inflated.
        """
        conn = self.conn
        self.backlog = False
        if conn is None or self.disconnect is not None:
            return []
        messages = self._ready
        if messages:  # they came before anything wsproto has
            self._ready = None
        else:
            messages = []
        size = 0
        if len(messages) >= limit or byte_limit <= 0:  # no room: all of it waits
            self.backlog = True
            return messages
        for event in conn.events():
            cls = type(event)
            if cls is TextMessage or cls is BytesMessage:
                message = self._on_data(event)  # type: ignore[arg-type]
                if message is not None:
                    messages.append(message)
                    if self.disconnect is not None:
                        break
                    size += message_bytes(message)
                    if len(messages) >= limit or size >= byte_limit:
                        self.backlog = True
                        break
            elif cls is Ping:
                if conn.state is ConnectionState.OPEN:
                    self._out += conn.send(event.response())  # type: ignore[attr-defined]
            elif cls is Pong:
                if event.payload == self.awaiting_pong:  # type: ignore[attr-defined]
                    self.awaiting_pong = None
            elif cls is CloseConnection:
                messages.append(self._on_close(event))  # type: ignore[arg-type]
                break
        return messages

    def _on_close(self, event: CloseConnection) -> dict[str, Any]:
        conn = self.conn
        assert conn is not None
        code, reason = int(event.code), event.reason or ""
        if conn.state is ConnectionState.REMOTE_CLOSING:
            self._out += conn.send(event.response())  # the close echo
        elif conn.state is ConnectionState.OPEN:
            # wsproto reports a protocol error from the peer as a CloseConnection without
            # a state change: we close with its code and stop reading.
            self._out += conn.send(CloseConnection(code=code, reason=reason))
            self.close_sent = True
        self.state = CLOSED
        self.disconnect = _disconnect(code, reason)
        return self.disconnect

    def _on_data(self, event: TextMessage | BytesMessage) -> dict[str, Any] | None:
        data = event.data
        if not self._parts and event.message_finished:  # the common case: one piece
            if len(data) > self._max_size // 4 and self._measure(data, 0) > self._max_size:
                return self._oversize()
            if type(data) is str:
                return {"type": "websocket.receive", "text": data}
            return {"type": "websocket.receive", "bytes": bytes(data)}  # type: ignore[arg-type]
        size = self._measure(data, self._size)
        if size > self._max_size:
            return self._oversize()
        if self._parts is None:
            self._parts = [data]
        else:
            self._parts.append(data)
        self._size = size
        self._text = type(data) is str
        if not event.message_finished:
            return None
        parts, self._parts, self._size = self._parts, None, 0
        if self._text:
            return {"type": "websocket.receive", "text": "".join(parts)}
        return {"type": "websocket.receive", "bytes": b"".join(parts)}

    def _measure(self, data: str | bytes | bytearray, size_so_far: int) -> int:
        """Message size so far in bytes; text is encoded only near the limit (cheap)."""
        size = size_so_far + len(data)
        if size > self._max_size // 4 and type(data) is str:
            size = size_so_far + len(data.encode("utf-8"))
        return size

    def _oversize(self) -> dict[str, Any]:
        self._parts, self._size = None, 0
        conn = self.conn
        assert conn is not None
        if conn.state is ConnectionState.OPEN:
            self._out += conn.send(CloseConnection(code=1009, reason="message too big"))
            self.close_sent = True
        self.state = CLOSED
        self.disconnect = _disconnect(1009, "message too big")
        return self.disconnect

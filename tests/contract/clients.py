"""One small client interface, three real implementations: raw HTTP/1.1 bytes read back with
h11, raw HTTP/2 frames (tests/h2raw.py), and aioquic's HTTP/3 (tests/h3client.py).

A scenario's client script is written once against :class:`Conn`; each implementation sends
exactly what it is told (a malformed target or method included) and turns what the server
answered into the same :class:`Reply`, so the contract compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import h11
import trio
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, Request

from tests.h2raw import RawH2

Fields = list[tuple[bytes, bytes]]


@dataclass
class Req:
    """A request as a scenario writes it; every version sends these bytes as they are."""

    method: bytes = b"GET"
    path: bytes = b"/"
    headers: Fields = field(default_factory=list)
    authority: bytes = b"localhost"
    body: bytes = b""  # sent with the head
    content_length: int | None = None  # declared; defaults to len(body) when there is one
    end: bool = True  # the request ends after ``body``
    # No declared length: chunked on HTTP/1.1, DATA without content-length on HTTP/2 and 3.
    streamed: bool = False

    def length(self) -> int | None:
        if self.streamed:
            return None
        if self.content_length is not None:
            return self.content_length
        return len(self.body) if self.body or self.method in (b"POST", b"PUT") else None


@dataclass
class Reply:
    """What the client got, the same shape for every version."""

    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    informational: list[int] = field(default_factory=list)
    cut: bool = False  # reset or closed before the end of the message
    done: bool = False


class WS(Protocol):
    async def send(self, event: Any) -> None: ...

    async def events(self, timeout: float) -> list[Any]:
        """The next wsproto events; [] once the stream or connection ended."""
        ...


class Conn(Protocol):
    """One client connection. ``start`` returns a handle for the request's stream."""

    async def start(self, req: Req) -> int: ...
    async def send_body(self, handle: int, data: bytes, end: bool = False) -> None: ...
    async def reset(self, handle: int) -> None: ...
    async def head(self, handle: int, timeout: float = 5.0) -> Reply: ...
    async def reply(self, handle: int, timeout: float = 5.0) -> Reply: ...
    async def closed_by_server(self, timeout: float) -> bool: ...
    async def ws_open(self, path: bytes) -> tuple[int | None, WS | None]: ...
    async def aclose(self) -> None: ...


async def _receive(stream: trio.abc.Stream) -> bytes:
    """Bytes, or b"" when the server closed or reset the connection."""
    try:
        return bytes(await stream.receive_some(65536))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


# -- HTTP/1.1 ------------------------------------------------------------------------------
class H1Conn:
    """Raw request bytes out; the response read back by an h11 client."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.parser: h11.Connection | None = None
        self.result = Reply()
        self.chunked = False

    async def start(self, req: Req) -> int:
        lines = [b"%s %s HTTP/1.1" % (req.method, req.path), b"host: " + req.authority]
        lines += [name + b": " + value for name, value in req.headers]
        length = req.length()
        if length is not None:
            lines.append(b"content-length: %d" % length)
        self.chunked = req.streamed
        if req.streamed:
            lines.append(b"transfer-encoding: chunked")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        await self.stream.send_all(head + self._framed(req.body, req.end))
        # h11 reads the response once it believes it sent a request like this one.
        parser = h11.Connection(h11.CLIENT)
        method = b"HEAD" if req.method == b"HEAD" else b"GET"
        parser.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        parser.send(h11.EndOfMessage())
        self.parser, self.result = parser, Reply()
        return 0

    def _framed(self, data: bytes, end: bool) -> bytes:
        if not self.chunked:
            return data
        chunk = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        return chunk + (b"0\r\n\r\n" if end else b"")

    async def send_body(self, handle: int, data: bytes, end: bool = False) -> None:
        try:
            await self.stream.send_all(self._framed(data, end))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server answered and closed: the reply says what it answered

    async def reset(self, handle: int) -> None:
        await trio.aclose_forcefully(self.stream)

    async def _next(self) -> Any:
        assert self.parser is not None
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError:
                return h11.ConnectionClosed()
            if event is not h11.NEED_DATA:
                return event
            self.parser.receive_data(await _receive(self.stream))

    async def _read(self, timeout: float, until_head: bool) -> Reply:
        result = self.result
        with trio.move_on_after(timeout):
            while not result.done and not (until_head and result.status is not None):
                event = await self._next()
                if isinstance(event, h11.InformationalResponse):
                    result.informational.append(event.status_code)
                elif isinstance(event, h11.Response):
                    result.status = event.status_code
                    result.headers = {k.lower(): v for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    result.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    result.trailers = {k.lower(): v for k, v in event.headers}
                    result.done = True
                else:  # closed before the end
                    result.cut = result.done = True
        return result

    async def head(self, handle: int, timeout: float = 5.0) -> Reply:
        return await self._read(timeout, until_head=True)

    async def reply(self, handle: int, timeout: float = 5.0) -> Reply:
        return await self._read(timeout, until_head=False)

    async def closed_by_server(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while await _receive(self.stream):
                pass
            return True
        return False

    async def ws_open(self, path: bytes) -> tuple[int | None, WS | None]:
        ws = WSConnection(ConnectionType.CLIENT)
        await self.stream.send_all(ws.send(Request(host="localhost", target=path.decode())))
        session = H1WS(self.stream, ws)
        events = await session.events(5.0)
        for i, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                session.pending = events[i + 1 :]  # a close may come in the same read
                return 101, session
            if isinstance(event, RejectConnection):
                return event.status_code, None
        return None, None

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class H1WS:
    def __init__(self, stream: trio.abc.Stream, ws: WSConnection) -> None:
        self.stream, self.ws = stream, ws
        self.pending: list[Any] = []

    async def send(self, event: Any) -> None:
        try:
            await self.stream.send_all(self.ws.send(event))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def events(self, timeout: float) -> list[Any]:
        if self.pending:
            events, self.pending = self.pending, []
            return events
        with trio.move_on_after(timeout):
            while True:
                data = await _receive(self.stream)
                self.ws.receive_data(data or None)
                events = list(self.ws.events())
                if events or not data:
                    return events
        return []


# -- HTTP/2 --------------------------------------------------------------------------------
class H2Conn:
    """Raw HTTP/2 frames; every stream's frames are sorted into its own :class:`Reply`."""

    def __init__(self, client: RawH2, scheme: bytes) -> None:
        self.client = client
        self.scheme = scheme
        self.next_id = 1
        self.replies: dict[int, Reply] = {}
        self.ws_data: dict[int, list[bytes | None]] = {}
        self.eof = False
        self.goaway = False

    async def start(self, req: Req) -> int:
        sid, self.next_id = self.next_id, self.next_id + 2
        fields = [
            (b":method", req.method),
            (b":scheme", self.scheme),
            (b":path", req.path),
            (b":authority", req.authority),
            *req.headers,
        ]
        length = req.length()
        if length is not None:
            fields.append((b"content-length", b"%d" % length))
        self.replies[sid] = Reply()
        frames: list[Any] = [self.client.headers(sid, fields, req.end and not req.body)]
        if req.body:
            frames.append(self.client.data(sid, req.body, req.end))
        await self.client.send(*frames)
        return sid

    async def send_body(self, handle: int, data: bytes, end: bool = False) -> None:
        await self._send(self.client.data(handle, data, end))

    async def reset(self, handle: int) -> None:
        await self._send(self.client.rst(handle, 8))

    async def _send(self, *frames: Any) -> None:
        try:
            await self.client.send(*frames)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.eof = True

    async def _pump(self) -> None:
        """Read one frame and file it under its stream."""
        frame = await self.client.frame_or_eof(timeout=3600)
        if frame is None:
            self.eof = True
            for reply in self.replies.values():
                if not reply.done:
                    reply.cut = reply.done = True
            for data in self.ws_data.values():
                data.append(None)
            return
        if isinstance(frame, GoAwayFrame):
            self.goaway = True
        if frame.stream_id not in self.replies:
            return
        reply = self.replies[frame.stream_id]
        if isinstance(frame, HeadersFrame):
            fields = self.client.decode(frame)
            status = int(fields.get(b":status", b"0"))
            if reply.status is None and 100 <= status < 200:
                reply.informational.append(status)
            elif reply.status is None:
                reply.status, reply.headers = status, fields
            else:
                reply.trailers = fields
        elif isinstance(frame, DataFrame):
            reply.body += frame.data
            if frame.stream_id in self.ws_data:
                self.ws_data[frame.stream_id].append(frame.data)
            if frame.data:
                updates = [self.client.window_update(0, len(frame.data))]
                if "END_STREAM" not in frame.flags:
                    updates.append(self.client.window_update(frame.stream_id, len(frame.data)))
                await self._send(*updates)
        elif isinstance(frame, RstStreamFrame):
            reply.cut = reply.done = True
        if "END_STREAM" in frame.flags:
            reply.done = True
        if reply.done and frame.stream_id in self.ws_data:
            self.ws_data[frame.stream_id].append(None)

    async def _until(self, check: Any, timeout: float) -> None:
        with trio.move_on_after(timeout):
            while not check() and not self.eof:
                await self._pump()

    async def head(self, handle: int, timeout: float = 5.0) -> Reply:
        reply = self.replies[handle]
        await self._until(lambda: reply.status is not None or reply.done, timeout)
        return reply

    async def reply(self, handle: int, timeout: float = 5.0) -> Reply:
        reply = self.replies[handle]
        await self._until(lambda: reply.done, timeout)
        return reply

    async def closed_by_server(self, timeout: float) -> bool:
        await self._until(lambda: False, timeout)
        return self.eof

    async def ws_open(self, path: bytes) -> tuple[int | None, WS | None]:
        headers = [(b":protocol", b"websocket"), (b"sec-websocket-version", b"13")]
        sid = await self.start(Req(b"CONNECT", path, headers, end=False))
        self.ws_data[sid] = []
        reply = await self.head(sid)
        if reply.status != 200:
            return reply.status, None
        return 101, StreamWS(self, sid)

    async def ws_chunk(self, sid: int) -> bytes | None:
        """The next DATA payload of a WebSocket stream (None: it ended)."""
        queue = self.ws_data[sid]
        while not queue:
            if self.eof:
                return None
            await self._pump()
        return queue.pop(0)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.client.stream)


class StreamWS:
    """wsproto frames carried in one HTTP/2 or HTTP/3 stream's DATA."""

    def __init__(self, conn: Any, sid: int) -> None:
        self.conn, self.sid = conn, sid
        self.ws = Connection(ConnectionType.CLIENT)

    async def send(self, event: Any) -> None:
        data = self.ws.send(event)
        for pos in range(0, len(data), 16384):
            await self.conn.send_body(self.sid, data[pos : pos + 16384])

    async def events(self, timeout: float) -> list[Any]:
        with trio.move_on_after(timeout):
            while True:
                chunk = await self.conn.ws_chunk(self.sid)
                self.ws.receive_data(chunk)
                events = list(self.ws.events())
                if events or chunk is None:
                    return events
        return []

"""HTTP/1.1 over h11, with the checks h11 leaves to the server.

h11 does the framing and the state machine. It is deliberately lenient in a few places
where a server in front of other servers must not be (request smuggling shapes), so this
module adds, before an event reaches the ASGI layer:

- only HTTP/1.0 and HTTP/1.1 request lines (``HTTP/2.0`` over a TCP text stream is refused);
- origin-form targets, absolute-form http(s) targets, and ``*`` for OPTIONS only;
  authority-form (CONNECT) is refused: an ASGI server does not tunnel;
- strict chunk-size lines (hex digits, then ``;extension`` or CRLF: no ``0 \\r\\n``, no bare CR);
- a request with both Content-Length and Transfer-Encoding is answered, then the
  connection is closed (RFC 9112 6.1: the message may have been meant for a different parser);
- a head larger than the limit gets 431 whether it came in one read or one byte at a time;
- one empty line before a request line is ignored (RFC 9112 2.2), where h11 answers 400.
"""

from __future__ import annotations

from typing import Any

import h11

from .events import (
    NEED_DATA,
    PAUSED,
    BadRequest,
    ConnectionClosed,
    Data,
    EndData,
    Headers,
    InboundEvent,
    InformationalResponse,
    OutboundEvent,
    ProtocolError,
    Request,
    Response,
)
from .http11_rules import (
    CHUNK_DATA_NOT_CRLF,
    CHUNK_LINE_TOO_LONG,
    HEAD_TOO_LARGE,
    MAX_CHUNK_LINE,
    MAX_LEADING_EMPTY_LINES,
    REASONS,
    check_request,
    chunk_line_error,
    chunk_size,
    empty_line_length,
    refusal_bytes,
)


class HTTP11Protocol:
    """:class:`~.http11_rules.HTTP11Interface` over h11."""

    __slots__ = (
        "_chunked",
        "_chunks",
        "_empty_lines",
        "_h11",
        "_max_head",
        "_pending_error",
        "_pushed",
        "must_close",
        "requests_seen",
    )

    def __init__(self, *, max_head_size: int = 16 * 1024) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._max_head = max_head_size
        self._chunks: ChunkValidator | None = None
        self._chunked = False  # the response being sent is chunked (h11's choice, restated)
        self._pending_error: BadRequest | None = None
        self._pushed: InboundEvent | None = None
        self._empty_lines = 0  # ignored before this request's line
        self.must_close = False
        self.requests_seen = 0

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its sending side."""
        if self._chunks is not None and data:
            error = self._chunks.feed(data)
            if error is not None:
                self._pending_error = BadRequest(400, error)
            if self._chunks.done:
                self._chunks = None
        self._h11.receive_data(data)

    def push_back(self, event: InboundEvent) -> None:
        """Return a peeked-at event so the next ``next_event()`` gives it again.

        Lets a reader look one event ahead (to merge a last body chunk with the end of the
        body) without a buffer of its own. Sentinels need no pushback: they recur.
        """
        if event is not NEED_DATA and event is not PAUSED:
            self._pushed = event

    def next_event(self) -> InboundEvent:
        if self._pushed is not None:
            pushed, self._pushed = self._pushed, None
            return pushed
        if self._pending_error is not None:
            return self._pending_error
        # Bytes waiting before a head is parsed, to measure the head exactly as it came.
        buffered = 0
        if self._h11.their_state is h11.IDLE:
            buffered = self._bytes_before_head()
            if buffered < 0:
                return NEED_DATA
        try:
            event: Any = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:  # same words whichever check saw it first
                return BadRequest(431, HEAD_TOO_LARGE)
            return BadRequest(status, str(exc) or "invalid request")
        cls = type(event)
        if cls is h11.Data:
            return Data(event.data)
        if cls is h11.EndOfMessage:
            return EndData()
        if cls is h11.Request:
            return self._request(event, buffered - len(self._h11.trailing_data[0]))
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED
        if cls is h11.ConnectionClosed:
            return ConnectionClosed()
        raise AssertionError(f"unexpected h11 event {event!r}")  # pragma: no cover

    def _bytes_before_head(self) -> int:
        """The bytes waiting for the next head, after dropping one empty line before it
        (which h11 would refuse); -1 while a CR there may still begin one.

        h11 keeps its buffer to itself, so a fresh ``h11.Connection`` gets the bytes after
        the empty line: between two requests (both sides IDLE) a connection holds no other
        state. Rare, so the rebuild costs nothing on the usual path.
        """
        waiting, closed = self._h11.trailing_data
        if waiting and waiting[0] in b"\r\n" and self._empty_lines < MAX_LEADING_EMPTY_LINES:
            length = empty_line_length(waiting)
            if length < 0 and not closed:
                return -1  # h11 would refuse the CR before its LF arrives
            if length > 0:
                self._empty_lines += 1
                waiting = waiting[length:]
                self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
                if waiting:
                    self._h11.receive_data(waiting)
                if closed:
                    self._h11.receive_data(b"")
        return len(waiting)

    def _request(self, event: h11.Request, head_size: int) -> InboundEvent:
        self.requests_seen += 1
        version = event.http_version.decode("ascii")
        method = event.method
        target = event.target
        refused = check_request(method, target, version, head_size, self._max_head)
        if refused is not None:
            return refused
        headers: Headers = []
        has_length = chunked = False
        expects_continue = False
        # (h11's names are the wire names lowercased; its raw list is a plain list, where
        # iterating h11.Headers itself costs a Python call per field)
        raw = event.headers.raw_items()
        for raw_name, value in raw:
            name = raw_name.lower()
            if name == b"content-length":
                has_length = True
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
            headers.append((name, value))
        if chunked:
            if has_length:
                self.must_close = True
            self._chunks = ChunkValidator()
            buffered, _ = self._h11.trailing_data
            if buffered:
                # A framing error surfaces after the head, exactly as it would had the
                # body arrived in a later read: the verdict doesn't depend on chunking.
                error = self._chunks.feed(buffered)
                if error is not None:
                    self._pending_error = BadRequest(400, error)
                if self._chunks.done:
                    self._chunks = None
        return Request(
            method=method,
            target=target,
            headers=headers,
            http_version=version,
            raw_headers=raw,  # (a new list already)
            expects_continue=expects_continue and version == "1.1",
        )

    # -- output --------------------------------------------------------------------------
    def send(self, event: OutboundEvent) -> bytes:
        """Serialise one outbound event; raises :class:`ProtocolError` on misuse."""
        try:
            return self._send(event)
        except h11.LocalProtocolError as exc:
            raise ProtocolError(str(exc)) from None

    def frame_file(self, size: int) -> tuple[bytes, bytes]:
        # h11 passes a Data payload through untouched; a sized stand-in gets the framing.
        stand_in = _Sized(size)
        try:
            # (h11 documents the pass-through of any object with a length: for sendfile.)
            data = h11.Data(data=stand_in)  # type: ignore[arg-type]
            sent = self._h11.send_with_data_passthrough(data)
        except h11.LocalProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        pieces: list[object] = list(sent or [])
        at = next((i for i, piece in enumerate(pieces) if piece is stand_in), len(pieces))
        before = b"".join(p for p in pieces[:at] if isinstance(p, bytes))
        after = b"".join(p for p in pieces[at + 1 :] if isinstance(p, bytes))
        return before, after

    def _send(self, event: OutboundEvent) -> bytes:
        cls = type(event)
        if cls is Data:
            out = self._h11.send(h11.Data(data=event.data))  # type: ignore[union-attr]
        elif cls is EndData:
            trailers = event.headers  # type: ignore[union-attr]
            if trailers and self._chunked:
                out = self._h11.send(h11.EndOfMessage(headers=trailers))
            else:  # trailers need chunked framing; otherwise they are dropped
                out = self._h11.send(h11.EndOfMessage())
        elif cls is Response:
            headers = event.headers  # type: ignore[union-attr]
            if self.must_close:
                headers = [*headers, (b"connection", b"close")]
            status = event.status  # type: ignore[union-attr]
            # h11 frames a body with chunks when the app gave no length (HTTP/1.1 client).
            self._chunked = (
                status not in (204, 304)
                and self._h11.their_http_version == b"1.1"
                and all(name != b"content-length" for name, _ in headers)
            )
            out = self._h11.send(
                h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
            )
        elif cls is InformationalResponse:
            status = event.status  # type: ignore[union-attr]
            out = self._h11.send(
                h11.InformationalResponse(
                    status_code=status,
                    headers=event.headers,  # type: ignore[union-attr]
                    reason=REASONS.get(status, b""),
                )
            )
        else:  # pragma: no cover
            raise TypeError(f"cannot send {event!r}")
        return out or b""

    @property
    def response_started(self) -> bool:
        return self._h11.our_state is not h11.IDLE and self._h11.our_state is not h11.SEND_RESPONSE

    @property
    def response_complete(self) -> bool:
        return self._h11.our_state is h11.DONE

    @property
    def request_complete(self) -> bool:
        return self._h11.their_state is h11.DONE

    @property
    def keep_alive(self) -> bool:
        """Whether the connection can serve another request after this response."""
        return (
            self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
            and not self.must_close
        )

    @property
    def idle(self) -> bool:
        """No request in progress: nothing of a request head has been buffered either."""
        return self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]

    def start_next_cycle(self) -> None:
        self._h11.start_next_cycle()
        self._empty_lines = 0

    def next_cycle(self) -> bool:
        conn = self._h11
        if conn.our_state is not h11.DONE or self.must_close:
            return False
        while conn.their_state is not h11.DONE:  # a bodiless request's EndOfMessage too
            event = self.next_event()
            if type(event) is not Data and type(event) is not EndData:
                return False
        self.start_next_cycle()
        return True

    def take_trailing_data(self) -> bytes:
        """The bytes received after the current request that h11 has not parsed.

        After a protocol switch (WebSocket) they belong to the new protocol; h11 is not
        used on this connection again.
        """
        return bytes(self._h11.trailing_data[0])

    def close_after_response(self) -> None:
        """Make the next response carry ``Connection: close``."""
        self.must_close = True

    error_response = staticmethod(refusal_bytes)


class ChunkValidator:
    """Walks a chunked body's framing in step with h11 and reports what h11 lets through.

    It only validates (h11 still decodes), so it skips chunk data without copying it.
    """

    __slots__ = ("_line", "_remaining", "_state", "done")

    # states: "size" reading a chunk-size line; "data" skipping data; "crlf" expecting CRLF
    # after data; "trailer" reading trailer lines until an empty one.
    def __init__(self) -> None:
        self._state = "size"
        self._line = bytearray()
        self._remaining = 0
        self.done = False

    def feed(self, data: bytes) -> str | None:
        """Consume bytes; return an error message, or None. Stops at the body's end."""
        i = 0
        n = len(data)
        while i < n and not self.done:
            state = self._state
            if state == "data":
                take = min(self._remaining, n - i)
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "crlf"
                continue
            nl = data.find(b"\n", i)
            if nl == -1:
                self._line += data[i:]
                if len(self._line) > MAX_CHUNK_LINE:
                    return CHUNK_LINE_TOO_LONG
                return None
            self._line += data[i : nl + 1]
            i = nl + 1
            line = bytes(self._line)
            self._line.clear()
            error = chunk_line_error(line)
            if error is not None:
                return error
            line = line[:-2]
            if state == "crlf":
                if line:
                    return CHUNK_DATA_NOT_CRLF
                self._state = "size"
            elif state == "size":
                size = chunk_size(line)
                if type(size) is str:
                    return size
                self._remaining = int(size)
                self._state = "data" if self._remaining else "trailer"
            else:  # trailer
                if not line:
                    self.done = True
        return None


class _Sized:
    """A body of ``size`` bytes that h11 frames but never sees (they go by sendfile)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

"""HTTP/1.1 over h11, with the checks h11 leaves to the server.

h11 reads requests: heads, body framing, its state machine for the client's side.
Responses are written by :class:`~.http11_writer.ResponseSide`, the writer the httptools
class uses too, with h11's framing rules and the same bytes: h11's own send path would
validate the fields again (the ASGI layer has, as strictly) for about a quarter of a
request's cost. h11 is deliberately lenient in a few places
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
    ProtocolError,
    Request,
)
from .http11_rules import (
    CHUNK_DATA_NOT_CRLF,
    CHUNK_LINE_TOO_LONG,
    HEAD_TOO_LARGE,
    MAX_CHUNK_LINE,
    MAX_LEADING_EMPTY_LINES,
    check_request,
    chunk_line_error,
    chunk_size,
    empty_line_length,
    refusal_bytes,
)
from .http11_writer import _SEND_RESPONSE, _SENT, ResponseSide

# h11 documents this state and imports it at its top level, but leaves it out of __all__.
_MIGHT_SWITCH_PROTOCOL = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]


class HTTP11Protocol(ResponseSide):
    """:class:`~.http11_rules.HTTP11Interface` over h11."""

    __slots__ = (
        "_chunks",
        "_empty_lines",
        "_h11",
        "_max_head",
        "_pending_error",
        "_pushed",
        "requests_seen",
    )

    def __init__(self, *, max_head_size: int = 16 * 1024) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._max_head = max_head_size
        self._chunks: ChunkValidator | None = None
        self._pending_error: BadRequest | None = None
        self._pushed: InboundEvent | None = None
        self._empty_lines = 0  # ignored before this request's line
        self.must_close = False
        self.requests_seen = 0
        self.reset_response_side()

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

    def body_to_read(self, piece: int) -> int:
        return 0  # (h11 slices its buffer itself)

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
                self._fresh_h11(skip=length)
                waiting = waiting[length:]
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
        keep = version == "1.1"  # (h11's rule: HTTP/1.0 always closes)
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
            elif name == b"connection" and b"close" in value.lower():
                keep = keep and b"close" not in [t.strip() for t in value.lower().split(b",")]
            headers.append((name, value))
        self._our = _SEND_RESPONSE
        self._is_head = method == b"HEAD"
        self._old_client = version == "1.0"
        self._keep = keep
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

    # -- state ---------------------------------------------------------------------------
    # (responses are written by ResponseSide: h11 parses, it never sees our side)
    def _their_done(self) -> bool:
        """The request is read (an answered upgrade proposal counts: no 101 goes out here)."""
        state = self._h11.their_state
        return state is h11.DONE or state is _MIGHT_SWITCH_PROTOCOL

    @property
    def request_complete(self) -> bool:
        return self._h11.their_state is h11.DONE

    @property
    def keep_alive(self) -> bool:
        """Whether the connection can serve another request after this response."""
        return self._our == _SENT and self._keep and not self.must_close and self._their_done()

    @property
    def idle(self) -> bool:
        """No request in progress: nothing of a request head has been buffered either."""
        return self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]

    def start_next_cycle(self) -> None:
        if not (self._our == _SENT and self._keep and self._their_done()):
            raise ProtocolError("not in a reusable state")
        self._fresh_h11()
        self.reset_response_side()
        self._empty_lines = 0

    def _fresh_h11(self, skip: int = 0) -> None:
        """A new ``h11.Connection`` for the next request, given the bytes the old one had
        not parsed (after ``skip`` of them): between requests h11 holds no other state, and
        ours never went through it."""
        waiting, closed = self._h11.trailing_data
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
        if len(waiting) > skip:
            self._h11.receive_data(waiting[skip:])
        if closed:
            self._h11.receive_data(b"")

    def next_cycle(self) -> bool:
        if self._our != _SENT or not self._keep or self.must_close:
            return False
        while not self._their_done():  # a bodiless request's EndOfMessage too
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

"""HTTP/1.1 with llhttp (httptools) reading request heads and a lean writer of our own.

The same events, the same verdicts and the same interface as
:class:`~trioserve.sansio.http11.HTTP11Protocol` (h11 plus our checks), for less CPU per
request: llhttp splits a head in C, a body is framed here (a Content-Length body is sliced,
usually without a copy; chunked framing is held to ChunkValidator's rules), and a response
head is written straight from the header list instead of through h11's state machine.

Where llhttp and h11 disagree (unknown methods, obs-fold, bare LF, ``Content-Length: 5, 5``,
Content-Length with Transfer-Encoding, ...) the head goes to h11 to decide, so a request is
accepted or refused the same way whichever class reads it; the plain case never needs h11.

Both implement :class:`~.http11_rules.HTTP11Interface`, with the rules they share from
:mod:`.http11_rules`. No ``h11.Connection`` is built for the connection itself.
"""

from __future__ import annotations

import re

from .events import (
    NEED_DATA,
    PAUSED,
    BadRequest,
    ConnectionClosed,
    Data,
    EndData,
    InboundEvent,
    ProtocolError,
)
from .http11_head import CHUNKED, CLOSE, HAVE_HTTPTOOLS, UPGRADE, Head, parse_head
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
    refusal_bytes,  # (the error_response method)
)
from .http11_writer import _SEND_RESPONSE, _SENT, ResponseSide

# -- reading --------------------------------------------------------------------------------

_END_OF_HEAD = re.compile(rb"\n\r?\n").search
_TRAILER_LINE = re.compile(
    rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:|[ \t])[ \t]*(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*"
).fullmatch

# The end of one chunk and the size line of the next, in the plain form (no extension).
_NEXT_CHUNK = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n").match
# their side
_IDLE, _BODY, _DONE = 0, 1, 2
# chunked body
_SIZE, _CDATA, _CRLF, _TRAILER = 0, 1, 2, 3
_ENDED, _FAILED = 4, 5  # what _framing_line may also answer


class FastHTTP11Protocol(ResponseSide):
    """:class:`~.http11_rules.HTTP11Interface` with llhttp; see the module docstring."""

    error_response = staticmethod(refusal_bytes)
    __slots__ = (
        "_buf",
        "_chunk_state",
        "_empty_lines",
        "_eof",
        "_max_head",
        "_pending_error",
        "_pos",
        "_pushed",
        "_remaining",
        "_scan_from",
        "_their",
        "requests_seen",
    )

    def __init__(self, *, max_head_size: int = 16 * 1024) -> None:
        if not HAVE_HTTPTOOLS:  # pragma: no cover
            raise RuntimeError(
                "FastHTTP11Protocol needs httptools: pip install 'trioserve[speed]'"
            )
        self._max_head = max_head_size
        self._pending_error: BadRequest | None = None  # sticky: a refused stream stays refused
        self._pushed: InboundEvent | None = None
        self.must_close = False
        self.requests_seen = 0
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._scan_from = 0
        self._reset()

    def _reset(self) -> None:
        self.reset_response_side()
        self._their = _IDLE
        self._chunk_state = -1  # -1: a Content-Length body
        self._remaining = 0
        self._empty_lines = 0  # ignored before this request's line

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._pos:
            # One copy (a slice, then a concatenation, would be two: the rest of a large
            # body after its head, body_to_read).
            self._buf = b"".join((memoryview(self._buf)[self._pos :], data))
            self._scan_from = max(0, self._scan_from - self._pos)
            self._pos = 0
        elif self._buf:
            self._buf += data
        else:
            self._buf = bytes(data)

    def _fail(self, status: int, reason: str) -> BadRequest:
        error = self._pending_error = BadRequest(status, reason)
        return error

    def next_event(self) -> InboundEvent:
        if self._pushed is not None:
            pushed, self._pushed = self._pushed, None
            return pushed
        if self._pending_error is not None:
            return self._pending_error
        their = self._their
        if their == _BODY:
            if self._chunk_state == -1:
                return self._length_event()
            return self._chunk_event()
        if their == _IDLE:
            return self._head_event()
        if self._upgrade:  # as h11: a protocol switch was proposed and is not yet answered
            return PAUSED
        if self._pos < len(self._buf):
            if not self._keep:  # h11: nothing may follow a request that ends the connection
                return self._fail(400, "Got data when expecting EOF")
            return PAUSED  # the next request waits until this response is done
        return ConnectionClosed() if self._eof else NEED_DATA

    def _head_event(self) -> InboundEvent:
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if pos == size:
            return ConnectionClosed() if self._eof else NEED_DATA
        if buf[pos] < 0x21:  # whitespace: one empty line may precede the request line
            length = empty_line_length(buf, pos)
            if length < 0 and not self._eof:
                return NEED_DATA  # a CR: is it an empty line?
            if length <= 0 or self._empty_lines >= MAX_LEADING_EMPTY_LINES:
                return self._fail(400, "illegal request line")
            self._empty_lines += 1
            self._take(pos + length)
            return self._head_event()
        found = _END_OF_HEAD(buf, max(pos, self._scan_from))
        if found is None:
            if size - pos > self._max_head:
                return self._fail(431, HEAD_TOO_LARGE)
            if self._eof:
                return self._fail(400, "peer unexpectedly closed connection")
            self._scan_from = max(pos, size - 2)
            return NEED_DATA
        end = found.end()
        head = buf if pos == 0 and end == size else buf[pos:end]
        self._take(end)
        self._scan_from = 0
        parsed = parse_head(head)
        if type(parsed) is BadRequest:
            self._pending_error = parsed
            return parsed
        assert type(parsed) is tuple
        return self._start_request(parsed, len(head))

    def _take(self, end: int) -> None:
        if end >= len(self._buf):
            self._buf = b""
            self._pos = 0
        else:
            self._pos = end

    def _start_request(self, head: Head, head_size: int) -> InboundEvent:
        self.requests_seen += 1
        request, length, flags = head
        version = request.http_version
        method = request.method
        refused = check_request(method, request.target, version, head_size, self._max_head)
        if refused is not None:
            self._pending_error = refused  # sticky: a refused stream stays refused
            return refused
        if flags & CHUNKED:
            if length != -1:
                self.must_close = True
            self._chunk_state = _SIZE
        else:
            self._chunk_state = -1
            self._remaining = max(length, 0)
        self._their = _BODY
        self._our = _SEND_RESPONSE
        self._is_head = method == b"HEAD"
        self._old_client = version == "1.0"
        if flags & CLOSE:
            self._keep = False
        self._upgrade = bool(flags & UPGRADE)
        return request

    def body_to_read(self, piece: int) -> int:
        """A Content-Length body's bytes that are not here yet, up to a ``piece`` in all:
        read first, they join what the head's read brought in one copy (receive_data),
        instead of a slice of that and a join of the two pieces."""
        if self._their != _BODY or self._chunk_state != -1 or self._pushed is not None:
            return 0
        return max(min(self._remaining, piece) - (len(self._buf) - self._pos), 0)

    def _length_event(self) -> InboundEvent:
        left = self._remaining
        if not left:
            self._their = _DONE
            return EndData()
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if not available:
            if self._eof:
                return self._fail(
                    400, "peer closed connection without sending complete message body"
                )
            return NEED_DATA
        if available <= left:
            data = buf[pos:] if pos else buf
            self._buf = b""
            self._pos = 0
            self._remaining = left - available
        else:
            data = buf[pos : pos + left]
            self._pos = pos + left
            self._remaining = 0
        return Data(data)

    def _chunk_event(self) -> InboundEvent:
        """The data of every chunk complete in the buffer as one Data event (a body sent
        in 4 KiB chunks costs one event per read, not one per chunk); EndData, an error
        (after the data before it), or NEED_DATA."""
        buf = self._buf
        pos = self._pos
        size = len(buf)
        state = self._chunk_state
        parts: list[bytes] = []
        error: BadRequest | None = None
        while True:
            if state == _CDATA:
                if pos == size:
                    break
                take = min(self._remaining, size - pos)
                parts.append(buf if pos == 0 and take == size else buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                state = _CRLF
                # The usual next lines, the CRLF ending this chunk and a bare size line,
                # in one match; anything else takes the checked path below.
                found_next = _NEXT_CHUNK(buf, pos)
                if found_next is not None and found_next[1].strip(b"0"):
                    self._remaining = int(found_next[1], 16)
                    pos = found_next.end()
                    state = _CDATA
                continue
            nl = buf.find(b"\n", pos)
            if nl == -1:
                if size - pos > MAX_CHUNK_LINE:
                    error = self._fail(400, CHUNK_LINE_TOO_LONG)
                break
            state = self._framing_line(buf[pos : nl + 1], state)
            pos = nl + 1
            if state == _FAILED:
                error = self._pending_error
                break
            if state == _ENDED:
                self._chunk_state = _TRAILER
                self._take(pos)
                self._their = _DONE
                return EndData()
            if parts and state == _TRAILER:
                break  # the data first; the trailer section on the next call
        self._chunk_state = state
        self._take(pos)
        if parts:  # an error found after them is sticky: the next call returns it
            return Data(parts[0] if len(parts) == 1 else b"".join(parts))
        if error is not None:
            return error
        if self._eof:
            return self._fail(
                400,
                "peer closed connection without sending complete message body: "
                "incomplete chunked read",
            )
        return NEED_DATA

    def _framing_line(self, line: bytes, state: int) -> int:
        """The state after one complete chunk-framing line (with its LF): the next one,
        ``_ENDED`` after the trailer section, or ``_FAILED`` (the error is sticky)."""
        error = chunk_line_error(line)
        if error is None:
            line = line[:-2]
            if state == _CRLF:
                if not line:
                    return _SIZE
                error = CHUNK_DATA_NOT_CRLF
            elif state == _SIZE:
                found = chunk_size(line)
                if type(found) is not str:
                    self._remaining = int(found)
                    return _CDATA if self._remaining else _TRAILER
                error = found
            elif not line:
                return _ENDED
            elif _TRAILER_LINE(line):  # a trailer field: checked, then dropped as h11 does
                return _TRAILER
            else:
                error = "invalid trailer field"
        self._fail(400, error)
        return _FAILED

    # -- state -----------------------------------------------------------------------------
    @property
    def request_complete(self) -> bool:
        return self._their == _DONE and self._keep

    @property
    def keep_alive(self) -> bool:
        return self._our == _SENT and self._their == _DONE and self._keep and not self.must_close

    @property
    def idle(self) -> bool:
        return self._their == _IDLE and self._pos == len(self._buf) and self._pending_error is None

    def start_next_cycle(self) -> None:
        if not (self._our == _SENT and self._their == _DONE and self._keep):
            raise ProtocolError("not in a reusable state")
        self._reset()

    def next_cycle(self) -> bool:
        if self._our != _SENT or not self._keep or self.must_close:
            return False
        while self._their != _DONE:  # a bodiless request still has its EndData to give
            event = self.next_event()
            if type(event) is not Data and type(event) is not EndData:
                return False
        self._reset()
        return True

    def take_trailing_data(self) -> bytes:
        return bytes(self._buf[self._pos :])

    def push_back(self, event: InboundEvent) -> None:
        if event is not NEED_DATA and event is not PAUSED:
            self._pushed = event

    def close_after_response(self) -> None:
        self.must_close = True

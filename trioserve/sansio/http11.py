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
- a head larger than the limit gets 431 whether it came in one read or one byte at a time.
"""

from __future__ import annotations

import re
from http import HTTPStatus
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

_ORIGIN_FORM = re.compile(rb"/[^\x00-\x20\x7f]*").fullmatch
_ABSOLUTE_FORM = re.compile(
    rb"[hH][tT][tT][pP][sS]?://[^/?#\x00-\x20\x7f@]+([/?][^\x00-\x20\x7f]*)?"
).fullmatch


_HEAD_TOO_LARGE = "request head too large"


class HTTP11Protocol:
    """One HTTP/1.1 server connection: feed bytes in, take events out, turn events into bytes.

    ``next_event()`` returns :data:`NEED_DATA` when it wants bytes and :data:`PAUSED` while
    a pipelined request waits for the current response to finish.
    """

    __slots__ = (
        "_chunks",
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
        self._pending_error: BadRequest | None = None
        self._pushed: InboundEvent | None = None
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
        idle = self._h11.their_state is h11.IDLE
        buffered = len(self._h11.trailing_data[0]) if idle else 0
        try:
            event: Any = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:  # same words whichever check saw it first
                return BadRequest(431, _HEAD_TOO_LARGE)
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

    def _request(self, event: h11.Request, head_size: int) -> InboundEvent:
        self.requests_seen += 1
        # The raw size, whitespace and all: h11 refuses a partial head once its buffer passes
        # the limit, so a head of head_size bytes is refused byte by byte iff
        # head_size - 1 > limit. The same rule here gives the same answer for any chunking.
        if head_size - 1 > self._max_head:
            return BadRequest(431, _HEAD_TOO_LARGE)
        version = event.http_version.decode("ascii")
        if version not in ("1.1", "1.0"):
            return BadRequest(505, f"HTTP version {version} not supported")
        method = event.method
        target = event.target
        if not _ORIGIN_FORM(target):
            if target == b"*":
                if method != b"OPTIONS":
                    return BadRequest(400, "'*' target is only allowed for OPTIONS")
            elif method == b"CONNECT":
                return BadRequest(405, "CONNECT is not supported")
            elif not _ABSOLUTE_FORM(target):
                return BadRequest(400, "invalid request target")
        headers: Headers = []
        has_length = chunked = False
        expects_continue = False
        for name, value in event.headers:
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
        raw = event.headers.raw_items()
        return Request(
            method=method,
            target=target,
            headers=headers,
            http_version=version,
            raw_headers=list(raw),
            expects_continue=expects_continue and version == "1.1",
        )

    # -- output --------------------------------------------------------------------------
    def send(self, event: OutboundEvent) -> bytes:
        """Serialise one outbound event; raises :class:`ProtocolError` on misuse."""
        try:
            return self._send(event)
        except h11.LocalProtocolError as exc:
            raise ProtocolError(str(exc)) from None

    def _send(self, event: OutboundEvent) -> bytes:
        cls = type(event)
        if cls is Data:
            out = self._h11.send(h11.Data(data=event.data))  # type: ignore[union-attr]
        elif cls is EndData:
            out = self._h11.send(h11.EndOfMessage())
        elif cls is Response:
            headers = event.headers  # type: ignore[union-attr]
            if self.must_close:
                headers = [*headers, (b"connection", b"close")]
            status = event.status  # type: ignore[union-attr]
            out = self._h11.send(
                h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
            )
        elif cls is InformationalResponse:
            status = event.status  # type: ignore[union-attr]
            out = self._h11.send(
                h11.InformationalResponse(
                    status_code=status,
                    headers=event.headers,  # type: ignore[union-attr]
                    reason=_REASONS.get(status, b""),
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

    def take_trailing_data(self) -> bytes:
        """The bytes received after the current request that h11 has not parsed.

        After a protocol switch (WebSocket) they belong to the new protocol; h11 is not
        used on this connection again.
        """
        return bytes(self._h11.trailing_data[0])

    def close_after_response(self) -> None:
        """Make the next response carry ``Connection: close``."""
        self.must_close = True


def error_response(status: int, *, reason: str = "", extra: Headers = ()) -> bytes:  # type: ignore[assignment]
    """A complete minimal response for a request we refuse, written outside h11's state.

    Used when h11 cannot (or should not) frame the answer, e.g. after a parse error.
    """
    phrase = _PHRASES.get(status, b"Error")
    body = phrase + b"\n"
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, phrase),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
    ]
    for name, value in extra:
        head.append(name + b": " + value + b"\r\n")
    return b"".join(head) + b"\r\n" + body


_PHRASES = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}

_REASONS = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_CHUNK_LINE = 4096


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
                if len(self._line) > _MAX_CHUNK_LINE:
                    return "chunk line too long"
                return None
            self._line += data[i : nl + 1]
            i = nl + 1
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                return "chunk line must end with CRLF and contain no bare CR"
            line = line[:-2]
            if state == "crlf":
                if line:
                    return "chunk data not followed by CRLF"
                self._state = "size"
            elif state == "size":
                size_part, _, ext = line.partition(b";")
                if not size_part or len(size_part) > 16 or not _HEX.issuperset(size_part):
                    return f"invalid chunk size line {line[:40]!r}"
                if b"\x00" in ext:
                    return "invalid chunk extension"
                self._remaining = int(size_part, 16)
                self._state = "data" if self._remaining else "trailer"
            else:  # trailer
                if not line:
                    self.done = True
        return None

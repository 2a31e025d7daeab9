"""Our side of an HTTP/1.1 exchange, written straight from the app's header list.

Both protocol classes (:mod:`.http11` reads with h11, :mod:`.http11_fast` with llhttp) write
responses with :class:`ResponseSide`: h11's own writer would validate the fields again (the
ASGI layer already has, as strictly) and drive its state machine, about a fifth of a request's
cost with h11. Framing fields are checked as h11 checks them (one Content-Length value, only
``Transfer-Encoding: chunked``), and the ``Connection`` tokens are kept for the keep-alive
decision, so the bytes are what h11 would write (tests/sansio compares them with h11's).
"""

from __future__ import annotations

from http import HTTPStatus

from .events import (
    Data,
    EndData,
    Headers,
    InformationalResponse,
    OutboundEvent,
    ProtocolError,
    Response,
)
from .http11_head import CL_MAX_DIGITS

# our side: no request yet, may send a response, sending the body, done
_WAIT, _SEND_RESPONSE, _SEND_BODY, _SENT = 0, 1, 2, 3
# response body writers
_LENGTH, _CHUNKED, _RAW = 0, 1, 2

# Response heads written before, by (status, header list): an app sends the same few heads
# over and over. Only a head framed by its Content-Length alone, on a connection that stays
# open, is kept (its bytes and that length); shared by all connections, and bounded.
_KNOWN_HEADS: dict[tuple[int, tuple[tuple[bytes, bytes], ...]], tuple[bytes, int]] = {}
_KNOWN_HEADS_MAX = 64


_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def _response_length(value: bytes, seen: bytes | None) -> bytes:
    if b"," in value:
        values = {v.strip() for v in value.split(b",")}
        if len(values) != 1:
            raise ProtocolError("conflicting Content-Length headers")
        value = values.pop()
    if not value.isdigit() or len(value) > CL_MAX_DIGITS:
        raise ProtocolError("bad Content-Length")
    if seen is not None and seen != value:
        raise ProtocolError("conflicting Content-Length headers")
    return value


class ResponseHead:
    """A response head's lines so far, and the framing facts its fields declared."""

    __slots__ = ("chunked", "connection", "length", "lines")

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.length: bytes | None = None
        self.chunked = False
        self.connection: list[bytes] | None = None  # the app's Connection values

    def drop(self, prefix: bytes) -> None:
        self.lines = [line for line in self.lines if not line.startswith(prefix)]

    def _tokens(self) -> set[bytes]:
        tokens: set[bytes] = set()
        for value in self.connection or ():
            tokens.update(t.strip() for t in value.lower().split(b","))
        tokens.discard(b"")
        return tokens

    @property
    def plain(self) -> bool:
        """Framed by one Content-Length and nothing else (no Transfer-Encoding, no
        Connection field): the same fields always make the same head."""
        return self.length is not None and not self.chunked and self.connection is None

    def asks_to_close(self) -> bool:
        """The app's Connection field says close (call only when it gave one)."""
        return b"close" in self._tokens()

    def rewrite_connection(self) -> None:
        """One Connection field that says close (keeping the app's other tokens), as h11."""
        tokens = self._tokens()
        if self.connection is not None:
            self.drop(b"connection:")
        tokens.discard(b"keep-alive")
        tokens.add(b"close")
        self.lines.extend(b"Connection: " + token + b"\r\n" for token in sorted(tokens))


def scan_response_headers(status: int, headers: Headers) -> ResponseHead:
    """The head's lines (status line and fields) and its framing; ProtocolError if wrong."""
    head = ResponseHead([status_line(status)])
    append = head.lines.append
    for name, value in headers:
        if name in _FRAMING:
            if name == b"content-length":
                if head.length is not None and value == head.length:
                    continue  # h11 keeps one of equal duplicates
                value = head.length = _response_length(value, head.length)
            elif name == b"transfer-encoding":
                if head.chunked or value.lower() != b"chunked":
                    raise ProtocolError("Only Transfer-Encoding: chunked is supported")
                head.chunked = True
                continue  # written by the protocol, if the framing keeps it
            else:
                if head.connection is None:
                    head.connection = []
                head.connection.append(value)
        append(name + b": " + value + b"\r\n")
    return head


class ResponseSide:
    """The response half of an HTTP/1.1 protocol class: its state, framing and writing.

    The reading half sets ``_our = _SEND_RESPONSE`` and the request's facts (``_is_head``,
    ``_old_client``, ``_keep``: the request allows keep-alive) when a request arrives, and
    ``reset_response_side()`` between exchanges.
    """

    __slots__ = (
        "_is_head",
        "_keep",
        "_left",
        "_old_client",
        "_our",
        "_upgrade",
        "_writer",
        "must_close",
    )
    _is_head: bool
    _keep: bool
    _left: int
    _old_client: bool
    _our: int
    _upgrade: bool
    _writer: int
    must_close: bool

    def reset_response_side(self) -> None:
        self._our = _WAIT
        self._keep = True
        self._is_head = False
        self._old_client = False
        self._upgrade = False  # a protocol switch was proposed and is not yet answered
        self._writer = _LENGTH
        self._left = 0

    def frame_file(self, size: int) -> tuple[bytes, bytes]:
        if self._our != _SEND_BODY:
            raise ProtocolError("can't send data before a response head")
        writer = self._writer
        if writer == _LENGTH:
            if size > self._left:
                raise ProtocolError("Too much data for declared Content-Length")
            self._left -= size
        elif writer == _CHUNKED and size:
            return b"%x\r\n" % size, b"\r\n"
        return b"", b""

    def frame(self, events: list[OutboundEvent], join_limit: int) -> bytes | list[bytes]:
        """``send()`` for each of ``events``, as one write: their bytes joined, or (a body
        piece of ``join_limit`` bytes or more, which joining would copy) the pieces as a
        list. One call for what an app's last message usually brings at once (the held
        head, the body, its end); a body framed by its Content-Length is written here."""
        pieces = []
        large = False
        for event in events:
            cls = type(event)
            if cls is Response:
                pieces.append(self._response(event.status, event.headers))  # type: ignore[union-attr]
            elif cls is Data and self._writer == _LENGTH and self._our == _SEND_BODY:
                data: bytes = event.data  # type: ignore[union-attr]
                size = len(data)
                if size > self._left:
                    raise ProtocolError("Too much data for declared Content-Length")
                self._left -= size
                large = large or size >= join_limit
                pieces.append(data)
            elif (
                cls is Data and self._our == _SEND_BODY and len(event.data) >= join_limit  # type: ignore[union-attr]
            ):
                # A large piece of a chunked (or close-delimited) body: framed around, so
                # neither send()'s chunk nor the join copies it.
                before, after = self.frame_file(len(event.data))  # type: ignore[union-attr]
                pieces += (before, event.data, after)  # type: ignore[union-attr]
                large = True
            elif cls is EndData and self._writer == _LENGTH and self._our == _SEND_BODY:
                if self._left:
                    raise ProtocolError("Too little data for declared Content-Length")
                self._our = _SENT  # (no bytes: a length-framed body ends by itself)
            else:
                pieces.append(self.send(event))
        return pieces if large else b"".join(pieces)

    def send(self, event: OutboundEvent) -> bytes:
        """Serialise one outbound event; raises :class:`ProtocolError` on misuse."""
        cls = type(event)
        if cls is Data:
            if self._our != _SEND_BODY:
                raise ProtocolError("can't send data before a response head")
            data: bytes = event.data  # type: ignore[union-attr]
            writer = self._writer
            if writer == _LENGTH:
                left = self._left - len(data)
                if left < 0:
                    raise ProtocolError("Too much data for declared Content-Length")
                self._left = left
                return data
            if writer == _CHUNKED:
                return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
            return data
        if cls is EndData:
            if self._our != _SEND_BODY:
                raise ProtocolError("can't end a response that was not started")
            if self._writer == _LENGTH and self._left:
                raise ProtocolError("Too little data for declared Content-Length")
            self._our = _SENT
            if self._writer != _CHUNKED:
                return b""  # (trailers need chunked framing; otherwise they are dropped)
            trailers = event.headers  # type: ignore[union-attr]
            if trailers:
                lines = [name + b": " + value + b"\r\n" for name, value in trailers]
                return b"0\r\n" + b"".join(lines) + b"\r\n"
            return b"0\r\n\r\n"
        if cls is Response:
            return self._response(event.status, event.headers)  # type: ignore[union-attr]
        if cls is InformationalResponse:
            status = event.status  # type: ignore[union-attr]
            if self._our != _SEND_RESPONSE or not 100 <= status < 200:
                raise ProtocolError("can't send an informational response now")
            lines = [status_line(status)]
            lines.extend(
                [name + b": " + value + b"\r\n" for name, value in event.headers]  # type: ignore[union-attr]
            )
            lines.append(b"\r\n")
            return b"".join(lines)
        raise TypeError(f"cannot send {event!r}")  # pragma: no cover

    def _response(self, status: int, headers: Headers) -> bytes:
        if self._our != _SEND_RESPONSE:
            raise ProtocolError("can't send a response now")
        if not 200 <= status < 1000:
            raise ProtocolError(f"invalid response status {status}")
        key = None
        if self._keep and not self.must_close:  # no Connection field of ours to add
            key = (status, tuple(headers))
            known = _KNOWN_HEADS.get(key)
            if known is not None:  # the same head as before: scanned and framed already
                self._writer = _LENGTH
                self._left = 0 if self._is_head else known[1]
                self._our = _SEND_BODY
                self._upgrade = False
                return known[0]
        head = scan_response_headers(status, headers)
        # Like h11: a connection the request already ends gets one rewritten Connection
        # field; otherwise the app's fields stay and our own close is added after them.
        ends = self._body_framing(head, status)
        if ends or not self._keep:
            self._keep = False
            head.rewrite_connection()
        elif self.must_close:
            self._keep = False
            head.lines.append(b"connection: close\r\n")
        elif head.connection is not None and head.asks_to_close():
            self._keep = False
        head.lines.append(b"\r\n")
        self._our = _SEND_BODY
        self._upgrade = False  # not switching: this response answers the proposal
        data = b"".join(head.lines)
        if key is not None and head.plain and status != 204 and status != 304:
            if len(_KNOWN_HEADS) >= _KNOWN_HEADS_MAX:
                _KNOWN_HEADS.clear()  # (the Date field makes a new head every second)
            _KNOWN_HEADS[key] = (data, int(head.length))  # type: ignore[arg-type]
        return data

    def _body_framing(self, head: ResponseHead, status: int) -> bool:
        """Pick the body writer; True when the body can only end with the connection."""
        ends = False
        if status == 204 or status == 304:  # no body whatever the headers say
            writer, left = _LENGTH, 0
            if head.chunked:
                head.lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            length = head.length
            if head.chunked or length is None:
                if length is not None:  # Transfer-Encoding wins: drop the length
                    head.drop(b"content-length:")
                if self._old_client:  # no chunked for HTTP/1.0: the body ends at the close
                    writer, left = _RAW, 0
                    ends = not self._is_head
                else:
                    writer, left = _CHUNKED, 0
                    head.lines.append(b"Transfer-Encoding: chunked\r\n")
            else:
                writer, left = _LENGTH, int(length)
            if self._is_head:
                writer, left = _LENGTH, 0
        self._writer = writer
        self._left = left
        return ends

    @property
    def response_started(self) -> bool:
        return self._our >= _SEND_BODY

    @property
    def response_complete(self) -> bool:
        # As with h11: a response that ends the connection is not "done", it "must close".
        return self._our == _SENT and self._keep

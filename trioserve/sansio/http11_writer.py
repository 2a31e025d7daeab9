"""Response heads for the httptools protocol, written straight from the app's header list.

Framing fields are checked as h11 checks them (one Content-Length value, only
``Transfer-Encoding: chunked``), and the ``Connection`` tokens are kept for the keep-alive
decision, so the bytes match what h11 would write.
"""

from __future__ import annotations

from http import HTTPStatus

from .events import Headers, ProtocolError
from .http11_head import CL_MAX_DIGITS

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

"""What every HTTP/1.1 protocol class of ours is: its interface, and the rules it enforces.

Two classes implement :class:`HTTP11Interface`: :class:`~.http11.HTTP11Protocol` (h11) and
:class:`~.http11_fast.FastHTTP11Protocol` (httptools). The checks both make beyond what
their parsers do (request-target forms, versions, CONNECT, head size, chunk lines, the empty
line a client may send before a request line) live here once, with their messages, so the
two cannot drift apart.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Protocol

from .events import BadRequest, Headers, InboundEvent, OutboundEvent

# RFC 9110 5.6.2: a method is a token (visible ASCII, no delimiters).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_METHOD = re.compile(_TOKEN).fullmatch
_ORIGIN_FORM = re.compile(rb"/[^\x00-\x20\x7f]*").fullmatch
# The common case in one match: a token method, a space, an origin-form target.
_PLAIN_LINE = re.compile(_TOKEN + rb" /[^\x00-\x20\x7f]*").fullmatch
# What HTTP/1.x may carry besides; HTTP/2 and HTTP/3 carry the same rules for the rest.
_VERSIONS = frozenset(("1.1", "1.0", "2", "3"))
_ABSOLUTE_FORM = re.compile(
    rb"[hH][tT][tT][pP][sS]?://[^/?#\x00-\x20\x7f@]+([/?][^\x00-\x20\x7f]*)?"
).fullmatch

HEAD_TOO_LARGE = "request head too large"
MAX_CHUNK_LINE = 4096
CHUNK_LINE_TOO_LONG = "chunk line too long"
CHUNK_DATA_NOT_CRLF = "chunk data not followed by CRLF"
_HEX = frozenset(b"0123456789abcdefABCDEF")

MAX_LEADING_EMPTY_LINES = 1
"""Empty lines (CRLF, or a bare LF) ignored before a request line.

RFC 9112 2.2: a server SHOULD ignore at least one, since some clients end a POST body with an
extra CRLF, which then precedes their next request. A second one is an empty request line
and gets 400, as gunicorn answers it: a stream of empty lines is no request.
"""


class HTTP11Interface(Protocol):
    """One HTTP/1.1 server connection: bytes in, events out, events to bytes.

    ``next_event()`` returns ``NEED_DATA`` when it wants bytes and ``PAUSED`` while a
    pipelined request waits for the current response to finish. ``send()`` raises
    :class:`~.events.ProtocolError` for an event that cannot be framed, before producing
    any byte of it.
    """

    must_close: bool
    requests_seen: int

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its sending side."""

    def next_event(self) -> InboundEvent: ...

    def push_back(self, event: InboundEvent) -> None:
        """Return a peeked-at event so the next ``next_event()`` gives it again."""

    def body_to_read(self, piece: int) -> int:
        """Bytes to read before taking the body, so that one piece of up to ``piece`` bytes
        needs no joining (0: none, or the protocol cannot tell)."""

    def send(self, event: OutboundEvent) -> bytes: ...

    def frame(self, events: list[OutboundEvent], join_limit: int) -> bytes | list[bytes]:
        """``send()`` for each event, joined (a list when a body piece reaches
        ``join_limit`` bytes: not copied)."""

    def frame_file(self, size: int) -> tuple[bytes, bytes]:
        """Account ``size`` body bytes that go out by ``sendfile`` (not through ``send``):
        the framing to write before and after them. Raises ProtocolError as ``send``."""

    @property
    def response_started(self) -> bool: ...

    @property
    def response_complete(self) -> bool: ...

    @property
    def request_complete(self) -> bool: ...

    @property
    def keep_alive(self) -> bool:
        """Whether the connection can serve another request after this response."""

    @property
    def idle(self) -> bool:
        """No request in progress, and nothing of a request head buffered either."""

    def start_next_cycle(self) -> None: ...

    def next_cycle(self) -> bool:
        """The exchange is over: if the response is complete, the request body is read or
        already here (the rest is dropped) and keep-alive goes on, start the next cycle.
        False: the connection's own checks decide (nothing they look at has changed but
        body pieces already dropped)."""

    def take_trailing_data(self) -> bytes:
        """Bytes received after the current request (after a protocol switch: the new one's)."""

    def close_after_response(self) -> None:
        """Make the next response carry ``Connection: close``."""

    def error_response(self, status: int, extra: Headers) -> bytes:
        """A complete minimal error response (a refused WebSocket upgrade), as
        :func:`error_response` writes it, outside the protocol's own state."""


def check_request(
    method: bytes, target: bytes, version: str, head_size: int = 0, max_head: int = 0
) -> BadRequest | None:
    """Our verdict on a request's method and target, for every HTTP version (None: serve it).

    HTTP/1.1 calls it on a parsed head; HTTP/2 and HTTP/3 on the ``:method`` and ``:path``
    pseudo-headers (``head_size`` 0: their framing bounds the head), so the same request
    gets the same answer on every version. A method is a token (ASCII, no spaces or
    controls); a target is origin-form, ``*`` for OPTIONS only, or (HTTP/1.x only, RFC
    9113 8.3.1 / RFC 9114 4.3.1 forbid it in ``:path``) absolute-form.

    ``head_size`` is the raw size, whitespace and all: h11 refuses a partial head once its
    buffer passes the limit, so a head of ``head_size`` bytes is refused byte by byte iff
    ``head_size - 1 > max_head``; the same rule for a whole head gives the same answer for
    any chunking.
    """
    if head_size - 1 > max_head:
        return BadRequest(431, HEAD_TOO_LARGE)
    if version not in _VERSIONS:
        return BadRequest(505, f"HTTP version {version} not supported")
    if method == b"CONNECT":
        # An ASGI server does not tunnel: one answer whatever the target's form. Quiet,
        # since any client could otherwise fill the log.
        return BadRequest(405, "CONNECT is not supported", quiet=True)
    if _PLAIN_LINE(method + b" " + target):
        return None
    return _line_error(method, target, version)


def _line_error(method: bytes, target: bytes, version: str) -> BadRequest | None:
    """The slow path of :func:`check_request`: which rule the method or target breaks."""
    if not _METHOD(method):
        return BadRequest(400, "invalid request method")
    if _ORIGIN_FORM(target):
        return None
    if target == b"*":
        if method != b"OPTIONS":
            return BadRequest(400, "'*' target is only allowed for OPTIONS")
        return None
    if version[0] != "1" or not _ABSOLUTE_FORM(target):
        return BadRequest(400, "invalid request target")
    return None


def empty_line_length(data: bytes, pos: int = 0) -> int:
    """The length of the empty line starting at ``data[pos]``: 2 for CRLF, 1 for a bare LF,
    0 when there is none, -1 when it cannot be told yet (a CR is the last byte)."""
    first = data[pos : pos + 1]
    if first == b"\n":
        return 1
    if first == b"\r":
        second = data[pos + 1 : pos + 2]
        if second == b"\n":
            return 2
        if not second:
            return -1
    return 0


def chunk_line_error(line: bytes) -> str | None:
    """The error in a complete chunk-framing line (with its LF), if any."""
    if line[-2:] != b"\r\n" or b"\r" in line[:-2]:
        return "chunk line must end with CRLF and contain no bare CR"
    return None


def chunk_size(line: bytes) -> int | str:
    """The size from a chunk-size line (without CRLF), or the error message."""
    size_part, _, ext = line.partition(b";")
    if not size_part or len(size_part) > 16 or not _HEX.issuperset(size_part):
        return f"invalid chunk size line {line[:40]!r}"
    if b"\x00" in ext:
        return "invalid chunk extension"
    return int(size_part, 16)


def refusal_bytes(status: int, extra: Headers) -> bytes:
    """:func:`error_response` as the protocol classes' ``error_response`` method (a
    refused WebSocket upgrade); they bind it as a staticmethod."""
    return error_response(status, extra=extra)


def error_response(status: int, *, extra: Headers = ()) -> bytes:  # type: ignore[assignment]
    """A complete minimal response for a request we refuse, written outside any parser.

    Used when the protocol cannot (or should not) frame the answer, e.g. after a parse
    error.
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

REASONS = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

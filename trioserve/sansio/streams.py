"""What HTTP/2 and HTTP/3 share below the trio layer: one request stream's framer interface,
the rules that turn pseudo-headers into a request, and a WebSocket's HTTP side on a stream.

Both multiplexed versions carry a request on a stream with the same shape: a head of
pseudo-headers and fields, DATA, an end (maybe with trailers), and resets either way. The
trio layer's one stream class (:class:`trioserve.server.stream.Stream`) talks to
:class:`StreamFramer`, which :class:`~.http2.H2Protocol` and :class:`~.http3.H3Protocol`
implement, and both protocols turn a request head into the same :class:`~.events.Request`
with :func:`request_from_fields`, so a request gets the same answer on either version
(and, through :func:`~.http11_rules.check_request`, on HTTP/1.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from .events import (
    BadRequest,
    Data,
    Headers,
    InformationalResponse,
    OutboundEvent,
    Request,
    Response,
)
from .headers import plain_error
from .http11_rules import check_request

__all__ = [
    "CONNECTION_FIELDS",
    "StreamAnswer",
    "StreamFramer",
    "field_section_size",
    "malformed_trailers",
    "request_from_fields",
]

# RFC 9113 8.2.2 / RFC 9114 4.2: fields that mean something only to one HTTP/1.1 hop. A
# request carrying one is malformed; an app's response has them dropped.
CONNECTION_FIELDS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
# RFC 9113 8.2.1 / RFC 9114 4.2: a field name is lower case, with no controls, space,
# non-ASCII or (past a pseudo-header's first byte) colon; a value has no NUL, CR or LF and
# no whitespace at either end. One regex call per name and per value.
_BAD_NAME = re.compile(rb"[\x00-\x20:A-Z\x7f-\xff]").search
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z").search


class StreamFramer(Protocol):
    """One multiplexed connection's protocol, as its streams use it (no I/O, no clock but
    ``now``). Every method takes the stream's id; none raises for a stream that is gone
    (they do nothing), except the ``send_*`` ones, which raise
    :class:`~.events.ProtocolError` for what cannot be framed."""

    def send_headers(self, stream_id: int, status: int, headers: Headers, end: bool) -> None:
        """A response (or 1xx) head; ``end`` ends the stream with it."""

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        """At most ``send_window()`` bytes of body; ``end`` ends the stream with them."""

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        """Trailers, which end the stream."""

    def send_window(self, stream_id: int) -> int:
        """Bytes that may be framed now (0: wait for the connection's credit signal)."""

    def is_open(self, stream_id: int) -> bool:
        """Whether our side of the stream may still be written."""

    def end_stream(self, stream_id: int) -> bool:
        """End our side with no data if it is still open; whether anything was framed."""

    def reset(self, stream_id: int, now: float) -> None:
        """Give up on the stream from our side (an internal error): both directions end."""

    def consumed(self, stream_id: int, size: int) -> bool:
        """The app took ``size`` body bytes: the peer may send as much again. True if
        frames are waiting to be sent (a window update)."""


def field_section_size(fields: Headers) -> int:
    """RFC 9114 4.2.2 / RFC 9113 6.5.2: name + value + 32 per field."""
    return sum(len(name) + len(value) + 32 for name, value in fields)


def request_from_fields(
    fields: Headers, http_version: str, *, max_size: int | None = None
) -> Request | BadRequest:
    """A request head's pseudo-headers and fields to a Request, or the refusal to answer
    with on this stream alone (never a connection error).

    The rules, the same for HTTP/2 and HTTP/3 (docs/architecture.md has them beside
    HTTP/1.1's): a malformed head (RFC 9113 8.1.1 / RFC 9114 4.1.2: a bad field name or
    value, a pseudo-header unknown, repeated, late or missing, an empty ``:path``, ``te``
    other than ``trailers``) is a 400 here, since neither h2 nor aioquic is let check it
    (either would end the whole connection); ``:authority`` wins and a ``Host`` that
    disagrees is malformed (RFC 9113 8.3.1, RFC 9114 4.3.1); connection-specific fields are
    malformed; 100-continue is honoured; CONNECT is 405 unless it is a WebSocket's (RFC
    8441, RFC 9220; another ``:protocol`` is 501); ``:method`` and ``:path`` follow
    :func:`~.http11_rules.check_request`; split cookies are joined.
    """
    if max_size is not None and field_section_size(fields) > max_size:
        return BadRequest(431, "request head over the field section limit")
    host = None
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    cookies: list[bytes] = []
    expects_continue = False
    for name, value in fields:
        if _BAD_VALUE(value) is not None:
            return _malformed(f"field {_text(name)} has an illegal value")
        if name[:1] == b":":
            if headers or cookies or name not in _REQUEST_PSEUDO or name in pseudo:
                return _malformed(f"pseudo-header {_text(name)} is unknown, repeated or late")
            pseudo[name] = value
        elif not name or _BAD_NAME(name) is not None:
            return _malformed(f"illegal field name {_text(name)}")
        elif name == b"cookie":
            cookies.append(value)
        else:
            refusal = _field_refusal(name, value, host)
            if refusal is not None:
                return refusal
            if name == b"host":
                host = value
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
            headers.append((name, value))
    method, path = pseudo.get(b":method", b""), pseudo.get(b":path", b"")
    authority, scheme = pseudo.get(b":authority"), pseudo.get(b":scheme")
    protocol = pseudo.get(b":protocol")
    refusal = _pseudo_set_refusal(pseudo, host) or _pseudo_refusal(
        method, path, protocol, scheme, http_version
    )
    if refusal is not None:
        return refusal
    if authority is not None:
        if host is not None and host != authority:
            return BadRequest(400, "Host disagrees with :authority")
        headers = [(b"host", authority), *[h for h in headers if h[0] != b"host"]]
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    return Request(
        method=method,
        target=path,
        headers=headers,
        http_version=http_version,
        expects_continue=expects_continue,
        authority=authority,
        protocol=protocol,
    )


def malformed_trailers(fields: Headers) -> str | None:
    """Why a request's trailers are malformed (RFC 9113 8.1, RFC 9114 4.1.2), or None.

    Trailers arrive after the request was handed to the app, so the caller resets the
    stream rather than answering; the fields themselves are dropped (ASGI has none)."""
    for name, value in fields:
        if not name or _BAD_NAME(name) is not None:
            return f"illegal trailer name {_text(name)}"
        if _BAD_VALUE(value) is not None:
            return f"trailer {_text(name)} has an illegal value"
        if name in CONNECTION_FIELDS or name == b"te":
            return f"connection-specific trailer {_text(name)}"
    return None


def _field_refusal(name: bytes, value: bytes, host: bytes | None) -> BadRequest | None:
    """The rules on one regular field's meaning (not its bytes)."""
    if name in CONNECTION_FIELDS:
        return _malformed(f"connection-specific field {_text(name)}")
    if name == b"te" and value.lower() != b"trailers":
        return _malformed("te other than trailers")
    if name == b"host" and host is not None:
        return _malformed("more than one Host")
    if name == b"content-length" and not value.isdigit():
        return _malformed("content-length is not a number")
    return None


def _pseudo_set_refusal(pseudo: dict[bytes, bytes], host: bytes | None) -> BadRequest | None:
    """RFC 9113 8.3.1-2 / RFC 9114 4.3.1: :method always; :scheme and :path unless the
    request is a plain CONNECT (a tunnel), which must have neither; a :path not empty;
    an http(s) request names its authority (:authority or Host)."""
    method = pseudo.get(b":method")
    if method is None:
        return _malformed("no :method")
    has_target = (b":scheme" in pseudo, b":path" in pseudo)
    if method == b"CONNECT" and b":protocol" not in pseudo:
        return _malformed("CONNECT with :scheme or :path") if any(has_target) else None
    if not all(has_target):
        return _malformed("no :scheme or :path")
    if not pseudo[b":path"]:
        return _malformed("empty :path")
    if pseudo[b":scheme"] in (b"http", b"https") and not (pseudo.get(b":authority") or host):
        return _malformed("neither :authority nor Host")
    return None


def _malformed(reason: str) -> BadRequest:
    return BadRequest(400, f"malformed request head: {reason}")


def _text(name: bytes) -> str:
    return repr(name.decode("latin-1"))


def _pseudo_refusal(
    method: bytes, path: bytes, protocol: bytes | None, scheme: bytes | None, version: str
) -> BadRequest | None:
    if protocol is not None:
        if method != b"CONNECT":
            return BadRequest(400, ":protocol without CONNECT")
        if not path or not scheme:
            return BadRequest(400, "extended CONNECT without :path or :scheme")
        if protocol != b"websocket":
            return BadRequest(501, f"unsupported :protocol {protocol.decode('latin-1')!r}")
        return check_request(b"GET", path, version)  # the target rules still apply
    if method == b"CONNECT":
        return BadRequest(405, "CONNECT (tunnels) is not served")
    if not method or not path or scheme not in (b"https", b"http"):
        return BadRequest(400, "request without :method, :scheme or :path")
    return check_request(method, path, version)


class StreamAnswer:
    """A WebSocket's HTTP side on an HTTP/2 or HTTP/3 stream (RFC 8441, RFC 9220), as the
    shared WebSocket code uses the HTTP/1.1 protocol: a response head becomes a HEADERS
    frame here, body bytes are returned for the caller to write as DATA, and the stream's
    close ends it. ``on_output`` wakes the connection's sender."""

    __slots__ = ("framer", "on_output", "stream_id")

    def __init__(
        self, framer: StreamFramer, stream_id: int, on_output: Callable[[], None]
    ) -> None:
        self.framer = framer
        self.stream_id = stream_id
        self.on_output = on_output

    def send(self, event: OutboundEvent) -> bytes:
        cls = type(event)
        if cls is Response or cls is InformationalResponse:
            if self.framer.is_open(self.stream_id):
                self.framer.send_headers(self.stream_id, event.status, event.headers, False)  # type: ignore[union-attr]
                self.on_output()
            return b""
        if cls is Data:
            return event.data  # type: ignore[union-attr]
        return b""  # EndData: the stream's close ends it

    def error_response(self, status: int, extra: Headers) -> bytes:
        """A plain-text refusal: HEADERS now, the body returned (as ``send`` does)."""
        headers, body = plain_error(status, extra)
        return self.send(Response(status, headers)) + body

    def take_trailing_data(self) -> bytes:
        return b""

    def close_after_response(self) -> None:
        """One stream ends; the connection carries on."""

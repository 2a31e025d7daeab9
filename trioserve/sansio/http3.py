"""HTTP/3 heads without I/O: request fields in, response fields out, refusals decided.

aioquic's ``H3Connection`` frames and QPACK-decodes; it already rejects malformed fields
(connection-specific names, upper case, bad pseudo-header order) as a connection error.
What a server still has to decide is here: the request-head size limit, what ``CONNECT``
and ``:protocol`` may be, the ``host`` header from ``:authority``, split cookies joined
(RFC 9114 4.2.1), and the response fields a QUIC stream must not carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import FrameType, H3Connection, Setting, encode_frame
from aioquic.quic.connection import QuicConnection

from .events import Data, Headers, InformationalResponse, OutboundEvent, Request, Response
from .headers import plain_error

__all__ = [
    "H3Refusal",
    "H3StreamAnswer",
    "ServerH3Connection",
    "request_from_fields",
    "response_fields",
    "trailer_fields",
]

# RFC 9114 4.2: these never appear on HTTP/3; an app that sets one has them dropped.
_CONNECTION_FIELDS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


class ServerH3Connection(H3Connection):
    """aioquic's H3 connection with our SETTINGS: the head size limit advertised, and
    ENABLE_CONNECT_PROTOCOL (aioquic's default) only when WebSockets are served."""

    def __init__(
        self, quic: QuicConnection, *, max_field_section_size: int, websockets: bool = True
    ) -> None:
        # Set before aioquic's constructor, which sends the SETTINGS frame.
        self.max_field_section_size = max_field_section_size
        self.websockets = websockets
        super().__init__(quic)

    def send_goaway(self, stream_id: int) -> None:
        """H3 GOAWAY (RFC 9114 5.2): requests on ``stream_id`` and above are not served."""
        control = self._local_control_stream_id
        if control is not None:
            frame = encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id))
            self._quic.send_stream_data(control, frame)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        if not self.websockets:
            settings.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self.max_field_section_size
        return settings


@dataclass(slots=True)
class H3Refusal:
    """Answer the request with this status instead of running the app."""

    status: int
    reason: str


def field_section_size(fields: Headers) -> int:
    """RFC 9114 4.2.2: name + value + 32 per field."""
    return sum(len(name) + len(value) + 32 for name, value in fields)


def request_from_fields(fields: Headers, *, max_size: int) -> Request | H3Refusal:
    """Turn a decoded HEADERS frame into a Request, or say how to refuse it."""
    if field_section_size(fields) > max_size:
        return H3Refusal(431, "request head over h3_max_field_section_size")
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    cookies: list[bytes] = []
    for name, value in fields:
        if name[:1] == b":":
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        elif name in _CONNECTION_FIELDS:
            return H3Refusal(400, f"connection-specific field {name.decode()!r}")
        else:
            headers.append((name, value))
    method = pseudo.get(b":method", b"")
    path = pseudo.get(b":path")
    authority = pseudo.get(b":authority")
    protocol = pseudo.get(b":protocol")
    if protocol is not None:
        if method != b"CONNECT":
            return H3Refusal(400, ":protocol without CONNECT")
        if not path or not pseudo.get(b":scheme"):
            return H3Refusal(400, "extended CONNECT without :path or :scheme")
        if protocol != b"websocket":
            return H3Refusal(501, f"unsupported :protocol {protocol.decode(errors='replace')!r}")
    elif method == b"CONNECT":
        return H3Refusal(405, "CONNECT (tunnels) is not served")
    elif not method or not path or pseudo.get(b":scheme") not in (b"https", b"http"):
        return H3Refusal(400, "request without :method, :scheme or :path")
    if authority is not None:
        # The host header a client may also send must not contradict :authority; the
        # scope gets one host, from :authority (RFC 9114 4.3.1).
        headers = [(b"host", authority), *[h for h in headers if h[0] != b"host"]]
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    expects_continue = any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in headers
    )
    return Request(
        method=method,
        target=path,
        headers=headers,
        http_version="3",
        expects_continue=expects_continue,
        protocol=protocol,
    )


class H3StreamAnswer:
    """A WebSocket's HTTP side on an HTTP/3 stream (RFC 9220), as the shared WebSocket code
    uses the HTTP/1.1 protocol: a response head becomes a HEADERS frame here, body bytes are
    returned for the caller to write as DATA, and the stream's close ends it.

    ``can_send`` says whether the stream may still be written (not reset or stopped);
    ``on_output`` wakes the connection's task to flush."""

    __slots__ = ("can_send", "h3", "on_output", "stream_id")

    def __init__(
        self,
        h3: H3Connection,
        stream_id: int,
        can_send: Callable[[], bool],
        on_output: Callable[[], None],
    ) -> None:
        self.h3 = h3
        self.stream_id = stream_id
        self.can_send = can_send
        self.on_output = on_output

    def send(self, event: OutboundEvent) -> bytes:
        if type(event) is Response or type(event) is InformationalResponse:
            if self.can_send():
                fields = response_fields(event.status, event.headers)
                self.h3.send_headers(self.stream_id, fields, False)
                self.on_output()
            return b""
        if type(event) is Data:
            return event.data
        return b""  # EndData: the stream's close ends it

    def error_response(self, status: int, extra: Headers) -> bytes:
        headers, body = plain_error(status, extra)
        return self.send(Response(status, headers)) + body

    def take_trailing_data(self) -> bytes:
        return b""

    def close_after_response(self) -> None:
        """One stream ends; the connection carries on."""


def trailer_fields(headers: Headers) -> Headers:
    """Response trailers: the app's fields minus those HTTP/3 forbids."""
    return [h for h in headers if h[0] not in _CONNECTION_FIELDS]


def response_fields(status: int, headers: Headers) -> Headers:
    """``:status`` first, then the app's fields minus those HTTP/3 forbids."""
    fields: Headers = [(b":status", b"%d" % status)]
    fields.extend(h for h in headers if h[0] not in _CONNECTION_FIELDS)
    return fields

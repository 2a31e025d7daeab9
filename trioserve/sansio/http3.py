"""HTTP/3 heads without I/O: aioquic's H3 connection with our SETTINGS, and the response
fields a QUIC stream carries.

aioquic's ``H3Connection`` frames and QPACK-decodes. :class:`ServerH3Connection`
advertises our SETTINGS (:class:`~.h3limits.LimitedH3Connection` adds the bounds on header
sections, and keeps request heads from aioquic's validation, which would end the
connection for a malformed field); the connection's events become trioserve's in
:mod:`.h3protocol`, and the request rules are :func:`~.streams.request_from_fields`,
shared with HTTP/2.
"""

from __future__ import annotations

from typing import Any

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import FrameType, H3Connection, Setting, encode_frame
from aioquic.quic.connection import QuicConnection

from .events import Headers
from .streams import CONNECTION_FIELDS, field_section_size

__all__ = [
    "ServerH3Connection",
    "field_section_size",
    "quic_tls_extension",
    "response_fields",
    "trailer_fields",
]


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


def quic_tls_extension(quic: QuicConnection, server_cert: str | None) -> dict[str, Any]:
    """The ASGI ``tls`` extension for a QUIC connection (always TLS 1.3)."""
    schedule = getattr(quic.tls, "key_schedule", None)
    suite = getattr(schedule, "cipher_suite", None)
    return {
        "server_cert": server_cert,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": int(suite) if suite is not None else None,
    }


def trailer_fields(headers: Headers) -> Headers:
    """Response trailers: the app's fields minus those HTTP/3 forbids."""
    return [h for h in headers if h[0] not in CONNECTION_FIELDS]


def response_fields(status: int, headers: Headers) -> Headers:
    """``:status`` first, then the app's fields minus those HTTP/3 forbids."""
    fields: Headers = [(b":status", b"%d" % status)]
    fields.extend(h for h in headers if h[0] not in CONNECTION_FIELDS)
    return fields

"""Cleartext HTTP/2 (h2c) on the HTTP/1.1 port: the prior-knowledge preface, and the
``Upgrade: h2c`` mechanism of RFC 7540 3.2 (dropped by RFC 9113, still sent by curl,
nghttp and others). The HTTP/1.1 connection uses these to hand itself over.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace

from .events import Headers, Request
from .http2 import PREFACE
from .streams import CONNECTION_FIELDS

__all__ = ["H2C_SWITCHING", "H2Switch", "h2c_settings", "is_h2_preface", "upgraded_request"]

H2C_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
_HOP_FIELDS = CONNECTION_FIELDS | {b"http2-settings", b"te"}


@dataclass(slots=True)
class H2Switch:
    """An HTTP/1.1 connection found to be HTTP/2: what the HTTP/2 connection starts from."""

    received: bytes = b""  # bytes already read (the prior-knowledge preface and more)
    upgrade: Request | None = None  # the request that asked for "Upgrade: h2c" (stream 1)
    settings: bytes | None = None  # its HTTP2-Settings value (base64url, checked)


def is_h2_preface(data: bytes) -> bool:
    """Whether a new connection's first bytes are HTTP/2's (h2 checks the rest of them)."""
    if data[:4] != b"PRI ":
        return False
    return data.startswith(PREFACE[:14]) or PREFACE.startswith(data)


def _tokens(headers: Headers, name: bytes) -> set[bytes]:
    return {
        token.strip().lower()
        for field, value in headers
        if field == name
        for token in value.split(b",")
    }


def h2c_settings(request: Request) -> bytes | None:
    """The HTTP2-Settings value of a request we can upgrade to h2c, or None to decline.

    RFC 7540 3.2 (the Upgrade mechanism RFC 9113 dropped, still sent by curl and others):
    exactly one valid HTTP2-Settings field; we also decline a request with a body (its body
    would have to be read before the switch) and a CONNECT.
    """
    headers = request.headers
    # Every new connection's first request passes here: the cheapest test first.
    values = [value for name, value in headers if name == b"http2-settings"]
    if len(values) != 1:
        return None
    if b"h2c" not in _tokens(headers, b"upgrade") or request.method == b"CONNECT":
        return None
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return None
    text = values[0].strip()
    text += b"=" * (-len(text) % 4)
    try:
        payload = base64.b64decode(text, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(payload) % 6:
        return None
    for i in range(0, len(payload), 6):
        code = int.from_bytes(payload[i : i + 2], "big")
        if not _valid_setting(code, int.from_bytes(payload[i + 2 : i + 6], "big")):
            return None
    return text  # h2 decodes it again


def _valid_setting(code: int, value: int) -> bool:
    """RFC 9113 6.5.2 ranges (unknown settings are ignored)."""
    if code in (0x2, 0x8):  # ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL
        return value in (0, 1)
    if code == 0x4:  # INITIAL_WINDOW_SIZE
        return value <= 2**31 - 1
    if code == 0x5:  # MAX_FRAME_SIZE
        return 2**14 <= value <= 2**24 - 1
    return True


def upgraded_request(request: Request) -> Request:
    """The h2c upgrade request as stream 1 sees it: HTTP/2, no hop-by-hop fields."""
    headers = [(name, value) for name, value in request.headers if name not in _HOP_FIELDS]
    authority = next((value for name, value in headers if name == b"host"), None)
    return replace(
        request,
        headers=headers,
        raw_headers=None,
        http_version="2",
        authority=authority,
        expects_continue=False,
    )

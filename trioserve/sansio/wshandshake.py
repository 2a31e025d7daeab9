"""The WebSocket handshake, before any frame: does a request ask for a WebSocket, is its
upgrade acceptable (RFC 6455 4.2.1 for HTTP/1.1; an extended CONNECT for HTTP/2, RFC 8441,
and HTTP/3, RFC 9220), what the HTTP side that carried it must offer the session
(:class:`HandshakeAnswer`), and the ASGI ``websocket`` scope.

Kept apart from :mod:`.websocket` (the session's state machine over wsproto): nothing here
holds state, and the HTTP/1.1 connection asks :func:`wants_websocket` of every request
without loading the session code's concerns.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Protocol

from .asgi import build_http_scope
from .events import Headers, OutboundEvent, Request


class HandshakeError(ValueError):
    """An upgrade request we refuse; ``status`` (400 or 426) and ``headers`` to answer with."""

    def __init__(self, status: int, reason: str, headers: Headers | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers or []


def tokens(headers: Headers, name: bytes, *, lower: bool = True) -> list[bytes]:
    """Comma-separated tokens of every ``name`` header (lowercased unless told not to)."""
    out: list[bytes] = []
    for key, value in headers:
        if key == name:
            value = value.lower() if lower else value
            out.extend(t.strip() for t in value.split(b","))
    return out


def wants_websocket(request: Request) -> bool:
    """Whether a request asks to become a WebSocket (``Upgrade: websocket``).

    Runs for every HTTP request, so it only looks for the one header.
    """
    for name, value in request.headers:
        if name == b"upgrade" and b"websocket" in value.lower():
            return b"websocket" in tokens(request.headers, b"upgrade")
    return False


# HTTP versions whose WebSockets are an extended CONNECT on a stream: HTTP/2 (RFC 8441)
# and HTTP/3 (RFC 9220).
EXTENDED_CONNECT_VERSIONS = ("2", "3")


def check_handshake(request: Request) -> bytes:
    """Validate an upgrade request (RFC 6455 4.2.1); return its Sec-WebSocket-Key.

    Raises :class:`HandshakeError` with the status to answer: 426 (and the version we
    speak) for a version other than 13, 400 for anything else.
    """
    headers = request.headers
    if request.http_version in EXTENDED_CONNECT_VERSIONS:
        return _check_extended_connect(request)
    if request.method != b"GET":
        raise HandshakeError(400, "WebSocket upgrade must use GET")
    if request.http_version != "1.1":
        raise HandshakeError(400, "WebSocket upgrade needs HTTP/1.1")
    if b"upgrade" not in tokens(headers, b"connection"):
        raise HandshakeError(400, "WebSocket upgrade without 'Connection: upgrade'")
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            raise HandshakeError(400, "WebSocket upgrade request with a body")
    versions = [v for k, v in headers if k == b"sec-websocket-version"]
    if versions != [b"13"]:
        raise HandshakeError(
            426,
            "unsupported Sec-WebSocket-Version",
            [(b"sec-websocket-version", b"13"), (b"upgrade", b"websocket")],
        )
    keys = [v for k, v in headers if k == b"sec-websocket-key"]
    if len(keys) != 1:
        raise HandshakeError(400, "WebSocket upgrade needs exactly one Sec-WebSocket-Key")
    try:
        decoded = base64.b64decode(keys[0], validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key")
    return keys[0]


def _check_extended_connect(request: Request) -> bytes:
    """RFC 8441 4/5: CONNECT with ``:protocol websocket``, version 13, and no key (the
    stream is the handshake). Returns b"" for the key."""
    if request.method != b"CONNECT" or request.protocol != b"websocket":
        raise HandshakeError(400, "WebSocket over HTTP/2 needs CONNECT with :protocol websocket")
    versions = [v for k, v in request.headers if k == b"sec-websocket-version"]
    if versions != [b"13"]:
        raise HandshakeError(
            400, "unsupported Sec-WebSocket-Version", [(b"sec-websocket-version", b"13")]
        )
    return b""


def wants_websocket_h2(request: Request) -> bool:
    """Whether an HTTP/2 request is an extended CONNECT for a WebSocket (RFC 8441)."""
    return request.method == b"CONNECT" and request.protocol == b"websocket"


class HandshakeAnswer(Protocol):
    """What a session needs of the HTTP side that carried the upgrade request: the
    HTTP/1.1 protocol object, or an HTTP/2 or HTTP/3 stream's
    (``sansio.streams.StreamAnswer``)."""

    def send(self, event: OutboundEvent) -> bytes: ...

    def take_trailing_data(self) -> bytes: ...

    def close_after_response(self) -> None: ...

    def error_response(self, status: int, extra: Headers) -> bytes:
        """A plain-text refusal of the upgrade: the bytes to write (an HTTP/2 or HTTP/3
        stream frames the head itself and returns the body)."""


def build_websocket_scope(
    request: Request,
    *,
    scheme: str,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    state: dict[str, Any] | None,
    raw_header_case: bool = False,
) -> dict[str, Any]:
    """The ASGI ``websocket`` scope (spec 2.4): http's fields minus ``method``, plus
    ``subprotocols`` and the ``websocket.http.response`` extension (denial responses)."""
    scope = build_http_scope(
        request,
        scheme="wss" if scheme in ("https", "wss") else "ws",
        client=client,
        server=server,
        root_path=root_path,
        state=state,
        raw_header_case=raw_header_case,
        extensions={"websocket.http.response": {}},
    )
    scope["type"] = "websocket"
    del scope["method"]
    scope["subprotocols"] = [
        t.decode("latin-1")
        for t in tokens(request.headers, b"sec-websocket-protocol", lower=False)
        if t
    ]
    return scope

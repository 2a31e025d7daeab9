"""The WebSocket upgrade: is it one, is it valid, its scope, and the deflate offer."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from wsproto.extensions import PerMessageDeflate

from .asgi import build_http_scope
from .events import Headers, Request

# Headers the server writes itself in the 101; an app's copy of them is dropped.
HANDSHAKE_HEADERS = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
        b"transfer-encoding",
    }
)


class HandshakeError(ValueError):
    """An upgrade request we refuse; ``status`` (400 or 426) and ``headers`` to answer with."""

    def __init__(self, status: int, reason: str, headers: Headers | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers or []


def _tokens(headers: Headers, name: bytes, *, lower: bool = True) -> list[bytes]:
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
            return b"websocket" in _tokens(request.headers, b"upgrade")
    return False


def check_handshake(request: Request) -> bytes:
    """Validate an upgrade request (RFC 6455 4.2.1); return its Sec-WebSocket-Key.

    Raises :class:`HandshakeError` with the status to answer: 426 (and the version we
    speak) for a version other than 13, 400 for anything else.
    """
    headers = request.headers
    if request.method != b"GET":
        raise HandshakeError(400, "WebSocket upgrade must use GET")
    if request.http_version != "1.1":
        raise HandshakeError(400, "WebSocket upgrade needs HTTP/1.1")
    if b"upgrade" not in _tokens(headers, b"connection"):
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
        for t in _tokens(request.headers, b"sec-websocket-protocol", lower=False)
        if t
    ]
    return scope


def negotiate_deflate(headers: Headers) -> tuple[PerMessageDeflate, bytes] | None:
    """Accept the first acceptable permessage-deflate offer: (extension, response value)."""
    for key, value in headers:
        if key != b"sec-websocket-extensions":
            continue
        for offer in value.decode("latin-1").split(","):
            name = offer.split(";", 1)[0].strip().lower()
            if name != PerMessageDeflate.name:
                continue
            ext = PerMessageDeflate()
            accepted = ext.accept(offer.strip())
            if accepted is None or accepted is False:
                continue
            response = PerMessageDeflate.name
            if isinstance(accepted, str) and accepted:
                response += "; " + accepted
            return ext, response.encode("latin-1")
    return None

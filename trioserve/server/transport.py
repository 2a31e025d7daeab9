"""Per-connection plumbing: who is on the other end, TLS, and closing politely."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any

import trio

from ..logs import error_log
from ..sansio.proxy import V2_MAX, ProxyHeader, ProxyProtocolError, parse_proxy_header
from .sockstream import SocketStream

LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024


@dataclass(slots=True)
class ConnectionInfo:
    """Addresses and scheme of one connection, as the ASGI scope wants them."""

    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    scheme: str = "http"
    # The ASGI ``tls`` extension dict for TLS connections (copied into each scope).
    tls: dict[str, Any] | None = None

    @property
    def client_text(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unix-client"


def connection_info(sock: socket.socket, *, secure: bool) -> ConnectionInfo:
    scheme = "https" if secure else "http"
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return ConnectionInfo(None, (name, None) if name else None, scheme)
    try:
        peer = sock.getpeername()
        client: tuple[str, int] | None = (str(peer[0]), int(peer[1]))
    except OSError:
        client = None
    local = sock.getsockname()
    server = _SERVER_ADDRESSES.get(local)
    if server is None:
        server = (str(local[0]), int(local[1]))
        if len(_SERVER_ADDRESSES) < _SERVER_ADDRESSES_MAX:
            _SERVER_ADDRESSES[local] = server
    return ConnectionInfo(client, server, scheme)


# Every connection to one local address has the same ``server`` pair: share one tuple
# instead of keeping a copy per connection (~0.1 KiB per idle connection). Bounded: a
# server listens on a handful of addresses.
_SERVER_ADDRESSES: dict[Any, tuple[str, int]] = {}
_SERVER_ADDRESSES_MAX = 256


async def close_transport(stream: trio.abc.Stream) -> None:
    """Close a connection's stream now, without waiting on the peer.

    A plain socket closes at once (``socket.close()`` never blocks). Going through
    ``trio.aclose_forcefully`` for it would cost a deliberately cancelled scope and a
    checkpoint per connection, about an eighth of the server's CPU per connection with
    ``Connection: close``. A TLS stream's ``aclose()`` may wait for the peer's
    close_notify, so that keeps the forceful path.
    """
    if type(stream) is SocketStream:
        stream.close()
    else:
        await trio.aclose_forcefully(stream)


async def linger_close(stream: trio.abc.Stream) -> None:
    """Close after an error answer without resetting it away.

    Closing a socket with unread input makes the kernel send RST, which can destroy the
    response we just wrote before the client reads it. So: send FIN, then read and drop
    what the client still sends, for a bounded time and amount, then close.
    """
    try:
        if isinstance(stream, SocketStream):
            await stream.send_eof()
        with trio.move_on_after(LINGER_SECONDS):
            received = 0
            while received < LINGER_BYTES:
                data = await stream.receive_some(65536)
                if not data:
                    break
                received += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
        pass
    await close_transport(stream)


async def tls_handshake(
    stream: SocketStream, context: ssl.SSLContext, timeout: float
) -> trio.SSLStream[SocketStream] | None:
    """Wrap and handshake; a stalled or failed handshake is dropped (None)."""
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    try:
        with trio.fail_after(timeout):
            await tls.do_handshake()
    except trio.TooSlowError:
        error_log.debug("TLS handshake timed out")
        await trio.aclose_forcefully(stream)
        return None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        error_log.debug("TLS handshake failed: %s", exc.__cause__ or exc)
        await trio.aclose_forcefully(stream)
        return None
    return tls


# --- the ASGI TLS extension ---------------------------------------------------------------

_TLS_VERSIONS = {"SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303}
_TLS_VERSIONS["TLSv1.3"] = 0x0304


def read_server_cert(certfile: str | None) -> str | None:
    """The first PEM certificate of ``certfile`` (the ASGI ``server_cert`` value)."""
    if not certfile:
        return None
    try:
        with open(certfile, encoding="ascii") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    end_marker = "-----END CERTIFICATE-----"
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find(end_marker, start)
    if start == -1 or end == -1:
        return None
    return text[start : end + len(end_marker)] + "\n"


def _cipher_ids(context: ssl.SSLContext) -> dict[str, int]:
    """OpenSSL cipher names to their 16-bit IANA code points (the ASGI spec wants those)."""
    out = {}
    for cipher in context.get_ciphers():
        out[cipher["name"]] = int(cipher["id"]) & 0xFFFF
    return out


def _rfc4514_name(subject: Any) -> str | None:
    if not subject:
        return None
    parts = []
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
        "streetAddress": "STREET",
        "domainComponent": "DC",
        "userId": "UID",
    }
    for rdn in reversed(subject):
        pieces = []
        for key, value in rdn:
            escaped = str(value)
            for char in '\\,+"<>;=':
                escaped = escaped.replace(char, "\\" + char)
            pieces.append(f"{short.get(key, key)}={escaped}")
        parts.append("+".join(pieces))
    return ",".join(parts)


def tls_extension(
    tls: trio.SSLStream[Any], server_cert: str | None, cipher_ids: dict[str, int]
) -> dict[str, Any]:
    """The ASGI ``tls`` scope extension for a finished handshake.

    ``client_cert_chain`` holds the client's leaf certificate (Python < 3.13 does not expose
    the rest of the verified chain); ``client_cert_error`` is None because a handshake that
    failed verification never reaches the app.
    """
    der = tls.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    name = None
    if der:
        try:
            name = _rfc4514_name(tls.getpeercert().get("subject"))
        except (ValueError, AttributeError):  # pragma: no cover - unverified cert
            name = None
    cipher = tls.cipher()
    version = tls.version()
    return {
        "server_cert": server_cert,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": cipher_ids.get(cipher[0]) if cipher else None,
    }


class TLSInfoCache:
    """Per-listener values computed once: server cert PEM and the cipher id table."""

    def __init__(self, context: ssl.SSLContext, certfile: str | None) -> None:
        self.server_cert = read_server_cert(certfile)
        self.cipher_ids = _cipher_ids(context)


# --- the PROXY protocol ------------------------------------------------------------------


async def _recv_exactly(stream: SocketStream, size: int) -> bytes:
    chunks = []
    while size > 0:
        data = await stream.receive_some(size)
        if not data:
            raise ProxyProtocolError("connection closed inside the PROXY header")
        chunks.append(data)
        size -= len(data)
    return b"".join(chunks)


async def read_proxy_header(stream: SocketStream, timeout: float) -> ProxyHeader:
    """Consume exactly the PROXY header from the socket, leaving the client's bytes unread.

    Peeks (MSG_PEEK) so that nothing after the header is taken from the kernel buffer:
    TLS or HTTP then reads the socket as if the header had never been there. Raises
    :class:`ProxyProtocolError` for a malformed or missing header, and
    :class:`trio.TooSlowError` if it does not arrive within ``timeout``.
    """
    with trio.fail_after(timeout):
        try:
            return await _read_proxy_header(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ProxyProtocolError(f"connection lost inside the PROXY header: {exc}") from None


async def _read_proxy_header(stream: SocketStream) -> ProxyHeader:
    consumed = b""
    while True:
        peeked = await stream.peek(V2_MAX)
        if not peeked:
            raise ProxyProtocolError("connection closed before the PROXY header")
        header = parse_proxy_header(consumed + peeked)
        if header is None:
            # Everything peeked belongs to the unfinished header: take it and wait.
            consumed += await _recv_exactly(stream, len(peeked))
            continue
        await _recv_exactly(stream, header.length - len(consumed))
        return header

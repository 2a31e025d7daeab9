"""Per-connection plumbing: who is on the other end, TLS, and closing politely."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import trio

from ..logs import error_log

LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024


@dataclass(slots=True)
class ConnectionInfo:
    """Addresses and scheme of one connection, as the ASGI scope wants them."""

    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    scheme: str = "http"

    @property
    def client_text(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unix-client"


def connection_info(sock: trio.socket.SocketType, *, secure: bool) -> ConnectionInfo:
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
    return ConnectionInfo(client, (str(local[0]), int(local[1])), scheme)


async def linger_close(stream: trio.abc.Stream) -> None:
    """Close after an error answer without resetting it away.

    Closing a socket with unread input makes the kernel send RST, which can destroy the
    response we just wrote before the client reads it. So: send FIN, then read and drop
    what the client still sends, for a bounded time and amount, then close.
    """
    try:
        if isinstance(stream, trio.SocketStream):
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
    await trio.aclose_forcefully(stream)


async def tls_handshake(
    stream: trio.SocketStream, context: ssl.SSLContext, timeout: float
) -> trio.SSLStream[trio.SocketStream] | None:
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

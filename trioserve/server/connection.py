"""The one entry point for an accepted connection: pick its protocol and serve it.

Both the accept loop (:mod:`.serve`, after the PROXY header and TLS) and the in-memory test
transport (:mod:`trioserve.testing.memory`) call :func:`handle_stream`, so the test
transport goes through exactly the real server's connection lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from ..logs import error_log
from ..sansio.h2c import H2Switch
from .faults import belongs_to_server
from .http2 import HTTP2Connection
from .http11 import HTTP11Connection
from .peer import STREAM_ERRORS
from .state import ServerState
from .transport import ConnectionInfo, close_transport


class Connection(Protocol):
    """What serves one connection: built from the stream, run until it ends."""

    # Set by an HTTP/1.1 connection that found HTTP/2 on its stream (the prior-knowledge
    # preface, or ``Upgrade: h2c``): what the HTTP/2 connection takes over. None otherwise.
    switch: H2Switch | None

    async def run(self) -> None: ...


ConnectionClass = Callable[
    [trio.abc.Stream, ServerState, ConnectionInfo, trio.Nursery], Connection
]

# By application protocol name (ALPN's).
PROTOCOLS: dict[str, ConnectionClass] = {"http/1.1": HTTP11Connection, "h2": HTTP2Connection}


def negotiated_protocol(stream: trio.abc.Stream) -> str:
    """The application protocol TLS negotiated (ALPN), "http/1.1" without TLS or ALPN.

    A cleartext stream may still turn out to be HTTP/2: the HTTP/1.1 connection hands
    over on the prior-knowledge preface (``PRI * HTTP/2.0``) or an accepted
    ``Upgrade: h2c`` (``HTTP11Connection.switch``), so HTTP/1.1 pays nothing extra.
    """
    if isinstance(stream, trio.SSLStream):
        return stream.selected_alpn_protocol() or "http/1.1"
    return "http/1.1"


async def handle_stream(
    stream: trio.abc.Stream,
    state: ServerState,
    info: ConnectionInfo,
    nursery: trio.Nursery,
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Serve one accepted stream until it ends; the stream is closed afterwards.

    ``nursery`` takes the connection's helper tasks (a WebSocket's pump and shutdown
    close). ``on_error`` also sees an unexpected error (a server bug), after it is logged.
    """
    state.connections += 1
    try:
        connection_class = PROTOCOLS.get(negotiated_protocol(stream), HTTP11Connection)
        connection = connection_class(stream, state, info, nursery)
        await connection.run()
        # HTTP/1.1 found HTTP/2 (the preface, or Upgrade: h2c): it hands the stream over.
        switch = connection.switch
        if switch is not None:
            del connection
            await HTTP2Connection(stream, state, info, nursery, switch=switch).run()
    except STREAM_ERRORS:
        pass
    except Exception as exc:
        error_log.exception("Unexpected error on connection from %s", info.client_text)
        if on_error is not None:
            on_error(exc)
    except BaseException as exc:
        # Never let one connection take the server's connections nursery down.
        if belongs_to_server(exc):
            raise
        error_log.error("Unexpected error on connection from %s", info.client_text, exc_info=exc)
    finally:
        state.connections -= 1
        await close_transport(stream)

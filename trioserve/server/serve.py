"""``serve()``: listeners, one task per connection, lifespan, and graceful shutdown.

Shutdown in one place: a trigger (event or signal) closes the listeners, cancels idle
keep-alive connections at once, gives the connections nursery a deadline of
``graceful_timeout`` (which holds, since no send to a client is ever shielded), and then
runs lifespan shutdown.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..binds import (
    Bind,
    close_sockets,
    create_quic_sockets,
    create_sockets,
    socket_url,
)
from ..config import Config, ConfigError, verify_flags_value
from ..logs import error_log
from ..sansio.http11_choice import parser_name
from ..sansio.proxy import ProxyProtocolError, trusted_peers
from .connection import handle_stream
from .lifecycle import running
from .sockstream import SocketStream, StreamListener
from .state import ServerState
from .transport import (
    ConnectionInfo,
    TLSInfoCache,
    connection_info,
    read_proxy_header,
    tls_extension,
    tls_handshake,
)

if TYPE_CHECKING:  # aioquic (the h3 extra) is imported only when quic_bind is set
    from .quic import QuicSocket


def create_ssl_context(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # RFC 9113 9.2: TLS 1.2 or later, no compression, no renegotiation (and 9.2.2: the
    # default cipher string is ECDHE with AEAD only).
    context.options |= ssl.OP_NO_COMPRESSION
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.set_ciphers(config.ciphers)
    context.load_cert_chain(
        certfile=config.certfile,  # type: ignore[arg-type]
        keyfile=config.keyfile,
        password=config.keyfile_password,
    )
    protocols = [p for p in config.alpn_protocols if p in ("h2", "http/1.1")] or ["http/1.1"]
    context.set_alpn_protocols(protocols)
    if config.ca_certs:
        context.load_verify_locations(config.ca_certs)
    if config.verify_mode:
        context.verify_mode = ssl.VerifyMode[config.verify_mode]
    if config.verify_flags:
        context.verify_flags = ssl.VerifyFlags(verify_flags_value(config.verify_flags))
    if config.ssl_version in ("TLSv1_2", "TLSv1_3"):  # Uvicorn's --ssl-version: pin it
        context.minimum_version = context.maximum_version = ssl.TLSVersion[config.ssl_version]
    return context


class _Listener:
    """One listening socket and what its connections need to know about it."""

    def __init__(
        self,
        bind: Bind,
        sock: socket.socket,
        ssl_context: ssl.SSLContext | None,
        certfile: str | None = None,
    ) -> None:
        self.bind = bind
        self.url = socket_url(bind, sock)
        # Accepts into trioserve's lean SocketStream.
        self.stream_listener = StreamListener(sock)
        self.ssl_context = ssl_context if bind.secure else None
        self.tls_info = TLSInfoCache(self.ssl_context, certfile) if self.ssl_context else None


def _handle_connection(
    stream: SocketStream, listener: _Listener, state: ServerState, connections: trio.Nursery
) -> Coroutine[Any, Any, None]:
    """The coroutine a connection's task runs; whatever happens, the socket is closed.

    A plain function: for plain TCP without a PROXY header it returns
    :func:`handle_stream`'s coroutine itself, so the task has one frame less to pass
    through each time it wakes (several times per request).
    """
    if listener.ssl_context is None and not state.config.proxy_protocol:
        try:
            info = connection_info(stream.socket, secure=False)
        except OSError:  # the peer is already gone
            stream.close()
            return _nothing()
        return handle_stream(stream, state, info, connections)
    return _prepare_and_handle(stream, listener, state, connections)


async def _nothing() -> None:
    """The task of a connection that was gone before it started."""


async def _prepare_and_handle(
    stream: SocketStream, listener: _Listener, state: ServerState, connections: trio.Nursery
) -> None:
    """PROXY header and TLS, then :func:`handle_stream`."""
    prepared = None
    try:
        prepared = await _prepare(stream, listener, state)
    finally:
        if prepared is None:  # refused, failed or cancelled before HTTP began
            stream.close()
    if prepared is not None:
        transport, info = prepared
        await handle_stream(transport, state, info, connections)


async def _prepare(
    stream: SocketStream, listener: _Listener, state: ServerState
) -> tuple[trio.abc.Stream, ConnectionInfo] | None:
    """The stream HTTP will read (after PROXY and TLS) and who is on the other end."""
    # (TCP_NODELAY is set by StreamListener.accept.)
    try:
        info = connection_info(stream.socket, secure=listener.ssl_context is not None)
    except OSError:
        return None
    if state.config.proxy_protocol:
        # The PROXY header comes before anything else, TLS included.
        try:
            header = await read_proxy_header(stream, state.config.request_head_timeout)
        except (ProxyProtocolError, trio.TooSlowError, OSError) as exc:
            error_log.info("%s: bad PROXY protocol header: %s", info.client_text, exc or "timeout")
            return None
        trusted = trusted_peers(tuple(state.config.forwarded_allow_ips))
        if header.source is not None and trusted.trusts(info.client[0] if info.client else None):
            info.client = header.source
            info.server = header.destination
    if listener.ssl_context is None:
        return stream, info
    tls = await tls_handshake(stream, listener.ssl_context, state.config.ssl_handshake_timeout)
    if tls is None:
        return None
    if listener.tls_info is not None:
        info.tls = tls_extension(tls, listener.tls_info.server_cert, listener.tls_info.cipher_ids)
    return tls, info


# accept() errors that mean "out of file descriptors or buffers for now": wait, then retry.
_ACCEPT_CAPACITY_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
    if hasattr(errno, name)
)
# Back-off between accept() retries while out of descriptors: doubles up to the maximum.
_ACCEPT_RETRY_SECONDS = 0.05
_ACCEPT_RETRY_MAX_SECONDS = 1.0
_TASK_NAME = f"{__name__}._handle_connection"


class _AcceptBackoff:
    """One out-of-descriptors episode of a listener: logged once when it starts (not ten
    times a second, which would flood the log exactly when the machine is struggling) and
    once when accept() works again, with how many attempts failed in between."""

    __slots__ = ("delay", "failures", "started", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.failures = 0
        self.started = 0.0
        self.delay = _ACCEPT_RETRY_SECONDS

    async def failed(self, exc: OSError) -> None:
        """Log the episode's first failure, then wait a growing delay before the retry."""
        if not self.failures:
            self.started = trio.current_time()
            self.delay = _ACCEPT_RETRY_SECONDS
            error_log.error(
                "accept() on %s failed with %s (%s): not accepting new connections until "
                "descriptors free up; retrying with back-off",
                self.url,
                errno.errorcode.get(exc.errno or 0, "?"),
                os.strerror(exc.errno or 0),
            )
        self.failures += 1
        await trio.sleep(self.delay)
        self.delay = min(self.delay * 2, _ACCEPT_RETRY_MAX_SECONDS)

    def recovered(self) -> None:
        if self.failures:
            error_log.warning(
                "accept() on %s works again after %d failed attempt(s) over %.1fs",
                self.url,
                self.failures,
                trio.current_time() - self.started,
            )
            self.failures = 0


async def _accept_loop(listener: _Listener, state: ServerState, connections: trio.Nursery) -> None:
    """Accept and start one task per connection, straight into the connections nursery.

    Not ``trio.serve_listeners``: its per-connection wrapper task frame and its
    ``trio.aclose_forcefully`` after the handler (a deliberately cancelled scope, on a
    socket ``_handle_connection`` has already closed) cost memory per idle connection and
    CPU per closed one.
    """
    stream_listener = listener.stream_listener
    backoff = _AcceptBackoff(listener.url)
    while True:
        try:
            stream = await stream_listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            await backoff.failed(exc)
            continue
        if backoff.failures:
            backoff.recovered()
        # A fixed name: trio would otherwise format a new name string for every task.
        connections.start_soon(
            _handle_connection, stream, listener, state, connections, name=_TASK_NAME
        )


async def _watch_signals(
    trigger: trio.Event,
    connections_scope: list[trio.CancelScope],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. A second SIGINT (Ctrl-C): cancel now.

    A repeated SIGTERM keeps draining: process managers and ``timeout`` may send it more
    than once, and that should not cut requests that ``graceful_timeout`` still allows.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # Handlers are in place before "Running on" is logged: a SIGTERM sent as soon as
        # the server says it is up must not kill the process with the default action.
        task_status.started()
        async for signum in signals:
            if not trigger.is_set():
                error_log.info("Received %s, shutting down", signal.Signals(signum).name)
                trigger.set()
            elif signum != signal.SIGINT:
                error_log.info("Received SIGTERM again; still draining")
            else:
                error_log.info(
                    "Received %s again, cancelling in-flight work", signal.Signals(signum).name
                )
                for scope in connections_scope:
                    scope.cancel()


async def serve(
    app: Any,
    config: Config | None = None,
    *,
    sockets: Sequence[tuple[Bind, socket.socket]] | None = None,
    shutdown_trigger: trio.Event | None = None,
    handle_signals: bool = False,
    on_max_requests: Callable[[], None] | None = None,
    metrics_path: str | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` is set (or a signal, or cancellation).

    Use as ``urls = await nursery.start(serve, app, config)``: it reports the bound URLs
    once it accepts connections (port 0 resolved). Cancelling the surrounding scope stops
    it at once; setting ``shutdown_trigger`` stops it gracefully. After ``max_requests``
    (plus jitter) requests it calls ``on_max_requests`` (a supervisor's worker asks for its
    replacement first), or else shuts down gracefully.

    Metrics, StatsD and the admin listener follow the config; a supervisor passes
    ``metrics_path``, the file its worker counts into.

    Raises :class:`~trioserve.errors.LifespanFailure` if the app's startup fails, and
    ``OSError`` if an address cannot be bound.
    """
    config = config or Config()
    trigger = shutdown_trigger if shutdown_trigger is not None else trio.Event()
    owned = sockets is None
    bound = list(sockets) if sockets is not None else create_sockets(config)
    quic_bound: list[tuple[Bind, socket.socket]] = []
    try:
        if config.quic_bind:
            if not config.ssl_enabled:
                raise ConfigError("quic_bind needs TLS: set certfile and keyfile")
            # Under the supervisor a replacement worker binds before its predecessor leaves.
            supervised = config.workers > 1 or config.use_reloader
            quic_bound = create_quic_sockets(config, reuse_port=supervised)
        ssl_context = create_ssl_context(config) if config.ssl_enabled else None
        listeners = [_Listener(bind, sock, ssl_context, config.certfile) for bind, sock in bound]
        lifecycle = running(
            app,
            config,
            trigger=trigger,
            on_max_requests=on_max_requests,
            metrics_path=metrics_path,
            quic_bound=quic_bound,
        )
        async with lifecycle as state:
            quic_sockets = _quic_sockets(quic_bound, state)
            await _serve_connections(
                listeners, state, trigger, handle_signals, task_status, quic_sockets
            )
    finally:
        for _, sock in quic_bound:
            sock.close()
        if owned:
            close_sockets(bound)


def _quic_sockets(bound: list[tuple[Bind, socket.socket]], state: ServerState) -> list[QuicSocket]:
    """HTTP/3 servers for the UDP sockets (aioquic is imported only when they exist)."""
    if not bound:
        return []
    from .quic import open_quic_socket

    return [open_quic_socket(sock, state) for _, sock in bound]


async def _serve_connections(
    listeners: list[_Listener],
    state: ServerState,
    trigger: trio.Event,
    handle_signals: bool,
    task_status: trio.TaskStatus[list[str]],
    quic_sockets: Sequence[QuicSocket] = (),
) -> None:
    connections_scopes: list[trio.CancelScope] = []
    async with trio.open_nursery() as control:
        if handle_signals:
            await control.start(_watch_signals, trigger, connections_scopes)
        async with trio.open_nursery() as connections:
            connections_scopes.append(connections.cancel_scope)
            for quic in quic_sockets:
                # Routing continues while connections drain; control's cancel ends it.
                control.start_soon(quic.receive_loop, connections)
                state.shutdown_hooks.add(quic.begin_shutdown)
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(_accept_loop, listener, state, connections)
                urls = [listener.url for listener in listeners]
                for url in urls:
                    error_log.info("Running on %s (CTRL + C to quit)", url)
                for quic in quic_sockets:
                    error_log.info("Running on %s (HTTP/3 over QUIC, UDP)", quic.url)
                # "auto" depends on what is installed: say what it picked.
                error_log.info("HTTP/1.1 parser: %s", parser_name(state.config.http))
                state.metrics.set_lifespan("serving")
                task_status.started(urls)
                await trigger.wait()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                listener.stream_listener.close()
            error_log.info(
                "Shutting down: %d request(s) in flight, waiting up to %ss",
                state.in_flight,
                state.config.graceful_timeout,
            )
            state.begin_shutdown()
            connections.cancel_scope.deadline = trio.current_time() + state.config.graceful_timeout
        control.cancel_scope.cancel()
    scope = connections.cancel_scope
    # Cancelled before the deadline: a second Ctrl-C did it, and said so already.
    if scope.cancelled_caught and trio.current_time() >= scope.deadline:
        error_log.warning("Graceful shutdown timed out; remaining connections were cancelled")

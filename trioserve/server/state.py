"""What one running server shares with its connections: passed down, never global."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..config import Config
from ..importer import ASGIApp
from ..metrics.counters import Metrics
from ..sansio.asgi import EXTENSIONS_WITHOUT_TE, build_http_scope, response_extensions
from ..sansio.events import Headers, Request
from ..sansio.headers import DateHeader, parse_default_headers
from ..sansio.proxy import honoured_headers, prepare_scope, trusted_peers
from ..sansio.requestid import RequestIds
from .keepalive import KeepAliveWaits
from .transport import ConnectionInfo

# build_http_scope or build_websocket_scope: same arguments, different scope types.
ScopeBuilder = Callable[..., dict[str, Any]]

SERVER_HEADER = (b"server", b"trioserve")

# Seconds an idle connection still gets once draining begins: a request already on its way
# (or in the socket buffer) is answered, with Connection: close, instead of being cut by
# a close that crosses it (the HTTP/1.1 keep-alive race). Same for a connection accepted
# just before shutdown that has not sent its first request yet.
FIRST_REQUEST_GRACE = 0.5


@dataclass(eq=False)
class ServerState:
    """Per-``serve()`` state: config, app, lifespan state, shutdown and concurrency."""

    config: Config
    app: ASGIApp
    lifespan_state: dict[str, Any] | None = None
    shutting_down: bool = False
    shutdown_event: trio.Event = field(default_factory=trio.Event)
    # Idle connections between requests: at shutdown they get a moment (FIRST_REQUEST_GRACE),
    # not a cancel, since a client may have its next request in flight.
    idle_scopes: set[trio.CancelScope] = field(default_factory=set)
    # Connections still waiting for their first request: the same grace at shutdown.
    fresh_scopes: set[trio.CancelScope] = field(default_factory=set)
    # The same waits on plain sockets, without a cancel scope each (server/keepalive.py).
    keep_alive_waits: KeepAliveWaits = field(default_factory=KeepAliveWaits)
    # Called once when shutdown begins (open WebSockets start their 1001 close from here,
    # rather than each keeping a task parked on shutdown_event).
    shutdown_hooks: set[Callable[[], None]] = field(default_factory=set)
    in_flight: int = 0
    requests_served: int = 0
    request_limit: int | None = None
    on_request_limit: Callable[[], None] | None = None
    pid: int = field(default_factory=os.getpid)
    # What metrics see (a no-op Metrics when they are off) and the live numbers they sample.
    metrics: Metrics = field(default_factory=Metrics)
    connections: int = 0
    websockets: int = 0
    request_ids: RequestIds | None = None
    # The request-id header's name when ids are echoed in responses, else empty.
    echo_id: bytes = b""
    # Alt-Svc fields advertising HTTP/3 (quic_bind) on HTTP/1.1 responses; not on HTTP/3.
    alt_svc: Headers = field(default_factory=list)
    _date: DateHeader = field(default_factory=DateHeader)
    _static_headers: Headers = field(default_factory=list)
    _headers_second: int = -1
    _headers: Headers = field(default_factory=list)
    # Request header names that need more than the usual scope (see http_scope).
    _watched: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        static: Headers = parse_default_headers(self.config.headers)
        # A configured "Server: ..." replaces ours rather than adding a second one.
        if self.config.include_server_header and all(n != b"server" for n, _ in static):
            static.insert(0, SERVER_HEADER)
        self._static_headers = static
        watched = {b"te"}  # (TE: trailers changes the response extensions)
        if self.config.proxy_headers and _trusts_anyone(self.config.forwarded_allow_ips):
            watched |= honoured_headers(tuple(self.config.forwarded_headers))
        if self.config.request_id_header:
            self.request_ids = RequestIds(self.config.request_id_header)
            watched.add(self.request_ids.header)
            if self.config.request_id_response:
                self.echo_id = self.request_ids.header
        self._watched = frozenset(watched)

    def http_scope(
        self, request: Request, info: ConnectionInfo
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """:meth:`scope_for` an HTTP request, and the response extensions its scope
        advertises (:func:`~..sansio.asgi.response_extensions`: a shared dict).

        Proxy headers, the request id and ``TE: trailers`` each looked for a header of their
        own. Most requests carry none of those, so one pass over the names decides:
        without one of them the scope gets a new id and the extensions of its version
        directly; with one, each part is settled as :meth:`scope_for` settles it.
        """
        watched = self._watched
        for name, _ in request.headers:
            if name in watched:
                plain = False
                break
        else:
            plain = True
        tls = info.tls
        if plain:
            try:
                advertised = EXTENSIONS_WITHOUT_TE[request.http_version]
            except KeyError:
                advertised = response_extensions(request)
            extensions: dict[str, Any] = {} if tls is not None else {**advertised}
        else:
            advertised = response_extensions(request)
            extensions = {}
        scope = self._build(build_http_scope, request, info, extensions=extensions)
        if not plain:
            self._settle(scope, request, info)
            extensions.update(advertised)
            return scope, advertised
        if tls is not None:  # (the tls extension first, as _settle() orders them)
            prepare_scope(scope, proxy_headers=False, forwarded_allow_ips=(), tls=tls)
            extensions.update(advertised)
        if self.request_ids is not None:
            scope["request_id"] = self.request_ids.new()
        return scope, advertised

    def scope_for(
        self, build: ScopeBuilder, request: Request, info: ConnectionInfo
    ) -> dict[str, Any]:
        """The ASGI scope of a request on a connection, with proxy headers and TLS applied.

        One place for what HTTP and WebSocket scopes share, so they can't drift apart.
        """
        scope = self._build(build, request, info)
        self._settle(scope, request, info)
        return scope

    def _build(
        self, build: ScopeBuilder, request: Request, info: ConnectionInfo, **extra: Any
    ) -> dict[str, Any]:
        config = self.config
        return build(
            request,
            scheme=info.scheme,
            client=info.client,
            server=info.server,
            root_path=config.root_path,
            state=self.lifespan_state,
            raw_header_case=config.h11_pass_raw_headers,
            **extra,
        )

    def _settle(self, scope: dict[str, Any], request: Request, info: ConnectionInfo) -> None:
        """Proxy headers, TLS and the request id, applied to a new scope."""
        config = self.config
        prepare_scope(
            scope,
            proxy_headers=config.proxy_headers,
            forwarded_allow_ips=config.forwarded_allow_ips,
            forwarded_headers=config.forwarded_headers,
            tls=info.tls,
        )
        if self.request_ids is not None:
            scope["request_id"] = self.request_ids.pick(request.headers)

    def default_headers(self) -> Headers:
        """Server, Date and ``--header`` defaults, rebuilt at most once a second."""
        now = time.time()
        second = int(now)
        if second != self._headers_second:
            headers = list(self._static_headers)
            if self.config.include_date_header and all(n != b"date" for n, _ in headers):
                headers.insert(0, (b"date", self._date.value(now)))
            self._headers = headers + self.alt_svc if self.alt_svc else headers
            self._headers_second = second
        return self._headers

    def response_headers(self, scope: dict[str, Any]) -> Headers:
        """:meth:`default_headers`, plus the request id when it is echoed."""
        if not self.echo_id:
            return self.default_headers()
        rid = (self.echo_id, scope["request_id"].encode("ascii"))
        return [*self.default_headers(), rid]

    def count_request(self, *, served: bool = False) -> None:
        """One more request done (``served``: already added to ``requests_served``); at
        ``request_limit`` (max_requests) fire the hook once."""
        if not served:
            self.requests_served += 1
        limit = self.request_limit
        if limit is not None and self.requests_served >= limit:
            self.request_limit = None  # once; >= since other paths may count too
            if self.on_request_limit is not None:
                self.on_request_limit()

    def begin_shutdown(self) -> None:
        """Stop taking new requests: idle connections close once the grace has passed
        without a request (a request that does come is answered with Connection: close)."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.metrics.set_lifespan("draining")
        self.shutdown_event.set()
        grace_end = trio.current_time() + FIRST_REQUEST_GRACE
        for scopes in (self.idle_scopes, self.fresh_scopes):
            for scope in scopes:
                scope.deadline = min(scope.deadline, grace_end)
        self.keep_alive_waits.shorten(grace_end)
        for hook in list(self.shutdown_hooks):
            hook()


def _trusts_anyone(forwarded_allow_ips: list[str]) -> bool:
    """Whether any peer's proxy headers can be believed (else they need no look at all)."""
    peers = trusted_peers(tuple(forwarded_allow_ips))
    return peers.all or peers.unix or bool(peers.networks or peers.hosts)

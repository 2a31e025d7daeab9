"""The versions the contract runs on: a server for each, and a client connection to it.

Each test starts its own in-process server (``serve()`` in the test's nursery, or the
in-memory transport), so a scenario brings its own config and the logs and counters the
test reads are that scenario's alone; starting one costs milliseconds, not the shutdown.
The real servers count into a file (``serve(metrics_path=...)``, as a supervised worker
does); the in-memory one is given a counter array (see ``_memory``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from tests.h2raw import RawH2, close_all
from tests.metrics.helpers import Samples, parse
from trioserve.config import aioquic_usable
from trioserve.metrics.counters import Counters, read_snapshot
from trioserve.metrics.exposition import HostNumbers, render
from trioserve.run import make_config
from trioserve.server.serve import serve
from trioserve.testing import InMemoryTransport

from .clients import Conn, H1Conn, H2Conn

# The access line: the status is the last field.
ACCESS_FORMAT = "%(m)s %(U)s %(s)s"


@dataclass(frozen=True)
class Version:
    """One way to reach the server: ``kind`` picks the server, ``proto`` the client."""

    name: str
    http_version: str  # what the scope (and the metrics label) should say
    kind: str  # "tcp", "tls", "quic" or "memory"
    proto: str  # "h1", "h2" or "h3"
    parser: str = "h11"

    @property
    def scheme(self) -> str:
        return "https" if self.kind in ("tls", "quic") else "http"


VERSIONS = (
    Version("h11", "1.1", "tcp", "h1", "h11"),
    Version("httptools", "1.1", "tcp", "h1", "httptools"),
    Version("h2-tls", "2", "tls", "h2"),
    Version("h2c", "2", "tcp", "h2"),
    Version("h3", "3", "quic", "h3"),
    Version("mem-h1", "1.1", "memory", "h1"),
    Version("mem-h2", "2", "memory", "h2"),
)
H3_USABLE = aioquic_usable()


@dataclass
class Certs:
    ca_file: str
    cert_file: str
    key_file: str

    def client_context(self, alpn: list[str]) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        context.set_alpn_protocols(alpn)
        return context


@dataclass
class Running:
    """A serving server: ``connect()`` opens a client connection, ``shutdown()`` starts the
    graceful stop; ``samples`` holds the final counters once the server has stopped."""

    opener: Callable[[], Awaitable[Conn]]
    shutdown: Callable[[], None]
    samples: Samples | None = None
    conns: list[Conn] = field(default_factory=list)

    async def connect(self) -> Conn:
        conn = await self.opener()
        self.conns.append(conn)
        return conn

    async def hang_up(self) -> None:
        """Close every client connection (before the server stops, so it stops at once)."""
        for conn in self.conns:
            await conn.aclose()


def _samples(snapshot: list[int] | None) -> Samples:
    assert snapshot is not None, "the counters were not written"
    return parse(render(HostNumbers(live=[snapshot])).decode())


@asynccontextmanager
async def serving(
    version: Version, app: Any, options: dict[str, Any], certs: Certs, tmp: Path
) -> AsyncIterator[Running]:
    """Serve ``app`` for the block; leaving it stops the server and fills ``samples``."""
    options = {"access_log_format": ACCESS_FORMAT, "graceful_timeout": 2.0, **options}
    try:
        if version.kind == "memory":
            async with _memory(version, app, options) as running:
                yield running
        else:
            async with _real(version, app, options, certs, tmp) as running:
                yield running
    finally:
        await close_all()


@asynccontextmanager
async def _real(
    version: Version, app: Any, options: dict[str, Any], certs: Certs, tmp: Path
) -> AsyncIterator[Running]:
    extra: dict[str, Any] = {"http": version.parser}
    if version.kind in ("tls", "quic"):
        extra.update(certfile=certs.cert_file, keyfile=certs.key_file)
    udp_port = 0
    if version.kind == "quic":
        from tests.h3client import free_udp_port

        udp_port = free_udp_port()
        extra["quic_bind"] = [f"127.0.0.1:{udp_port}"]
    config = make_config(environ={}, bind=["127.0.0.1:0"], **extra, **options)
    counters = str(tmp / "worker.counters")
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(serve, app, config, shutdown_trigger=trigger, metrics_path=counters)
        )
        port = int(urls[0].rsplit(":", 1)[1])
        async with trio.open_nursery() as clients:
            running = Running(
                partial(_connect, version, port, udp_port, certs, clients), trigger.set
            )
            try:
                yield running
            finally:
                await running.hang_up()
                clients.cancel_scope.cancel()
        trigger.set()
    running.samples = _samples(read_snapshot(counters))


async def _connect(
    version: Version, port: int, udp_port: int, certs: Certs, nursery: trio.Nursery
) -> Conn:
    if version.proto == "h3":
        return await _connect_h3(udp_port, certs, nursery)
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if version.kind == "tls":
        tls = trio.SSLStream(stream, certs.client_context(["h2"]), server_hostname="localhost")
        await tls.do_handshake()
        assert tls.selected_alpn_protocol() == "h2"
        return H2Conn(await RawH2.open(0, stream=tls), b"https")
    if version.proto == "h2":
        return H2Conn(await RawH2.open(0, stream=stream), b"http")
    return H1Conn(stream)


async def _connect_h3(udp_port: int, certs: Certs, nursery: trio.Nursery) -> Conn:
    from tests.h3client import H3Client

    from .h3conn import H3Conn

    client = H3Client(udp_port, certs.ca_file)

    async def run() -> None:
        try:
            await client.run()
        finally:
            client.sock.close()

    nursery.start_soon(run)
    with trio.fail_after(5):
        await client.connected.wait()
    return H3Conn(client)


@asynccontextmanager
async def _memory(version: Version, app: Any, options: dict[str, Any]) -> AsyncIterator[Running]:
    transport = InMemoryTransport(
        app, raise_app_exceptions=False, http2=version.proto == "h2", **options
    )
    await transport.__aenter__()
    state = transport.state
    assert state is not None
    # The in-memory server counts when metrics are configured, but metrics_bind or StatsD
    # would put sockets into an in-memory test: it gets the counter array a worker has.
    counters = state.metrics if isinstance(state.metrics, Counters) else Counters()
    state.metrics = counters

    async def connect() -> Conn:
        stream = await transport.open_stream("http", "localhost", 80)
        if version.proto == "h2":
            return H2Conn(await RawH2.open(0, stream=stream), b"http")
        return H1Conn(stream)

    running = Running(connect, state.begin_shutdown)
    try:
        yield running
    finally:
        await running.hang_up()
        await transport.aclose()
        running.samples = _samples(counters.snapshot())

"""Certificates and an in-process server with quic_bind, for the HTTP/3 tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from trioserve.config import Config, aioquic_usable
from trioserve.server.serve import serve

if not aioquic_usable():  # pragma: no cover - Python 3.10: aioquic 1.7 needs 3.11
    collect_ignore_glob = ["test_*.py"]
else:
    from tests.h3client import H3Client, free_udp_port, h3_client


@dataclass
class Certs:
    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp = tmp_path_factory.mktemp("h3certs")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    server.private_key_pem.write_to_path(str(tmp / "key.pem"))
    return Certs(tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem")


@dataclass
class H3Server:
    urls: list[str]
    port: int
    trigger: trio.Event


@asynccontextmanager
async def h3_server(app: Any, certs: Certs, **options: Any) -> AsyncIterator[H3Server]:
    if "quic_bind" in options:
        port = int(options["quic_bind"][0].rsplit(":", 1)[1])
    else:
        port = free_udp_port()
    base: dict[str, Any] = {
        "bind": ["127.0.0.1:0"],
        "quic_bind": [f"127.0.0.1:{port}"],
        "certfile": str(certs.cert_file),
        "keyfile": str(certs.key_file),
    }
    config = Config.from_mapping({**base, **options})
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, app, config, shutdown_trigger=trigger))
        try:
            yield H3Server(urls, port, trigger)
        finally:
            trigger.set()


@asynccontextmanager
async def h3_session(
    app: Any, certs: Certs, **options: Any
) -> AsyncIterator[tuple[H3Server, H3Client]]:
    """A server and one connected client."""
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(h3_server(app, certs, **options))
        client = await stack.enter_async_context(h3_client(server.port, str(certs.ca_file)))
        yield server, client


def sansio_server_config(
    tmp_path_factory: pytest.TempPathFactory, *, stream_window: int = 64 * 1024
) -> Any:
    """A server QuicConfiguration with a throwaway certificate, for the sans-IO tests."""
    from trioserve.sansio.quic import quic_configuration

    tmp = tmp_path_factory.mktemp("sansio-quic")
    cert = trustme.CA().issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    return quic_configuration(
        certfile=str(tmp / "cert.pem"),
        keyfile=str(tmp / "key.pem"),
        password=None,
        idle_timeout=30,
        stream_window=stream_window,
        max_data=1 << 20,
    )

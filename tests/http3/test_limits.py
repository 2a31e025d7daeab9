"""HTTP/3 limits and lifecycle: head size, idle timeout, half-open cap, Retry, graceful
shutdown with GOAWAY and CONNECTION_CLOSE, and Alt-Svc on HTTP/1.1 responses."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import httpx
import trio
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived

from tests.h3client import h3_client

from .conftest import Certs, h3_server, h3_session


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await trio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_alt_svc_on_http11_only(certs: Certs) -> None:
    async with h3_server(hello, certs) as server:
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=str(certs.ca_file))
        ) as http:
            response = await http.get(server.urls[0].replace("127.0.0.1", "localhost") + "/")
        assert response.headers.get_list("alt-svc") == [f'h3=":{server.port}"; ma=86400']
        async with h3_client(server.port, str(certs.ca_file)) as client:
            result = await client.request(b"/")
            assert result.status == 200
            assert result.header(b"alt-svc") is None


async def test_alt_svc_on_http2(certs: Certs) -> None:
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    async with h3_server(hello, certs) as server:
        async with httpx.AsyncClient(verify=context, http2=True) as http:
            response = await http.get(server.urls[0].replace("127.0.0.1", "localhost") + "/")
        assert response.http_version == "HTTP/2"
        assert response.headers.get_list("alt-svc") == [f'h3=":{server.port}"; ma=86400']


async def test_alt_svc_configured(certs: Certs) -> None:
    value = 'h3=":443"; ma=3600'
    async with h3_server(hello, certs, alt_svc_headers=[value]) as server:
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=str(certs.ca_file))
        ) as http:
            response = await http.get(server.urls[0].replace("127.0.0.1", "localhost") + "/")
        assert response.headers.get_list("alt-svc") == [value]


async def test_head_over_limit_gets_431(certs: Certs) -> None:
    async with h3_session(hello, certs, h3_max_field_section_size=4096) as (_, client):
        many = [(b"x-big-%d" % i, b"a" * 500) for i in range(10)]  # 5.3 KiB by RFC 9114
        big = await client.request(b"/", headers=many)
        assert big.status == 431
        assert (await client.request(b"/")).status == 200
        settings = client.h3.received_settings or {}
        assert settings.get(0x6) == 4096  # SETTINGS_MAX_FIELD_SECTION_SIZE
        assert settings.get(0x8) == 1  # ENABLE_CONNECT_PROTOCOL: WebSockets (RFC 9220)


async def test_no_session_tickets_so_no_0rtt(certs: Certs) -> None:
    """0-RTT needs a resumption ticket; the server issues none, so early data (replayable
    requests) can never be accepted."""
    async with h3_session(hello, certs) as (_, client):
        assert (await client.request(b"/")).status == 200
        await trio.sleep(0.2)
        assert client.tickets == []


async def test_idle_timeout_closes(certs: Certs) -> None:
    async with h3_session(hello, certs, quic_idle_timeout=0.5) as (_, client):
        assert (await client.request(b"/")).status == 200
        with trio.fail_after(5):
            while client.terminated is None:
                await trio.sleep(0.05)


def initial_datagram(certs: Certs) -> bytes:
    """A fresh client's first Initial (its own connection IDs)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
    quic = QuicConnection(configuration=config)
    quic.connect(("127.0.0.1", 1), now=0.0)
    return quic.datagrams_to_send(now=0.0)[0][0]


async def send_initials(port: int, count: int, certs: Certs) -> list[bytes]:
    """``count`` Initials from one address; returns what came back within a moment."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    replies: list[bytes] = []
    with sock:
        for _ in range(count):
            await sock.sendto(initial_datagram(certs), ("127.0.0.1", port))
        with trio.move_on_after(0.5):
            while True:
                replies.append(await sock.recv(65536))
    return replies


def answered_connections(replies: list[bytes]) -> int:
    """Distinct connections that answered (the DCID of the server's reply = the client's
    SCID, unique per Initial sent)."""
    ids = set()
    for data in replies:
        length = data[5]
        ids.add(data[6 : 6 + length])
    return len(ids)


async def test_half_open_cap_per_address(certs: Certs) -> None:
    async with h3_server(hello, certs, quic_max_half_open=3, quic_retry="off") as server:
        replies = await send_initials(server.port, 10, certs)
        assert answered_connections(replies) == 3


async def test_stalled_handshakes_expire(certs: Certs) -> None:
    """Half-open connections that never finish are dropped after ssl_handshake_timeout,
    freeing the address's slots."""
    options = {"quic_max_half_open": 2, "quic_retry": "off", "ssl_handshake_timeout": 0.5}
    async with h3_server(hello, certs, **options) as server:
        assert answered_connections(await send_initials(server.port, 2, certs)) == 2
        await trio.sleep(1.0)
        async with h3_client(server.port, str(certs.ca_file)) as client:
            assert (await client.request(b"/")).status == 200


async def test_retry_under_load(certs: Certs) -> None:
    async with h3_server(
        hello, certs, quic_retry="load", quic_retry_threshold=2, quic_max_half_open=100
    ) as server:
        replies = await send_initials(server.port, 6, certs)
        retries = [d for d in replies if d[0] & 0xF0 == 0xF0]  # long header, type Retry
        assert answered_connections(replies) == 6
        assert len(retries) == 4  # the first two were accepted, the rest got Retry
        # A real client follows the Retry and is served.
        async with h3_client(server.port, str(certs.ca_file)) as client:
            assert (await client.request(b"/")).status == 200


async def test_retry_always(certs: Certs) -> None:
    async with h3_session(hello, certs, quic_retry="on") as (_, client):
        assert (await client.request(b"/")).status == 200
        assert any(type(e).__name__ == "HandshakeCompleted" for e in client.events)


async def test_graceful_shutdown(certs: Certs) -> None:
    """GOAWAY first; the request in flight completes; then CONNECTION_CLOSE (H3_NO_ERROR)."""
    async with h3_session(hello, certs, graceful_timeout=5) as (server, client):
        stream_id = client.open(b"/slow")
        await trio.sleep(0.1)
        server.trigger.set()
        result = await client.wait(stream_id)
        assert (result.status, bytes(result.body)) == (200, b"hello")
        with trio.fail_after(5):
            while client.terminated is None:
                await trio.sleep(0.02)
        assert client.terminated.error_code == 0x100  # H3_NO_ERROR
        # The server's control stream (id 3) ends with GOAWAY naming stream 4, the first
        # one not served: frame type 0x07, length 1, id 4.
        control = b"".join(
            e.data for e in client.events if isinstance(e, StreamDataReceived) and e.stream_id == 3
        )
        assert control.endswith(b"\x07\x01\x04")


async def test_graceful_deadline_closes_stuck_streams(certs: Certs) -> None:
    async def stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await trio.sleep(60)

    async with h3_session(stuck, certs, graceful_timeout=0.5) as (server, client):
        client.open(b"/")
        await trio.sleep(0.1)
        start = trio.current_time()
        server.trigger.set()
        with trio.fail_after(5):
            while client.terminated is None:
                await trio.sleep(0.02)
        assert trio.current_time() - start < 3
        assert client.terminated.error_code == 0x100


async def test_body_over_limit_gets_413_and_the_upload_is_stopped(certs: Certs) -> None:
    async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    async with h3_session(reader, certs, max_request_body_size=100_000) as (_, client):
        stream_id = client.open(b"/up", method=b"POST", end=False)
        client.send_body(stream_id, b"x" * 1_000_000, end=True)
        result = await client.wait(stream_id)
        assert result.status == 413
        declared = await client.request(
            b"/up", method=b"POST", headers=[(b"content-length", b"200000")], body=b"y" * 200_000
        )
        assert declared.status == 413
        assert (await client.request(b"/up", method=b"POST", body=b"z" * 10)).status == 200

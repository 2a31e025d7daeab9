"""Deployment behaviour over real loopback sockets: proxy headers and their trust, the PROXY
protocol (v1, v2, malformed, stalled), limit_concurrency, max_request_body_size,
server_names, and response headers in the access log."""

from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Any

import pytest
import trio

from trioserve.sansio.proxy import V2_SIGNATURE
from trioserve.testing import open_server

calls: list[str] = []


async def echo_scope(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    calls.append(scope["path"])
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    data = {
        "client": scope["client"],
        "scheme": scope["scheme"],
        "server": scope["server"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "host": dict(scope["headers"]).get(b"host", b"").decode(),
        "body_length": len(body),
    }
    payload = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-app", b"yes"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def exchange(port: int, data: bytes, *, read_all: bool = True) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or 5 s)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(5):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                received += chunk
                if not read_all and b"\r\n\r\n" in received:
                    break
    return received


def body_json(response: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.split(b"\r\n\r\n", 1)[1])
    return data


GET = b"GET /x HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n"


# --- proxy headers --------------------------------------------------------------------------


async def test_forwarded_headers_from_trusted_peer() -> None:
    headers = (
        b"x-forwarded-for: 198.51.100.1, 203.0.113.9\r\n"
        b"x-forwarded-proto: https\r\nx-forwarded-host: shop.example\r\n"
        b"x-forwarded-prefix: /store\r\n\r\n"
    )
    async with open_server(echo_scope) as server:
        default = body_json(await exchange(server.port, GET + headers))
        default_port = server.port
    everything = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"]
    async with open_server(echo_scope, forwarded_headers=everything) as server:
        data = body_json(await exchange(server.port, GET + headers))
    # Default (Uvicorn's): client and scheme only.
    assert default["client"] == ["203.0.113.9", 0]
    assert default["scheme"] == "https"
    assert default["server"] == ["127.0.0.1", default_port]
    assert default["host"] == "a.test"
    assert (default["root_path"], default["path"]) == ("", "/x")
    # Opted in: host and prefix too; server stays the listening address.
    assert data["client"] == ["203.0.113.9", 0]
    assert data["scheme"] == "https"
    assert data["server"] == ["127.0.0.1", server.port]
    assert data["host"] == "shop.example"
    assert data["root_path"] == "/store"
    assert data["path"] == "/store/x"


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored() -> None:
    headers = (
        b"x-forwarded-for: 6.6.6.6\r\nx-forwarded-proto: https\r\nforwarded: for=7.7.7.7\r\n\r\n"
    )
    async with open_server(echo_scope, forwarded_allow_ips=["10.0.0.1"]) as server:
        data = body_json(await exchange(server.port, GET + headers))
    assert data["client"][0] == "127.0.0.1"
    assert data["scheme"] == "http"


async def test_proxy_headers_off() -> None:
    async with open_server(echo_scope, proxy_headers=False) as server:
        data = body_json(await exchange(server.port, GET + b"x-forwarded-for: 1.1.1.1\r\n\r\n"))
    assert data["client"][0] == "127.0.0.1"


# --- PROXY protocol -------------------------------------------------------------------------


def v2_header(src: str, sport: int, dst: str, dport: int) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(body)) + body


@pytest.mark.parametrize("version", [1, 2])
async def test_proxy_protocol_sets_the_client(version: int) -> None:
    if version == 1:
        header = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 443\r\n"
    else:
        header = v2_header("192.0.2.10", 40000, "127.0.0.1", 443)
    async with open_server(echo_scope, proxy_protocol=True) as server:
        # Header and request in one write, as HAProxy does: nothing after it may be lost.
        data = body_json(await exchange(server.port, header + GET + b"\r\n"))
    assert data["client"] == ["192.0.2.10", 40000]
    assert data["server"] == ["127.0.0.1", 443]


async def test_proxy_protocol_header_in_pieces() -> None:
    header = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 443\r\n"
    async with open_server(echo_scope, proxy_protocol=True) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            for piece in (header[:5], header[5:20], header[20:] + GET[:10], GET[10:] + b"\r\n"):
                await stream.send_all(piece)
                await trio.sleep(0.01)
            received = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    received += chunk
    assert body_json(received)["client"] == ["192.0.2.10", 40000]


@pytest.mark.parametrize(
    "header",
    [
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",  # no header at all
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        b"PROXY TCP4 not-an-ip 5.6.7.8 1 1\r\n",
        V2_SIGNATURE + b"\x21\x11\x00\x02ab",
    ],
)
async def test_malformed_proxy_header_closes_the_connection(
    header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    calls.clear()
    caplog.set_level(logging.INFO, logger="trioserve.error")
    async with open_server(echo_scope, proxy_protocol=True) as server:
        received = await exchange(server.port, header + GET + b"\r\n")
    assert received == b""
    assert calls == []
    assert "bad PROXY protocol header" in caplog.text


async def test_stalled_proxy_header_times_out() -> None:
    async with open_server(echo_scope, proxy_protocol=True, request_head_timeout=0.3) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"PROXY TCP4 ")
            start = trio.current_time()
            with trio.fail_after(5):
                assert await stream.receive_some(100) == b""
            elapsed = trio.current_time() - start
    assert 0.2 <= elapsed < 2


async def test_proxy_protocol_from_untrusted_peer_is_consumed_but_ignored() -> None:
    header = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 443\r\n"
    options: dict[str, Any] = {"proxy_protocol": True, "forwarded_allow_ips": ["10.9.9.9"]}
    async with open_server(echo_scope, **options) as server:
        data = body_json(await exchange(server.port, header + GET + b"\r\n"))
    assert data["client"][0] == "127.0.0.1"


# --- limits ---------------------------------------------------------------------------------


async def test_announced_body_over_the_limit_gets_413_without_reading_it() -> None:
    calls.clear()
    async with open_server(echo_scope, max_request_body_size=1000) as server:
        head = b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 100000000\r\n\r\n"
        # We send 64 KiB of the announced 100 MB: the answer must come anyway.
        response = await exchange(server.port, head + b"x" * 65536, read_all=False)
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in response.lower()
    assert calls == []


async def test_streamed_body_over_the_limit_gets_413() -> None:
    async with open_server(echo_scope, max_request_body_size=1000) as server:
        head = b"POST /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
        chunk = b"400\r\n" + b"y" * 1024 + b"\r\n"
        response = await exchange(server.port, head + chunk * 3, read_all=False)
    assert response.startswith(b"HTTP/1.1 413 "), response


async def test_body_within_the_limit_is_served() -> None:
    async with open_server(echo_scope, max_request_body_size=1000) as server:
        head = b"POST /up HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncontent-length: 1000\r\n\r\n"
        response = await exchange(server.port, head + b"z" * 1000)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert body_json(response)["body_length"] == 1000


async def test_limit_concurrency_answers_503() -> None:
    release = trio.Event()
    entered = trio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    results: list[bytes] = []
    async with open_server(slow, limit_concurrency=1) as server:
        async with trio.open_nursery() as nursery:

            async def first() -> None:
                results.append(await exchange(server.port, GET + b"\r\n"))

            nursery.start_soon(first)
            await entered.wait()
            second = await exchange(server.port, GET + b"\r\n")
            release.set()
        third = await exchange(server.port, GET + b"\r\n")
    assert second.startswith(b"HTTP/1.1 503 ")
    assert results[0].startswith(b"HTTP/1.1 200 ")
    assert third.startswith(b"HTTP/1.1 200 ")


async def test_server_names_filter_hosts() -> None:
    options: dict[str, Any] = {"server_names": ["a.test", "b.test:8080"]}
    async with open_server(echo_scope, **options) as server:
        ok = await exchange(server.port, GET + b"\r\n")
        with_port = await exchange(
            server.port, b"GET / HTTP/1.1\r\nhost: a.test:9999\r\nconnection: close\r\n\r\n"
        )
        wrong = await exchange(
            server.port, b"GET / HTTP/1.1\r\nhost: evil.test\r\nconnection: close\r\n\r\n"
        )
        wrong_port = await exchange(
            server.port, b"GET / HTTP/1.1\r\nhost: b.test:1\r\nconnection: close\r\n\r\n"
        )
    assert ok.startswith(b"HTTP/1.1 200 ")
    assert with_port.startswith(b"HTTP/1.1 200 ")
    assert wrong.startswith(b"HTTP/1.1 404 ")
    assert wrong_port.startswith(b"HTTP/1.1 404 ")


# --- access log -----------------------------------------------------------------------------


async def test_access_log_request_and_response_header_atoms(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_TEST_VAR", "envvalue")
    fmt = (
        '%(h)s "%(r)s" %(s)s %({x-test}i)s %({x-app}o)s %({content-type}o)s %({DEPLOY_TEST_VAR}e)s'
    )
    caplog.set_level(logging.INFO, logger="trioserve.access")
    async with open_server(echo_scope, access_log_format=fmt) as server:
        await exchange(server.port, GET + b"x-test: hello\r\nx-forwarded-for: 203.0.113.5\r\n\r\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert lines == ['203.0.113.5 "GET /x HTTP/1.1" 200 hello yes application/json envvalue']

"""Item 3: clients that never read are dropped after send_timeout, freeing their slots.

Before, a client that stopped reading held its connection and its app task forever: a
handful of them took every --limit-concurrency slot.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio

from trioserve.errors import SendTimeout
from trioserve.testing import open_server

from ..rawhttp import read_response

SLOTS = 3
SEND_TIMEOUT = 1.0


async def test_clients_that_never_read_cannot_pin_every_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gone: list[float] = []
    started: list[float] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ok":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        started.append(trio.current_time())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * (256 * 1024)
        try:
            while True:  # an endless download to a client that never reads
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except SendTimeout:
            gone.append(trio.current_time())
            raise

    async with open_server(
        app,
        limit_concurrency=SLOTS,
        send_timeout=SEND_TIMEOUT,
        raise_app_exceptions=False,
        access_log_format="%(r)s %(s)s %(X)s",
    ) as server:
        readers = []
        for _ in range(SLOTS):
            stream = await trio.open_tcp_stream(server.host, server.port)
            # A small receive window, so the server's writes stall soon.
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await stream.send_all(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
            readers.append(stream)
        with trio.fail_after(5):
            while len(started) < SLOTS:
                await trio.sleep(0.02)
        # Every slot is taken by a client that does not read: a new request is refused...
        assert (await one_get(server.port)).startswith(b"HTTP/1.1 503 ")
        # ...until the send deadline drops them.
        with trio.fail_after(SEND_TIMEOUT + 10):
            while len(gone) < SLOTS:
                await trio.sleep(0.05)
        held = max(g - s for g, s in zip(sorted(gone), sorted(started), strict=True))
        assert held < SEND_TIMEOUT + 3, held
        assert (await one_get(server.port)).startswith(b"HTTP/1.1 200 ")
        for stream in readers:  # the server closed them: reading ends (EOF or reset)
            with trio.fail_after(10):
                try:
                    while await stream.receive_some(1 << 20):
                        pass
                except trio.BrokenResourceError:
                    pass
            await stream.aclose()
    lines = [r.getMessage() for r in caplog.records if "send timed out" in r.getMessage()]
    assert len(lines) == SLOTS, lines
    access = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    # The access log says the exchange was cut (X), the other requests completed (+).
    assert access.count("GET /download HTTP/1.1 200 X") == SLOTS, access
    assert "GET /ok HTTP/1.1 200 +" in access


async def one_get(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await read_response(stream)


async def test_websocket_client_that_never_reads_is_dropped() -> None:
    """The send deadline covers WebSocket frames too: the app's send() raises."""
    outcome: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"x" * 65536})
        except SendTimeout:
            outcome.append("send timeout")

    handshake = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    async with open_server(app, send_timeout=SEND_TIMEOUT) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with stream:
            await stream.send_all(handshake)
            start = trio.current_time()
            with trio.fail_after(SEND_TIMEOUT + 10):
                while not outcome:
                    await trio.sleep(0.05)
            assert trio.current_time() - start < SEND_TIMEOUT + 5
    assert outcome == ["send timeout"]


async def test_pathsend_to_a_client_that_never_reads_ends_at_the_send_deadline(
    tmp_path: Any,
) -> None:
    """sendfile (zero-copy pathsend on cleartext HTTP/1.1) is held to the same deadline."""
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MiB on the wire, nothing on disk
    outcome: list[BaseException | None] = []
    began: list[float] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert "http.response.pathsend" in scope["extensions"]
        headers = [(b"content-length", str(big.stat().st_size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        began.append(trio.current_time())
        try:
            await send({"type": "http.response.pathsend", "path": str(big)})
            outcome.append(None)
        except SendTimeout as exc:
            outcome.append(exc)
            raise

    async with open_server(app, send_timeout=SEND_TIMEOUT, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await stream.send_all(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(SEND_TIMEOUT + 10):
            while not outcome:
                await trio.sleep(0.05)
        assert isinstance(outcome[0], SendTimeout)
        assert trio.current_time() - began[0] < SEND_TIMEOUT + 5
        await stream.aclose()

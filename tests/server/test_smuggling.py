"""Request smuggling shapes over raw sockets: each gets a 4xx or a clean close, the app
never sees a second, smuggled request, and the next client is served."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import LiveServer, open_server

from ..rawhttp import read_until_close

Scope = MutableMapping[str, Any]

# Each shape ends with what a front-end might not see as a request: if the server ever
# runs the app for /smuggled, the framing was misread.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

SHAPES = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-and-cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n1\r\nZ\r\n0\r\n\r\n" + SMUGGLED,
    "duplicate-differing-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    b"Content-Length: 44\r\n\r\n" + SMUGGLED,
    "cl-list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 44\r\n\r\n" + SMUGGLED,
    "cl-plus-sign": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +44\r\n\r\n" + SMUGGLED,
    "te-not-chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + SMUGGLED,
    "te-chunked-twice": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n"
    b"\r\n0\r\n\r\n" + SMUGGLED,
    "te-obfuscated": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "te-with-tab-name": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "header-name-space": b"POST / HTTP/1.1\r\nHost: x\r\nContent Length: 44\r\n\r\n" + SMUGGLED,
    "chunk-size-hex-prefix": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-size-negative": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"-1\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-size-space": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5 \r\nhello\r\n0 \r\n\r\n" + SMUGGLED,
    "chunk-size-overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffff1\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-size-bare-lf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-data-too-long": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "bare-cr-in-header": b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 44\r\n\r\n"
    + SMUGGLED,
    "bare-cr-line-end": b"GET / HTTP/1.1\rHost: x\r\n\r\n" + SMUGGLED,
    "bare-cr-in-chunk-ext": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;a=b\rc\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "nul-in-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + SMUGGLED,
    "http-2-line": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n" + SMUGGLED,
}


class Recorder:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message["body"]
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


async def next_client_served(server: LiveServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url + "/after")
    assert response.status_code == 200


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
async def test_smuggling_shape_is_refused(shape: str) -> None:
    app = Recorder()
    async with open_server(app) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(SHAPES[shape])
            data = await read_until_close(stream)
        assert "/smuggled" not in app.paths, (shape, app.paths, data)
        statuses = [
            int(line.split(b" ")[1]) for line in data.split(b"\r\n") if line[:5] == b"HTTP/"
        ]
        # At most the first request is answered: a 4xx, or a 2xx followed by a close.
        assert len(statuses) <= 1, data
        if statuses and statuses[0] < 400:
            assert b"connection: close" in data.lower(), data
        else:
            assert not statuses or 400 <= statuses[0] < 600, data
        await next_client_served(server)
        assert app.paths[-1] == "/after"


async def test_cl_and_te_never_uses_content_length() -> None:
    """Both headers: either refused, or the chunked framing wins and the connection closes."""
    app = Recorder()
    async with (
        open_server(app) as server,
        await trio.open_tcp_stream(server.host, server.port) as stream,
    ):
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        data = await read_until_close(stream)
    assert b"connection: close" in data.lower()
    assert app.bodies in ([], [b"hello"])


@pytest.mark.parametrize("cut", [10, 60, 75])
async def test_client_vanishing_mid_body(cut: int) -> None:
    app = Recorder()
    request = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000
    chunked = (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10\r\n" + b"c" * 16 + b"\r\n" + b"10\r\n" + b"c" * 16
    )
    async with open_server(app) as server:
        for data in (request, chunked):
            stream = await trio.open_tcp_stream(server.host, server.port)
            await stream.send_all(data[:cut] if cut < 60 else data[: cut + 20])
            await trio.sleep(0.05)
            await stream.aclose()
        # Half-open too: send part of a body then shut down the write side.
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(request[: cut + 60])
            await stream.send_eof()
            leftover = await read_until_close(stream)
        assert b"HTTP/1.1 200" not in leftover
        await next_client_served(server)
    assert all(body != b"b" * 1000 for body in app.bodies[:-1])


async def test_mixed_bad_and_good_clients_concurrently() -> None:
    """Bad requests on some connections never disturb good ones running at the same time."""
    app = Recorder()
    shapes = list(SHAPES.values())
    good = b"GET /good HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    results: list[bytes] = []

    async with open_server(app) as server:

        async def client(i: int) -> None:
            async with await trio.open_tcp_stream(server.host, server.port) as stream:
                if i % 2:
                    await stream.send_all(shapes[i % len(shapes)])
                    await read_until_close(stream)
                else:
                    for j in range(0, len(good), 7):  # dribbled, interleaved with bad ones
                        await stream.send_all(good[j : j + 7])
                        await trio.sleep(0)
                    results.append(await read_until_close(stream))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(60):
                    nursery.start_soon(client, i)
        await next_client_served(server)
    assert len(results) == 30
    assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"ok") for r in results)
    assert "/smuggled" not in app.paths

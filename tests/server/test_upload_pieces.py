"""What ``receive()`` hands an app for a request body (issue 11 item 17: uploads through
FastAPI), over real sockets with both HTTP/1.1 parsers.

A framework pays per piece it is handed (Starlette's multipart parser hops to a thread per
piece once the file is spooled to disk; ``request.stream()`` is an async generator step), so
a body must come in few, large pieces: everything already read in one, and each further
``receive()`` one read of ``BODY_READ_SIZE``, never more (the app's pace still bounds what is
read: backpressure, bounded memory).

To make the pieces deterministic the whole request is in the server's kernel buffer before
the app's first ``receive()``: the listening socket gets a receive buffer large enough for it
(handed to the server as ``fd://N``), the client waits until the kernel has delivered every
byte (``SIOCOUTQ`` is 0: all sent and acknowledged), and only then lets the app read.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from fastapi import FastAPI, Request, UploadFile

from trioserve.server.peer import BODY_READ_SIZE, READ_SIZE
from trioserve.testing import open_server

from ..rawhttp import read_until_close

PARSERS = pytest.mark.parametrize("kind", ["h11", "httptools"])
# Fits the enlarged receive buffer; more than one READ_SIZE read after the head's read, less
# than one BODY_READ_SIZE read.
BODY = os.urandom(250_000)


@pytest.fixture(autouse=True)
def _force_http_parser() -> None:
    """Each test here names its parser itself (overrides the conftest fixture)."""


def _chunked(body: bytes, size: int) -> bytes:
    pieces = (body[i : i + size] for i in range(0, len(body), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def _request(framing: str, path: bytes = b"/", body: bytes = BODY) -> bytes:
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, 1024)


@asynccontextmanager
async def _server(app: Any, kind: str) -> AsyncIterator[int]:
    """A server on a listening socket with a 1 MiB receive buffer; yields its port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    fd = sock.detach()  # the server owns it now
    async with open_server(app, http=kind, bind=[f"fd://{fd}"]):
        yield port


async def _delivered(stream: trio.SocketStream) -> None:
    """Wait until the kernel has delivered (and the peer acknowledged) every byte sent."""
    with trio.fail_after(10):
        while True:
            raw = fcntl.ioctl(stream.socket.fileno(), termios.TIOCOUTQ, b"\0" * 4)
            if struct.unpack("i", raw)[0] == 0:
                return
            await trio.sleep(0.001)


async def _send_then_release(port: int, raw: bytes, ready: trio.Event) -> bytes:
    """Send the whole request, let the app read once it is all delivered; the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        await _delivered(stream)
        ready.set()
        return await read_until_close(stream, timeout=10)


def _recording_app(ready: trio.Event, pieces: list[tuple[bytes, bool]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await ready.wait()
        more = True
        while more:
            message = await receive()
            assert message["type"] == "http.request"
            more = message.get("more_body", False)
            pieces.append((message.get("body", b""), more))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@PARSERS
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_buffered_body_comes_in_at_most_two_pieces(kind: str, framing: str) -> None:
    """What the head's read brought (however many chunks), then one large read for the
    rest: 250 kB in 1 KiB chunks was ~245 receive() calls, with Content-Length 4 or more."""
    ready = trio.Event()
    pieces: list[tuple[bytes, bool]] = []
    async with _server(_recording_app(ready, pieces), kind) as port:
        answer = await _send_then_release(port, _request(framing), ready)
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert b"".join(body for body, _ in pieces) == BODY
    assert [more for _, more in pieces] == [True] * (len(pieces) - 1) + [False]
    assert len(pieces) <= 2, [len(body) for body, _ in pieces]
    assert all(body for body, _ in pieces)  # no empty piece on the way


@PARSERS
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("size", [65536, 200_000])
async def test_a_body_already_here_comes_in_one_piece(kind: str, framing: str, size: int) -> None:
    """A body longer than the head's read but all in the kernel (issue 25's 64 KiB POST
    echo): one piece, not the head read's share and then a second receive() for the last
    bytes (which cost the app a join, and the server a wait and a second message)."""
    body = os.urandom(size)
    ready = trio.Event()
    pieces: list[tuple[bytes, bool]] = []
    async with _server(_recording_app(ready, pieces), kind) as port:
        answer = await _send_then_release(port, _request(framing, body=body), ready)
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert [(len(piece), more) for piece, more in pieces] == [(size, False)]
    assert pieces[0][0] == body


@PARSERS
async def test_pieces_stay_bounded_by_one_read(kind: str) -> None:
    """A body far larger than a read, in small chunks: each receive() hands over at most
    one read's worth, so memory per connection stays bounded whatever the body."""
    body = os.urandom(4 << 20)
    pieces: list[tuple[bytes, bool]] = []
    ready = trio.Event()
    ready.set()  # the app reads as the bytes come; the client writes as fast as it can
    async with _server(_recording_app(ready, pieces), kind) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(_request("chunked", body=body))
            answer = await read_until_close(stream, timeout=20)
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert b"".join(piece for piece, _ in pieces) == body
    assert max(len(piece) for piece, _ in pieces) <= max(BODY_READ_SIZE, READ_SIZE)


def _fastapi_app(ready: trio.Event, seen: list[int]) -> Any:
    api = FastAPI()

    @api.post("/stream")
    async def stream(request: Request) -> dict[str, Any]:
        await ready.wait()
        digest = hashlib.sha256()
        async for chunk in request.stream():
            if chunk:  # Starlette ends with an empty chunk of its own
                seen.append(len(chunk))
                digest.update(chunk)
        return {"sha256": digest.hexdigest()}

    @api.post("/upload")
    async def upload(file: UploadFile) -> dict[str, Any]:
        return {"sha256": hashlib.sha256(await file.read()).hexdigest(), "size": file.size}

    return api


@PARSERS
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_fastapi_request_stream_gets_the_same_few_pieces(kind: str, framing: str) -> None:
    ready = trio.Event()
    seen: list[int] = []
    async with _server(_fastapi_app(ready, seen), kind) as port:
        answer = await _send_then_release(port, _request(framing, b"/stream"), ready)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:400]
    assert hashlib.sha256(BODY).hexdigest().encode() in answer
    assert sum(seen) == len(BODY)
    assert len(seen) <= 2, seen


@PARSERS
async def test_fastapi_upload_file_is_received_whole(kind: str) -> None:
    """A 3 MiB UploadFile (past Starlette's 1 MiB spool: written to disk piece by piece)."""
    data = os.urandom(3 << 20)
    boundary = b"trioserve-test-boundary"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="f.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"
    )
    raw = (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    ready = trio.Event()
    ready.set()
    async with _server(_fastapi_app(ready, []), kind) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(raw)
            answer = await read_until_close(stream, timeout=20)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert hashlib.sha256(data).hexdigest().encode() in answer
    assert b'"size":%d' % len(data) in answer

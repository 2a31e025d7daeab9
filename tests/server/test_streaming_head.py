"""A streaming response's head goes out when the app starts waiting (issue 21, item 10).

trioserve holds a response head until the first body message, so that a hello response
leaves in one write and an error before the first body can still become a 500. But an SSE
app sends ``http.response.start`` and then waits for its first event: the client must get
the headers then (``EventSource.onopen``, a proxy's first-byte timer), as from Uvicorn and
Hypercorn, not when the first event comes. Over real sockets, both HTTP/1.1 parsers and
HTTP/2 (h2c with httpx); HTTP/3 is in tests/http3/test_streaming_head.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import open_server

from ..rawhttp import read_until_close

PARSERS = pytest.mark.parametrize("kind", ["h11", "httptools"])
WAIT = 2.0  # the app's wait before its first event
SOON = 0.5  # the head must arrive well before that (a loaded machine: generous)


@pytest.fixture(autouse=True)
def _force_http_parser() -> None:
    """Each test here names its parser itself (overrides the conftest fixture)."""


async def sse_app(scope: Any, receive: Any, send: Any) -> None:
    """start, a 2 s wait (the first event is not ready), then the event and the end."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await trio.sleep(WAIT)
    await send({"type": "http.response.body", "body": b"data: tick\n\n"})


async def head_time(stream: trio.SocketStream, request: bytes) -> tuple[float, bytes]:
    """Send ``request``; seconds until the response head's blank line, and the head."""
    start = trio.current_time()
    await stream.send_all(request)
    received = b""
    with trio.fail_after(WAIT + 5):
        while b"\r\n\r\n" not in received:
            data = await stream.receive_some(65536)
            assert data, received
            received += data
    return trio.current_time() - start, received


@PARSERS
async def test_http11_head_arrives_before_the_first_event(kind: str) -> None:
    async with open_server(sse_app, http=kind) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            request = b"GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            elapsed, received = await head_time(stream, request)
            assert elapsed < SOON, f"headers after {elapsed:.2f}s"
            assert received.startswith(b"HTTP/1.1 200 ")
            assert b"text/event-stream" in received
            received += await read_until_close(stream, timeout=WAIT + 5)
    # The body that followed is framed as usual (chunked: no Content-Length was given).
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"c\r\ndata: tick\n\n\r\n0\r\n\r\n"


@PARSERS
async def test_http11_keep_alive_after_a_released_head(kind: str) -> None:
    """The head written by the helper and the body written by the app stay in order,
    and the connection serves the next request."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await trio.sleep(0)  # the shortest wait: the app's task yields once
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await trio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"two"})

    async with open_server(app, http=kind) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(3):
                await stream.send_all(request)
                received = b""
                with trio.fail_after(5):
                    while not received.endswith(b"0\r\n\r\n"):
                        received += await stream.receive_some(65536)
                assert received.startswith(b"HTTP/1.1 200 ")
                assert received.endswith(b"\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")


@PARSERS
async def test_http11_error_after_a_wait_cuts_the_response(kind: str) -> None:
    """Once the head is out, an app error can no longer become a 500: the response is cut
    (connection closed, the chunked body never ends), as after body bytes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await trio.sleep(0.05)
        raise RuntimeError("boom")

    async with open_server(app, http=kind, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = await read_until_close(stream)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert not received.endswith(b"0\r\n\r\n")


async def test_http2_head_arrives_before_the_first_event() -> None:
    async with (
        open_server(sse_app) as server,
        httpx.AsyncClient(http1=False, http2=True, timeout=WAIT + 5) as client,
    ):
        start = trio.current_time()
        async with client.stream("GET", server.url + "/events") as response:
            elapsed = trio.current_time() - start
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            body = await response.aread()
    assert elapsed < SOON, f"headers after {elapsed:.2f}s"
    assert body == b"data: tick\n\n"


async def hello_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


async def count_writes(monkeypatch: pytest.MonkeyPatch, app: Any, **options: Any) -> list[bytes]:
    """Three keep-alive hellos; every write the server made, as it made it."""
    from trioserve.server.peer import PeerStream

    writes: list[bytes] = []
    real_send = PeerStream.send

    async def send(self: PeerStream, data: bytes) -> None:
        writes.append(bytes(data))
        await real_send(self, data)

    monkeypatch.setattr(PeerStream, "send", send)
    async with open_server(app, **options) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            for _ in range(3):
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                received = b""
                with trio.fail_after(5):
                    while not received.endswith(b"hi\r\n0\r\n\r\n"):
                        received += await stream.receive_some(65536)
    return writes


@PARSERS
async def test_hello_is_still_one_write(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """start and body back to back (no wait between): the head leaves with the body."""
    writes = await count_writes(monkeypatch, hello_app, http=kind)
    assert len(writes) == 3
    assert all(w.startswith(b"HTTP/1.1 200 ") and w.endswith(b"0\r\n\r\n") for w in writes)


@PARSERS
async def test_http11_wrong_length_after_a_wait_cuts_the_response(kind: str) -> None:
    """The body's Content-Length check moves to the protocol layer once the head is out:
    too many bytes are refused there (never written), and the response is cut."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await trio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"hello"})

    async with open_server(app, http=kind, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = await read_until_close(stream)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.endswith(b"\r\n\r\n")  # the head only: "hello" never went out

"""A client leaving, and a server draining, as the app and the access log see them
(issue 11, items 1, 11 and 15); the is_disconnected() and drain tests in trio mode and in
asyncio mode (``loop = "asyncio"``) alike."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from trioserve.testing import open_server

from ..rawhttp import read_until_close


async def _read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    buf = b""
    with trio.fail_after(5):
        while marker not in buf:
            data = await stream.receive_some(65536)
            assert data, buf
            buf += data
    return buf


class CrossThreadEvent:
    """A trio.Event the app sets from the asyncio loop's thread (``loop = "asyncio"``)."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.token = trio.lowlevel.current_trio_token()

    def set(self) -> None:
        self.token.run_sync_soon(self.event.set)

    async def wait(self) -> None:
        await self.event.wait()


# Trio mode, and asyncio mode where the app runs on an asyncio loop in another thread.
LOOPS = ["trio", "asyncio"]


@pytest.fixture
async def ended(loop: str) -> trio.Event | CrossThreadEvent:
    """What the app sets when its loop saw the disconnect, from the app's own thread."""
    return trio.Event() if loop == "trio" else CrossThreadEvent()


def starlette_polling_app(ended: trio.Event | CrossThreadEvent, seen: list[str]) -> Starlette:
    """The standard FastAPI/Starlette SSE and long-poll loops over is_disconnected()."""

    async def sse(request: Request) -> StreamingResponse:
        async def events() -> Any:
            yield "data: hello\n\n"
            while not await request.is_disconnected():
                await anyio.sleep(0.02)  # never writes again: only is_disconnected() can end it
            seen.append("sse saw the disconnect")
            ended.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def longpoll(request: Request) -> PlainTextResponse:
        while not await request.is_disconnected():
            await anyio.sleep(0.02)
        seen.append("long-poll saw the disconnect")
        ended.set()
        return PlainTextResponse("too late")

    return Starlette(routes=[Route("/sse", sse), Route("/longpoll", longpoll)])


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("path", [b"/sse", b"/longpoll"])
async def test_starlette_is_disconnected_sees_the_client_leave(
    path: bytes, loop: str, ended: trio.Event | CrossThreadEvent
) -> None:
    """The SSE loop never writes after its first event: only is_disconnected() ends it."""
    seen: list[str] = []
    app = starlette_polling_app(ended, seen)
    async with open_server(app, loop=loop, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        if path == b"/sse":
            await _read_until(stream, b"data: hello")
        else:
            await trio.sleep(0.1)  # the loop is polling
        await stream.aclose()
        with trio.fail_after(5):
            await ended.wait()
    assert len(seen) == 1


@pytest.mark.parametrize("loop", LOOPS)
async def test_is_disconnected_is_false_while_the_client_is_there(
    loop: str, ended: trio.Event | CrossThreadEvent
) -> None:
    seen: list[str] = []
    app = starlette_polling_app(ended, seen)
    async with open_server(app, loop=loop, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
            await _read_until(stream, b"data: hello")
            await trio.sleep(0.3)
            assert not seen  # still polling: the client is connected


@pytest.mark.parametrize("loop", LOOPS)
async def test_drain_ends_a_streaming_receive_cleanly(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When the drain starts, the pending receive() of a started response says disconnect,
    so the app finishes its stream and the client gets a complete response. In asyncio mode
    the app's last send, after http.disconnect, still goes out (it waits for trio's answer,
    and trio's answer is "sent")."""
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        got.append(await receive())  # pending until the client leaves, or the drain
        await send({"type": "http.response.body", "body": b"data: bye\n\n"})

    answer = b""

    async def read_rest(stream: trio.SocketStream) -> None:
        nonlocal answer
        async with stream:
            answer = await read_until_close(stream)

    async with trio.open_nursery() as nursery:
        async with open_server(app, loop=loop, graceful_timeout=5) as server:
            stream = await trio.open_tcp_stream(server.host, server.port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await _read_until(stream, b"data: one")
            nursery.start_soon(read_rest, stream)
            start = trio.current_time()
        held = trio.current_time() - start
        assert held < (2 if loop == "trio" else 3)  # not held until graceful_timeout
    assert got == [{"type": "http.disconnect"}]
    assert answer.endswith(b"data: bye\n\n\r\n0\r\n\r\n")  # the chunked body ended cleanly
    assert "timed out" not in caplog.text


@pytest.mark.parametrize("then_send", [False, True])
async def test_client_gone_before_the_response_is_logged(
    caplog: pytest.LogCaptureFixture, then_send: bool
) -> None:
    caplog.set_level(logging.INFO, "trioserve.access")
    done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await receive()  # waits for the client to leave
        done.set()
        if then_send:  # ClientDisconnected, left to propagate as frameworks do
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})

    async with open_server(app, access_log=True, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        await stream.send_all(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.sleep(0.05)
        await stream.aclose()
        with trio.fail_after(3):
            await done.wait()
        await trio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1
    assert '"GET /gone HTTP/1.1" 499 ' in lines[0]


async def test_request_cut_by_the_shutdown_deadline_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "trioserve.access")
    started = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        await trio.sleep_forever()

    async def read_and_close(stream: trio.SocketStream) -> None:
        async with stream:
            await read_until_close(stream)

    async with (
        trio.open_nursery() as nursery,
        open_server(app, access_log=True, graceful_timeout=0.2) as server,
    ):
        stream = await trio.open_tcp_stream(server.host, server.port)
        await stream.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        nursery.start_soon(read_and_close, stream)
        await started.wait()
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1
    assert '"GET /slow HTTP/1.1" 444 ' in lines[0]  # no response was sent


async def test_sse_example_ends_cleanly_when_the_server_drains() -> None:
    from examples import sse

    answer = b""

    async def read_rest(stream: trio.SocketStream) -> None:
        nonlocal answer
        async with stream:
            answer = await read_until_close(stream)

    async with trio.open_nursery() as nursery:
        async with open_server(sse.app, graceful_timeout=10) as server:
            stream = await trio.open_tcp_stream(server.host, server.port)
            await stream.send_all(b"GET /ticks?interval=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
            await _read_until(stream, b"data: 1")
            nursery.start_soon(read_rest, stream)
            start = trio.current_time()
        assert trio.current_time() - start < 3  # not held until graceful_timeout
    assert answer.endswith(b"0\r\n\r\n")  # the chunked stream ended, not cut

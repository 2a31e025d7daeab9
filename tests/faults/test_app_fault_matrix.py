"""The app-fault matrix: raise / raise a BaseException / return / hang at every ASGI step.

For HTTP, WebSocket and lifespan, each cell asserts what the client sees, that the server
keeps serving other requests, and (for hangs) that a graceful shutdown still ends the
connection within ``graceful_timeout``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pytest
import trio

from trioserve.config import Config
from trioserve.errors import LifespanFailure
from trioserve.server.serve import serve
from trioserve.testing import open_server, ws_connect
from trioserve.testing.wsclient import WebSocketClosed, WebSocketDenied

from ..rawhttp import read_response, read_until_close

ACTIONS = ("raise", "raise_base", "return", "hang")
GRACE = 0.5


class Custom(BaseException):
    pass


async def act(action: str) -> None:
    """The fault; ``return`` is the caller's job (it returns right after this)."""
    if action == "raise":
        raise RuntimeError("matrix fault")
    if action == "raise_base":
        raise Custom("matrix base fault")
    if action == "hang":
        await trio.sleep_forever()


# --- HTTP -------------------------------------------------------------------------------

HTTP_STEPS = ("begin", "received", "started", "partial", "complete")


def http_app(step: str, action: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        faulty = scope["path"] == "/fault"
        if faulty and step == "begin":
            return await act(action)
        await receive()
        if faulty and step == "received":
            return await act(action)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if faulty and step == "started":
            return await act(action)
        await send({"type": "http.response.body", "body": b"part1", "more_body": True})
        if faulty and step == "partial":
            return await act(action)
        await send({"type": "http.response.body", "body": b"part2"})
        if faulty and step == "complete":
            return await act(action)

    return app


def expected_http(step: str, action: str) -> str:
    """500 (clean, keep-alive), 200 (complete), 'cut' (partial then close), 'none'."""
    if action == "hang":
        return "partial-hang" if step in ("partial", "complete") else "none"
    if step == "started" and action == "return":
        return "500-close"  # the held-back head is replaced; the app broke the exchange
    if step in ("begin", "received", "started"):
        return "500"  # nothing on the wire yet (a held-back head is replaced)
    if step == "partial":
        return "cut"
    return "200"  # a complete response: a raise after it is only logged


async def exchange(port: int, path: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        return await read_until_close(stream, timeout=5)


def chunked_complete(data: bytes) -> bool:
    return data.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("step", HTTP_STEPS)
async def test_http_fault(step: str, action: str, caplog: pytest.LogCaptureFixture) -> None:
    expected = expected_http(step, action)
    app = http_app(step, action)
    hung: list[bytes] = []
    with trio.fail_after(10):
        async with open_server(app, raise_app_exceptions=False, graceful_timeout=GRACE) as server:
            if action == "hang":
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                await stream.send_all(b"GET /fault HTTP/1.1\r\nHost: x\r\n\r\n")
                with trio.move_on_after(0.3):
                    hung.append(await read_until_close(stream))
                assert not hung, "a hanging app's request must not be answered"
            else:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                async with stream:
                    await stream.send_all(b"GET /fault HTTP/1.1\r\nHost: x\r\n\r\n")
                    if expected == "500-close":
                        answer = await read_until_close(stream)
                        assert answer.startswith(b"HTTP/1.1 500 "), answer
                        assert b"connection: close" in answer.lower()
                    elif expected in ("500", "200"):
                        answer = await read_response(stream) if expected == "500" else b""
                        if expected == "200":
                            answer = await _read_chunked(stream)
                        assert answer.startswith(b"HTTP/1.1 " + expected.encode()), answer
                        # The connection is still good for another request.
                        await stream.send_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                        again = await _read_chunked(stream)
                        assert again.startswith(b"HTTP/1.1 200 "), again
                    else:
                        cut = await read_until_close(stream)
                        assert cut.startswith(b"HTTP/1.1 200 ")
                        assert b"part1" in cut
                        assert not chunked_complete(cut)
            other = await exchange(server.port, b"/ok")
            assert other.startswith(b"HTTP/1.1 200 ") or b"part2" in other
        if action == "hang":
            start = trio.current_time()
            rest = await read_until_close(stream, timeout=5)  # shutdown cut it
            assert trio.current_time() - start < GRACE + 2
            assert not chunked_complete(rest)
            await stream.aclose()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("tri")]
    if action in ("raise", "raise_base") or (action == "return" and step != "complete"):
        assert len(errors) == 1, [r.getMessage() for r in errors]


async def _read_chunked(stream: trio.abc.Stream) -> bytes:
    buf = b""
    with trio.fail_after(5):
        while not (buf.endswith(b"0\r\n\r\n") or _complete_fixed(buf)):
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
    return buf


def _complete_fixed(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep or b"content-length:" not in head.lower():
        return False
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return len(body) >= length


# --- WebSocket ----------------------------------------------------------------------------

WS_STEPS = ("connect", "accepted", "received", "sent")


def ws_app(step: str, action: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["type"] != "websocket":
            return
        await receive()
        if step == "connect":
            return await act(action)
        await send({"type": "websocket.accept"})
        if step == "accepted":
            return await act(action)
        message = await receive()
        if step == "received":
            return await act(action)
        await send({"type": "websocket.send", "text": message.get("text") or "?"})
        if step == "sent":
            return await act(action)
        await trio.sleep_forever()

    return app


def expected_ws(step: str, action: str) -> int:
    """The handshake status (500) for a fault before accept, else the close code."""
    if step == "connect":
        return 500 if action != "hang" else 1001
    return {"raise": 1011, "raise_base": 1011, "return": 1000, "hang": 1001}[action]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("step", WS_STEPS)
async def test_websocket_fault(step: str, action: str) -> None:
    expected = expected_ws(step, action)
    app = ws_app(step, action)
    outcome: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def client(server: Any) -> None:
                try:
                    async with ws_connect(server) as ws:
                        if step != "accepted":  # else the close may come first
                            await ws.send_text("hi")
                        await ws.receive()  # the echo (step "sent"), or the close
                        await ws.receive()
                except WebSocketDenied as exc:
                    outcome.append(exc.status_code)
                except WebSocketClosed as exc:
                    outcome.append(exc.code)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    outcome.append(-1)  # a hung handshake cut at shutdown

            async with open_server(
                app, raise_app_exceptions=False, graceful_timeout=GRACE
            ) as server:
                nursery.start_soon(client, server)
                await trio.sleep(0.3)
                other = await exchange(server.port, b"/ok")
                assert other.startswith(b"HTTP/1.1 200 ")
                if action != "hang":
                    assert outcome == [expected]
        if action == "hang":
            # A hung app before accept: the handshake is cut at shutdown (no 1001 possible).
            # (-1: reset, 1006: closed without a close frame).
            if step == "connect":
                assert outcome in ([-1], [1006])
            else:
                assert outcome == [expected]


# --- lifespan -----------------------------------------------------------------------------


def lifespan_app(phase: str, action: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await receive()
        if phase == "startup":
            return await act(action)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        return await act(action)

    return app


@pytest.mark.parametrize("mode", ["auto", "on"])
@pytest.mark.parametrize("action", ACTIONS)
async def test_lifespan_startup_fault(mode: str, action: str) -> None:
    """'on' (or any hang) refuses to start; 'auto' serves without lifespan after a fault."""
    config = Config(bind=["127.0.0.1:0"], lifespan=mode, startup_timeout=0.3)
    app = lifespan_app("startup", action)
    trigger = trio.Event()
    with trio.fail_after(5):
        if mode == "on" or action == "hang":
            with pytest.raises(LifespanFailure):
                await serve(app, config)
            return
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve, app, config, shutdown_trigger=trigger))
            port = int(urls[0].rsplit(":", 1)[1])
            assert (await exchange(port, b"/")).startswith(b"HTTP/1.1 200 ")
            trigger.set()


@pytest.mark.parametrize("action", ACTIONS)
async def test_lifespan_shutdown_fault(action: str, caplog: pytest.LogCaptureFixture) -> None:
    config = Config(bind=["127.0.0.1:0"], shutdown_timeout=0.3)
    app = lifespan_app("shutdown", action)
    trigger = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve, app, config, shutdown_trigger=trigger))
            port = int(urls[0].rsplit(":", 1)[1])
            assert (await exchange(port, b"/")).startswith(b"HTTP/1.1 200 ")
            trigger.set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == (0 if action == "return" else 1)

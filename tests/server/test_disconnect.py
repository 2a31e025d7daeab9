"""ASGI receive/send semantics over loopback: backpressure both ways, http.disconnect,
send after disconnect, ASGI 2 apps."""

from __future__ import annotations

import socket
import struct
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import open_server

Scope = MutableMapping[str, Any]


async def open_raw(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def test_slow_app_slows_the_client_send() -> None:
    """An app that doesn't read leaves the body in the socket: the client's send blocks."""
    release = trio.Event()
    received = 0

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal received
        if scope["type"] != "http":
            return
        await release.wait()
        while True:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % received})

    total = 64 * 1024 * 1024
    chunk = b"x" * (1024 * 1024)
    sent = 0
    async with open_server(app) as server, await open_raw(server.port) as stream:
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
        done = trio.Event()

        async def writer() -> None:
            nonlocal sent
            while sent < total:
                await stream.send_all(chunk)
                sent += len(chunk)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.sleep(0.5)
            blocked_at = sent
            assert not done.is_set()
            assert blocked_at < total // 2, f"client sent {blocked_at} bytes unread"
            release.set()
            with trio.fail_after(20):
                await done.wait()
        data = b""
        with trio.fail_after(5):
            while not data.endswith(b"0\r\n\r\n"):
                data += await stream.receive_some(65536)
    assert b"\r\n%d\r\n" % total in data
    assert received == total


async def test_slow_client_slows_the_app_send() -> None:
    chunk = b"y" * 65536
    chunks_total = 1024  # 64 MiB
    progress = 0
    all_sent = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal progress
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % (len(chunk) * chunks_total))],
            }
        )
        for _ in range(chunks_total):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            progress += 1
        await send({"type": "http.response.body", "body": b""})
        all_sent.set()

    async with open_server(app) as server, await open_raw(server.port) as stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.sleep(0.5)
        stalled_at = progress
        assert stalled_at < chunks_total // 2, f"app sent {stalled_at} chunks to a stalled client"
        got = 0
        with trio.fail_after(20):
            while got < len(chunk) * chunks_total:
                got += len(await stream.receive_some(1 << 20))
            await all_sent.wait()
        assert progress == chunks_total


async def test_body_streams_in_pieces_with_more_body() -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            messages.append(message)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async with open_server(app) as server, await open_raw(server.port) as stream:
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        await trio.sleep(0.1)
        await stream.send_all(b"6\r\nsecond\r\n0\r\n\r\n")
        with trio.fail_after(5):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 204")
    assert all(m["type"] == "http.request" for m in messages)
    assert b"".join(m["body"] for m in messages) == b"firstsecond"
    assert messages[0]["more_body"] is True
    assert messages[-1]["more_body"] is False
    assert len(messages) >= 2


async def test_one_disconnect_when_client_leaves_while_app_is_busy() -> None:
    """The app sleeps without reading; the client leaves; the app then sees its body once,
    one http.disconnect, and a send() that raises an OSError."""
    client_gone = trio.Event()
    finished = trio.Event()
    messages: list[str] = []
    send_error: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await client_gone.wait()
        await trio.sleep(0.1)
        with trio.fail_after(5):
            while True:
                message = await receive()
                messages.append(message["type"])
                if message["type"] == "http.disconnect":
                    break
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as exc:
            send_error.append(exc)
        finished.set()

    async with open_server(app) as server:
        stream = await open_raw(server.port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        await trio.sleep(0.1)
        await stream.aclose()
        client_gone.set()
        with trio.fail_after(5):
            await finished.wait()
    assert messages == ["http.request", "http.disconnect"]
    assert len(send_error) == 1
    assert isinstance(send_error[0], OSError)


async def test_disconnect_while_waiting_for_the_body() -> None:
    messages: list[dict[str, Any]] = []
    finished = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with trio.fail_after(5):
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] == "http.disconnect":
                    break
        finished.set()

    async with open_server(app) as server:
        stream = await open_raw(server.port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npart")
        await trio.sleep(0.2)
        await stream.aclose()
        with trio.fail_after(5):
            await finished.wait()
    types = [m["type"] for m in messages]
    assert types.count("http.disconnect") == 1
    assert types[-1] == "http.disconnect"
    assert all(m["more_body"] for m in messages if m["type"] == "http.request")


async def test_receive_after_full_body_waits_for_disconnect() -> None:
    """Starlette-style: stream a response while a second task listens for disconnect."""
    disconnected = trio.Event()
    stopped = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert (await receive())["type"] == "http.request"

        async def listen() -> None:
            message = await receive()
            assert message["type"] == "http.disconnect"
            disconnected.set()
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                while True:
                    await send(
                        {"type": "http.response.body", "body": b"tick\n", "more_body": True}
                    )
                    await trio.sleep(0.02)
            except OSError:
                pass
        stopped.set()

    async with open_server(app) as server:
        stream = await open_raw(server.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
        await stream.aclose()
        with trio.fail_after(5):
            await disconnected.wait()
            await stopped.wait()


async def test_send_raises_oserror_after_client_is_gone() -> None:
    errors: list[BaseException] = []
    done = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            with trio.fail_after(5):
                while True:
                    await send(
                        {"type": "http.response.body", "body": b"z" * 65536, "more_body": True}
                    )
        except OSError as exc:
            errors.append(exc)
        done.set()

    async with open_server(app) as server:
        stream = await open_raw(server.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.receive_some(1024)
        await stream.aclose()
        with trio.fail_after(6):
            await done.wait()
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)


@pytest.mark.parametrize("style", ["class", "closure"])
async def test_asgi2_apps_are_wrapped(style: str) -> None:
    class ASGI2App:
        def __init__(self, scope: Scope) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            if self.scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"asgi2"})

    def closure_app(scope: Scope) -> Any:
        return ASGI2App(scope).__call__

    app = ASGI2App if style == "class" else closure_app
    async with open_server(app) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.text == "asgi2"


async def test_expect_100_client_reset_before_receive_gives_disconnect() -> None:
    """The lazy 100 Continue write fails: receive() returns http.disconnect, not an error."""
    proceed = trio.Event()
    got: list[Any] = []
    done = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await proceed.wait()
        try:
            got.append((await receive())["type"])
        except BaseException as exc:
            got.append(exc)
            raise
        finally:
            done.set()

    async with open_server(app, raise_app_exceptions=False) as server:
        stream = await open_raw(server.port)
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await trio.sleep(0.1)
        # Close with a reset (SO_LINGER 0), so the server's next write fails.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        await trio.sleep(0.1)
        proceed.set()
        with trio.fail_after(5):
            await done.wait()
    assert got == ["http.disconnect"]


async def test_uncaught_client_disconnected_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"fine"})
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            with trio.fail_after(5):
                while True:
                    chunk = {"type": "http.response.body", "body": b"q" * 65536, "more_body": True}
                    await send(chunk)
        finally:
            done.set()

    async with open_server(app) as server:
        stream = await open_raw(server.port)
        await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.receive_some(1024)
        await stream.aclose()
        with trio.fail_after(6):
            await done.wait()
        async with httpx.AsyncClient() as client:  # and the server carries on
            assert (await client.get(server.url)).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= 40]

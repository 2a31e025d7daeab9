"""WebSockets over loopback with real clients: trio-websocket, the `websockets` library (in a
thread) and raw sockets speaking wsproto frames for the misbehaving-peer cases."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
import trio_websocket
from websockets.sync.client import connect as sync_connect
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from trioserve.errors import ClientDisconnected
from trioserve.testing import open_server

KEY = base64.b64encode(b"fedcba9876543210")


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


def ws_app(app: Any) -> Any:
    """Wrap a websocket-only test app so it answers lifespan too."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            await app(scope, receive, send)

    return wrapped


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain http"})
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


class Recorder:
    """An app that accepts, records what it receives, and can be told what to do."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.send_errors: list[BaseException] = []
        self.done = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        self.scopes.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                message = await receive()
                self.received.append(message)
                if message["type"] == "websocket.disconnect":
                    break
            try:
                await send({"type": "websocket.send", "text": "too late"})
            except OSError as exc:
                self.send_errors.append(exc)
        finally:
            self.done.set()

    @property
    def disconnects(self) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == "websocket.disconnect"]


@asynccontextmanager
async def connect(url: str, **kwargs: Any) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """trio-websocket's client, making sure its socket gets closed.

    (trio-websocket 0.12 leaves the client socket open when the server closes first:
    its reader stops at the server's EOF and ``aclose()`` then returns early.)
    """
    async with trio_websocket.open_websocket_url(url, **kwargs) as ws:
        yield ws
    await trio.aclose_forcefully(ws._stream)


# -- raw-socket client helpers --------------------------------------------------------------
def handshake(path: str = "/", *extra: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY.decode()}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk


@asynccontextmanager
async def raw_ws(
    port: int, after_head: bytes = b""
) -> AsyncIterator[tuple[trio.SocketStream, Connection, bytes]]:
    """A raw connection that completed the handshake; yields (stream, client conn, leftover)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(handshake() + after_head)
        head, rest = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101 "), head
        yield stream, Connection(ConnectionType.CLIENT), rest


async def rejected(port: int, path: str = "/") -> tuple[int, dict[bytes, bytes], bytes]:
    """Send an upgrade request expecting a plain HTTP answer; (status, headers, body).

    (trio-websocket's ConnectionRejected path leaks its socket, so refusals are read here.)
    """
    client = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(handshake(path))
        client.send(h11.Request(method="GET", target=path, headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        response: Any = None
        body = b""
        with trio.fail_after(5):
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    return response.status_code, dict(response.headers), body


async def next_events(
    stream: trio.SocketStream, conn: Connection, leftover: bytes = b""
) -> list[Any]:
    if leftover:
        conn.receive_data(leftover)
    while True:
        events = list(conn.events())
        if events:
            return events
        data = await stream.receive_some(65536)
        conn.receive_data(data or None)


# -- tests ----------------------------------------------------------------------------------
async def test_echo_and_scope_with_trio_websocket() -> None:
    recorder = Recorder()
    async with open_server(recorder, root_path="/api") as server:
        async with connect(server.ws_url + "/room/1?x=y") as ws:
            await ws.send_message("hello")
            await ws.send_message(b"\x00\xff")
            with trio.fail_after(5):
                while len(recorder.received) < 2:
                    await trio.sleep(0.01)
        with trio.fail_after(5):
            await recorder.done.wait()
    scope = recorder.scopes[0]
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/api/room/1"
    assert scope["raw_path"] == b"/api/room/1"
    assert scope["query_string"] == b"x=y"
    assert scope["root_path"] == "/api"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["subprotocols"] == []
    assert "websocket.http.response" in scope["extensions"]
    assert recorder.received[:2] == [
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.receive", "bytes": b"\x00\xff"},
    ]
    assert recorder.disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]


async def test_echo_round_trips() -> None:
    async with open_server(echo) as server, connect(server.ws_url) as ws:
        for i in range(50):
            await ws.send_message(f"m{i}")
            assert await ws.get_message() == f"m{i}"


async def test_subprotocol_and_accept_headers() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        chosen = "v2" if "v2" in scope["subprotocols"] else None
        await send(
            {"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-room", b"7")]}
        )
        await send({"type": "websocket.send", "text": ",".join(scope["subprotocols"])})
        await send({"type": "websocket.close"})

    async with open_server(ws_app(app)) as server:

        def client() -> tuple[str | None, str | None, Any]:
            with sync_connect(server.ws_url, subprotocols=["v1", "v2"]) as ws:  # type: ignore[list-item]
                return ws.subprotocol, ws.response.headers.get("x-room"), ws.recv(timeout=5)

        subprotocol, room, text = await trio.to_thread.run_sync(client)
    assert subprotocol == "v2"
    assert room == "7"
    assert text == "v1,v2"


async def test_close_before_accept_is_403_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async with open_server(ws_app(app)) as server:
        status, _, _ = await rejected(server.port, "/private")
    assert status == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1
    assert "/private" in lines[0] and " 403 " in lines[0]


async def test_denial_response_with_streamed_body() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 418,
                "headers": [(b"x-why", b"teapot"), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"I'm ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"a teapot"})

    async with open_server(ws_app(app)) as server:
        status, headers, body = await rejected(server.port)
    assert status == 418
    assert headers[b"x-why"] == b"teapot"
    assert headers[b"transfer-encoding"] == b"chunked"  # streamed
    assert body == b"I'm a teapot"


async def test_server_close_code_and_reason_reach_the_client() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "go away"})

    async with open_server(ws_app(app)) as server, connect(server.ws_url) as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason.code == 4001
    assert info.value.reason.reason == "go away"


async def test_client_close_code_and_reason_reach_the_app() -> None:
    recorder = Recorder()
    async with open_server(recorder) as server:
        async with connect(server.ws_url) as ws:
            await ws.aclose(4002, "see you")
        with trio.fail_after(5):
            await recorder.done.wait()
    assert recorder.disconnects == [
        {"type": "websocket.disconnect", "code": 4002, "reason": "see you"}
    ]
    # send after the disconnect raises ClientDisconnected, an OSError
    assert len(recorder.send_errors) == 1
    assert isinstance(recorder.send_errors[0], ClientDisconnected)


async def test_one_mib_messages_with_permessage_deflate() -> None:
    async with open_server(echo) as server:

        def client() -> tuple[str | None, list[Any]]:
            text = "abcdefgh" * (128 * 1024)
            data = bytes(range(256)) * 4096
            with sync_connect(server.ws_url, max_size=2**21) as ws:
                ws.send(text)
                got_text = ws.recv(timeout=10)
                ws.send(data)
                got_bytes = ws.recv(timeout=10)
                return ws.response.headers.get("sec-websocket-extensions"), [
                    got_text == text,
                    got_bytes == data,
                    len(got_text),
                ]

        extensions, results = await trio.to_thread.run_sync(client)
    assert extensions is not None and extensions.startswith("permessage-deflate")
    assert results == [True, True, 1024 * 1024]


async def test_per_message_deflate_can_be_turned_off() -> None:
    async with open_server(echo, websocket_per_message_deflate=False) as server:

        def client() -> tuple[str | None, str]:
            with sync_connect(server.ws_url) as ws:
                ws.send("x" * 1000)
                return ws.response.headers.get("sec-websocket-extensions"), str(ws.recv(timeout=5))

        extensions, text = await trio.to_thread.run_sync(client)
    assert extensions is None
    assert text == "x" * 1000


async def test_oversized_message_closes_1009() -> None:
    recorder = Recorder()
    async with open_server(recorder, websocket_max_message_size=1000) as server:
        async with connect(server.ws_url) as ws:
            await ws.send_message(b"a" * 1000)
            await ws.send_message(b"b" * 1001)
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
        with trio.fail_after(5):
            await recorder.done.wait()
    assert info.value.reason.code == 1009
    assert recorder.received[0] == {"type": "websocket.receive", "bytes": b"a" * 1000}
    assert recorder.disconnects == [
        {"type": "websocket.disconnect", "code": 1009, "reason": "message too big"}
    ]


async def test_ping_timeout_closes_an_unresponsive_peer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.error")
    recorder = Recorder()
    options = {"websocket_ping_interval": 0.1, "websocket_ping_timeout": 0.2}
    async with open_server(recorder, **options) as server:
        async with raw_ws(server.port) as (stream, conn, rest):
            start = trio.current_time()
            seen: list[Any] = []
            with trio.fail_after(5):  # we never answer the pings
                while not any(isinstance(e, CloseConnection) for e in seen):
                    seen += await next_events(stream, conn, rest)
                    rest = b""
            elapsed = trio.current_time() - start
        with trio.fail_after(5):
            await recorder.done.wait()
    assert isinstance(seen[0], Ping)
    close = seen[-1]
    assert close.code == 1011
    assert 0.25 <= elapsed < 2
    assert recorder.disconnects == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert any("no pong" in r.getMessage() for r in caplog.records)


async def test_pings_answered_keep_the_socket_open() -> None:
    options = {"websocket_ping_interval": 0.05, "websocket_ping_timeout": 0.2}
    async with open_server(echo, **options) as server, connect(server.ws_url) as ws:
        await trio.sleep(0.6)  # many ping intervals and timeouts pass
        await ws.send_message("still here")
        assert await ws.get_message() == "still here"


async def test_twenty_clients_broadcasting() -> None:
    clients: set[Any] = set()
    n = 20

    async def chat(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        clients.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                for peer in list(clients):
                    try:
                        await peer({"type": "websocket.send", "text": message["text"]})
                    except OSError:
                        clients.discard(peer)
        finally:
            clients.discard(send)

    received: dict[int, list[str]] = {}
    async with open_server(ws_app(chat)) as server, trio.open_nursery() as nursery:
        connected = 0
        all_connected = trio.Event()
        go = trio.Event()

        async def member(i: int) -> None:
            nonlocal connected
            async with connect(server.ws_url) as ws:
                connected += 1
                with trio.fail_after(5):
                    while len(clients) < n:
                        await trio.sleep(0.01)
                if connected == n:
                    all_connected.set()
                await go.wait()
                await ws.send_message(f"from {i}")
                got: list[str] = []
                with trio.fail_after(10):
                    while len(got) < n:
                        got.append(str(await ws.get_message()))
                received[i] = got

        for i in range(n):
            nursery.start_soon(member, i)
        with trio.fail_after(10):
            await all_connected.wait()
        go.set()
    assert len(received) == n
    for got in received.values():
        assert sorted(got) == sorted(f"from {i}" for i in range(n))


async def test_client_vanishing_mid_message_gives_one_1006() -> None:
    recorder = Recorder()
    async with open_server(recorder) as server:
        async with raw_ws(server.port) as (stream, conn, _):
            frame = conn.send(BytesMessage(data=b"z" * 10000))
            await stream.send_all(frame[:5000])  # half a frame, then gone
        with trio.fail_after(5):
            await recorder.done.wait()
        # No partial message reaches the app: only the one disconnect.
        assert recorder.received == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
        assert isinstance(recorder.send_errors[0], ClientDisconnected)
        # The server is unharmed.
        async with connect(server.ws_url) as ws:
            await ws.send_message("ok")
            with trio.fail_after(5):
                while len(recorder.received) < 2:
                    await trio.sleep(0.01)
    assert recorder.received[1] == {"type": "websocket.receive", "text": "ok"}


async def test_frames_sent_with_the_upgrade_request_are_not_lost() -> None:
    async with open_server(echo) as server:
        client = Connection(ConnectionType.CLIENT)
        early = client.send(TextMessage(data="early")) + client.send(TextMessage(data="bird"))
        async with raw_ws(server.port, after_head=early) as (stream, _, rest):
            texts: list[str] = []
            with trio.fail_after(5):
                while len(texts) < 2:
                    for event in await next_events(stream, client, rest):
                        texts.append(event.data)
                    rest = b""
    assert texts == ["early", "bird"]


async def test_peer_protocol_error_closes_1002_and_server_survives() -> None:
    recorder = Recorder()
    async with open_server(recorder) as server:
        async with raw_ws(server.port) as (stream, conn, rest):
            await stream.send_all(b"\x81\x02hi")  # unmasked: a protocol error
            with trio.fail_after(5):
                events = await next_events(stream, conn, rest)
        assert isinstance(events[0], CloseConnection) and events[0].code == 1002
        with trio.fail_after(5):
            await recorder.done.wait()
        async with connect(server.ws_url) as ws:
            await ws.send_message("fine")
    assert recorder.disconnects[0]["code"] == 1002


async def test_app_error_before_accept_is_500_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("boom before accept")

    async with open_server(ws_app(app), raise_app_exceptions=False) as server:
        status, _, _ = await rejected(server.port, "/ws")
    assert status == 500
    errors = [r for r in caplog.records if r.name == "trioserve.error" and r.levelno >= 40]
    assert len(errors) == 1
    assert "/ws" in errors[0].getMessage() and errors[0].exc_info is not None


async def test_app_error_after_accept_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("boom after accept")

    server_cm = open_server(ws_app(app), raise_app_exceptions=False)
    async with server_cm as server, connect(server.ws_url) as ws:
        await ws.send_message("trigger")
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason.code == 1011
    assert len([r for r in caplog.records if r.levelno >= 40]) == 1


async def test_app_returning_without_close_closes_1000() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "bye"})

    async with open_server(ws_app(app)) as server, connect(server.ws_url) as ws:
        assert await ws.get_message() == "bye"
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason.code == 1000


async def test_app_returning_before_accept_is_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()

    async with open_server(ws_app(app)) as server:
        status, _, _ = await rejected(server.port)
    assert status == 500
    assert any("without accepting" in r.getMessage() for r in caplog.records)


async def test_bad_upgrades_get_clear_answers() -> None:
    async with open_server(echo) as server:
        for extra, status in (
            (("Sec-WebSocket-Version: 8",), b"426"),
            (("Sec-WebSocket-Key: short",), b"400"),
        ):
            raw = handshake().replace(b"Sec-WebSocket-Version: 13\r\n", b"")
            raw = raw.replace(f"Sec-WebSocket-Key: {KEY.decode()}\r\n".encode(), b"")
            base = [
                line
                for line in ("Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY.decode()}")
                if line.split(":")[0] != extra[0].split(":")[0]
            ]
            raw = raw[:-2] + ("\r\n".join([*base, *extra]) + "\r\n\r\n").encode()
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(raw)
                with trio.fail_after(5):
                    answer = await read_all(stream)
            assert answer.split(b" ")[1] == status, answer
            if status == b"426":
                assert b"sec-websocket-version: 13" in answer.lower()
        # A request offering another protocol upgrade is plain HTTP for the app.
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
                b"Connection: close\r\n\r\n"
            )
            with trio.fail_after(5):
                answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"plain http" in answer


async def test_access_log_line_for_a_websocket(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    async with open_server(echo) as server, connect(server.ws_url + "/live") as ws:
        await ws.send_message("x")
        await ws.get_message()
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1
    assert "/live" in lines[0] and " 101 " in lines[0] and "WS/1.1" in lines[0]


async def check_the_reading_stops(total: int, settle: float = 1) -> None:
    """Send ``total`` 1 MiB messages to an app that doesn't read yet, with an app queue of 2.

    The server must stop reading (the client's sends block: TCP backpressure), then deliver
    every message in order once the app reads.
    """
    release = trio.Event()
    got: list[int] = []

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            got.append(len(message["bytes"]))

    chunk = b"q" * (1 << 20)
    server_cm = open_server(ws_app(slow), max_app_queue_size=2)
    async with server_cm as server, raw_ws(server.port) as (stream, conn, _):
        frames = [conn.send(BytesMessage(data=chunk)) for _ in range(total)]
        sent = 0
        all_sent = trio.Event()

        async def sender() -> None:
            nonlocal sent
            for frame in frames:
                await stream.send_all(frame)
                sent += 1
            all_sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.sleep(settle)  # let the client push as much as TCP takes
            stalled_at = sent
            assert not all_sent.is_set(), "the server kept reading for an app that did not"
            release.set()
            with trio.fail_after(20):
                await all_sent.wait()
                while len(got) < total:
                    await trio.sleep(0.01)
        await stream.send_all(conn.send(CloseConnection(code=1000)))
    assert stalled_at < total - 4
    assert got == [1 << 20] * total


async def test_slow_app_stops_the_reading() -> None:
    """A full app queue stops the reading, so the client's sends block (TCP backpressure)."""
    await check_the_reading_stops(total=64)


async def test_shutdown_closes_open_websockets_with_1001() -> None:
    recorder = Recorder()
    closed: list[Any] = []
    async with trio.open_nursery() as nursery:
        ready = trio.Event()

        async def client(url: str) -> None:
            async with connect(url) as ws:
                ready.set()
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                closed.append(info.value.reason)

        start = time.monotonic()
        async with open_server(recorder, graceful_timeout=5) as server:
            nursery.start_soon(client, server.ws_url)
            await ready.wait()
        elapsed = time.monotonic() - start
    assert closed[0].code == 1001
    assert recorder.disconnects == [
        {"type": "websocket.disconnect", "code": 1001, "reason": "server shutting down"}
    ]
    assert elapsed < 3


async def test_shutdown_deadline_holds_for_a_stuck_websocket_app() -> None:
    async def stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await trio.sleep_forever()  # ignores the disconnect

    async with trio.open_nursery() as nursery:
        ready = trio.Event()
        codes: list[int] = []

        async def client(url: str) -> None:
            async with connect(url) as ws:
                ready.set()
                try:
                    await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    codes.append(exc.reason.code)

        async with open_server(ws_app(stuck), graceful_timeout=0.5) as server:
            nursery.start_soon(client, server.ws_url)
            await ready.wait()
            start = trio.current_time()
        elapsed = trio.current_time() - start
    assert 0.4 < elapsed < 2.5
    assert codes and codes[0] in (1001, 1006)


async def test_server_names_and_limit_concurrency_gate_upgrades() -> None:
    async with open_server(echo, server_names=["good.example"]) as server:
        status, _, _ = await rejected(server.port)
    assert status == 404
    async with open_server(echo, limit_concurrency=1) as server:
        async with connect(server.ws_url) as ws:
            await ws.send_message("holding the only slot")
            await ws.get_message()
            status, _, _ = await rejected(server.port)
        assert status == 503

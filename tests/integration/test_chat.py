"""examples/chat.py (Starlette WebSocket chat) on trioserve, with real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
import trio_websocket
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect as sync_connect

from examples.chat import app
from tests.server.test_websocket import rejected
from trioserve.testing import open_server


@asynccontextmanager
async def member(url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket_url(url) as ws:
        yield ws
    # trio-websocket 0.12 leaves its socket open when the server closed first.
    await trio.aclose_forcefully(ws._stream)


async def messages(ws: trio_websocket.WebSocketConnection, count: int) -> list[str]:
    got: list[str] = []
    with trio.fail_after(5):
        while len(got) < count:
            got.append(str(await ws.get_message()))
    return got


async def test_page_is_served() -> None:
    async with open_server(app) as server, httpx.AsyncClient() as client:
        page = await client.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "new WebSocket(" in page.text and "/ws?name=" in page.text


async def test_chat_broadcasts_between_members() -> None:
    async with (
        open_server(app) as server,
        member(server.ws_url + "/ws?name=ann") as ann,
    ):
        assert await messages(ann, 1) == ["ann joined"]
        async with member(server.ws_url + "/ws?name=bob") as bob:
            assert await messages(bob, 1) == ["bob joined"]
            assert await messages(ann, 1) == ["bob joined"]
            await bob.send_message("hi ann")
            assert await messages(ann, 1) == ["bob: hi ann"]
            assert await messages(bob, 1) == ["bob: hi ann"]
        assert await messages(ann, 1) == ["bob left"]


async def test_chat_with_the_websockets_library_and_deflate() -> None:
    async with open_server(app) as server:

        def visit() -> tuple[str | None, list[Any]]:
            with sync_connect(server.ws_url + "/ws?name=cy") as ws:
                first = ws.recv(timeout=5)
                ws.send("x" * 100_000)
                second = ws.recv(timeout=5)
                return ws.response.headers.get("sec-websocket-extensions"), [first, second]

        extensions, got = await trio.to_thread.run_sync(visit)
    assert extensions is not None and "permessage-deflate" in extensions
    assert got == ["cy joined", "cy: " + "x" * 100_000]


async def test_a_vanished_member_is_dropped_and_the_room_goes_on() -> None:
    async with open_server(app) as server, member(server.ws_url + "/ws?name=dee") as dee:
        assert await messages(dee, 1) == ["dee joined"]
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(
            b"GET /ws?name=eve HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        with trio.fail_after(5):
            head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert await messages(dee, 1) == ["eve joined"]
        await trio.aclose_forcefully(stream)  # eve vanishes without a close frame
        assert await messages(dee, 1) == ["eve left"]
        await dee.send_message("still here")
        assert await messages(dee, 1) == ["dee: still here"]


async def test_starlette_denial_response_and_close_before_accept() -> None:
    async def guarded(websocket: WebSocket) -> None:
        token = websocket.query_params.get("token")
        if token is None:
            await websocket.send_denial_response(PlainTextResponse("no token", 401))
        elif token != "secret":
            await websocket.close()
        else:  # pragma: no cover - not reached in this test
            await websocket.accept()

    guard = Starlette(routes=[WebSocketRoute("/guarded", guarded)])
    async with open_server(guard) as server:
        denied = await rejected(server.port, "/guarded")
        forbidden = await rejected(server.port, "/guarded?token=wrong")
    assert denied[0] == 401 and denied[2] == b"no token"
    assert forbidden[0] == 403

"""The WebSocket test client against a tiny independent wsproto server (not trioserve)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from trioserve.testing import InMemoryTransport, WebSocketClosed, WebSocketDenied, ws_connect


async def _echo_handler(seen: list[Request], stream: trio.SocketStream) -> None:
    """Echo server: /deny refuses, /bye closes with 4001, others echo (text upper-cased)."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        while True:
            data = await stream.receive_some(65536)
            ws.receive_data(data or None)
            out = b""
            for event in ws.events():
                if isinstance(event, Request):
                    seen.append(event)
                    if event.target == "/deny":
                        out += ws.send(
                            RejectConnection(
                                status_code=403,
                                headers=[(b"content-length", b"9"), (b"x-why", b"nope")],
                                has_body=True,
                            )
                        )
                        out += ws.send(RejectData(data=b"forbidden"))
                    else:
                        proto = event.subprotocols[0] if event.subprotocols else None
                        out += ws.send(AcceptConnection(subprotocol=proto))
                        if event.target == "/bye":
                            out += ws.send(CloseConnection(code=4001, reason="bye now"))
                        if event.target == "/fragments":
                            out += ws.send(TextMessage(data="hel", message_finished=False))
                            out += ws.send(TextMessage(data="lo"))
                            out += ws.send(Ping(b"are you there"))
                elif isinstance(event, TextMessage):
                    out += ws.send(TextMessage(data=event.data.upper()))
                elif isinstance(event, BytesMessage):
                    out += ws.send(BytesMessage(data=bytes(event.data)[::-1]))
                elif isinstance(event, (Ping, CloseConnection)) and ws.state.name != "CLOSED":
                    out += ws.send(event.response())
            if out:
                await stream.send_all(out)
            if not data or ws.state.name in ("CLOSED", "REJECTING"):
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


@pytest.fixture
async def echo_url(nursery: trio.Nursery) -> tuple[str, list[Request]]:
    seen: list[Request] = []
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_echo_handler, seen), 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}", seen


async def test_text_bytes_json_and_close(echo_url: Any) -> None:
    url, seen = echo_url
    async with ws_connect(
        url, "/echo?x=1", subprotocols=["chat", "other"], headers=[("X-Token", "t")]
    ) as ws:
        assert ws.subprotocol == "chat"
        await ws.send_text("hello")
        assert await ws.receive_text() == "HELLO"
        await ws.send_bytes(b"abc")
        assert await ws.receive_bytes() == b"cba"
        await ws.send_json({"a": 1})
        assert await ws.receive_json() == {"A": 1}
        await ws.close(1000, "done")
        assert ws.close_code == 1000
    request = seen[0]
    assert request.target == "/echo?x=1"
    assert request.subprotocols == ["chat", "other"]
    assert (b"x-token", b"t") in [(k.lower(), v) for k, v in request.extra_headers]


async def test_fragmented_message_is_joined_and_pings_answered(echo_url: Any) -> None:
    url, _ = echo_url
    async with ws_connect(url, "/fragments") as ws:
        assert await ws.receive_text() == "hello"
        await ws.send_text("still here")  # sent after the Pong went out
        assert await ws.receive_text() == "STILL HERE"


async def test_server_close_code_and_reason(echo_url: Any) -> None:
    url, _ = echo_url
    async with ws_connect(url, "/bye") as ws:
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
    assert (info.value.code, info.value.reason) == (4001, "bye now")
    assert (ws.close_code, ws.close_reason) == (4001, "bye now")
    with pytest.raises(WebSocketClosed):
        await ws.send_text("too late")


async def test_denial_carries_status_headers_and_body(echo_url: Any) -> None:
    url, _ = echo_url
    with pytest.raises(WebSocketDenied) as info:
        async with ws_connect(url, "/deny"):
            pass  # pragma: no cover
    denied = info.value
    assert denied.status_code == 403
    assert denied.body == b"forbidden"
    assert denied.header("X-Why") == "nope"
    assert "403" in str(denied)


async def test_wrong_message_type_is_a_clear_error(echo_url: Any) -> None:
    url, _ = echo_url
    async with ws_connect(url) as ws:
        await ws.send_bytes(b"xy")
        with pytest.raises(TypeError, match="expected a text message"):
            await ws.receive_text()


async def _echo_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text") or "?"})


async def test_server_keepalive_in_memory_with_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = InMemoryTransport(_echo_app, websocket_ping_interval=20, websocket_ping_timeout=10)
    async with transport:
        async with ws_connect(transport, "/ws") as ws:
            # A client blocked in receive() answers every ping: still open after 100 s.
            with trio.move_on_after(100) as waited:
                await ws.receive()
            assert waited.cancelled_caught
            await ws.send_text("still here")
            assert await ws.receive_text() == "still here"
        async with ws_connect(transport, "/ws") as ws:
            # A client that stops reading misses the pong deadline: the server gives up.
            start = trio.current_time()
            await trio.sleep(100)
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert (closed.value.code, closed.value.reason) == (1011, "keepalive ping timeout")
            assert start < trio.current_time()


async def test_permessage_deflate_in_memory() -> None:
    async with InMemoryTransport(_echo_app) as transport:
        async with ws_connect(transport, "/ws", compress=True) as ws:
            assert [ext.name for ext in ws.extensions] == ["permessage-deflate"]
            await ws.send_text("z" * 100_000)
            assert await ws.receive_text() == "z" * 100_000
        async with ws_connect(transport, "/ws") as ws:
            assert ws.extensions == []

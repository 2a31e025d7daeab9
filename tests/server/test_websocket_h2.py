"""WebSockets over HTTP/2 (RFC 8441): extended CONNECT, the same ASGI scope and messages
as over HTTP/1.1 (the shared WebSocket code), permessage-deflate, denial responses, close
codes. The client is raw HTTP/2 frames carrying wsproto's frames."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, TextMessage
from wsproto.extensions import PerMessageDeflate

from tests.h2raw import RawH2, close_all, get
from trioserve.testing import open_server


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await close_all()


SCOPES: list[dict[str, Any]] = []


async def ws_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})
        return
    if scope["type"] != "websocket":
        return
    SCOPES.append(scope)
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"x-why", b"no")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"denied"})
        return
    subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
            continue
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})


def connect(path: str, **extra: str) -> list[tuple[bytes, bytes]]:
    fields = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"localhost"),
        (b"sec-websocket-version", b"13"),
    ]
    return fields + [(k.replace("_", "-").encode(), v.encode()) for k, v in extra.items()]


class WSOverH2:
    """wsproto frames in the DATA of one HTTP/2 stream."""

    def __init__(self, client: RawH2, stream_id: int, extensions: list[Any] | None = None) -> None:
        self.client = client
        self.stream_id = stream_id
        self.ws = Connection(ConnectionType.CLIENT, extensions=extensions or [])
        self.ended = False

    async def send(self, event: Any) -> None:
        data = self.ws.send(event)
        for pos in range(0, len(data), 16384):  # the server's SETTINGS_MAX_FRAME_SIZE
            await self.client.send(self.client.data(self.stream_id, data[pos : pos + 16384]))

    async def events(self, timeout: float = 5.0) -> list[Any]:
        """Events from the next DATA frame(s) of this stream (END_STREAM noted)."""
        while True:
            frame = await self.client.frame(timeout)
            if frame.stream_id != self.stream_id:
                continue
            if isinstance(frame, RstStreamFrame):
                self.ended = True
                return []
            if isinstance(frame, DataFrame):
                if frame.data:
                    await self.client.send(
                        self.client.window_update(0, len(frame.data)),
                        self.client.window_update(self.stream_id, len(frame.data)),
                    )
                self.ws.receive_data(
                    frame.data or None if "END_STREAM" in frame.flags else frame.data
                )
                events = list(self.ws.events())
                if "END_STREAM" in frame.flags:
                    self.ended = True
                if events or self.ended:
                    return events


async def test_settings_enable_connect_protocol_and_echo_with_subprotocol() -> None:
    SCOPES.clear()
    async with open_server(ws_app) as server:
        client = await RawH2.open(server.port)
        assert client.server_settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
        await client.send(
            client.headers(1, connect("/chat?room=1", sec_websocket_protocol="chat, x"), False)
        )
        head = await client.frame()
        assert isinstance(head, HeadersFrame) and "END_STREAM" not in head.flags
        fields = client.decode(head)
        assert fields[b":status"] == b"200"
        assert fields[b"sec-websocket-protocol"] == b"chat"
        assert b"sec-websocket-accept" not in fields and b"upgrade" not in fields
        ws = WSOverH2(client, 1)
        await ws.send(TextMessage("hello"))
        assert [(type(e), e.data) for e in await ws.events()] == [(TextMessage, "hello")]
        await ws.send(BytesMessage(b"\x00\x01" * 50000))  # over several DATA frames
        got = b""
        while len(got) < 100000:
            got += b"".join(e.data for e in await ws.events() if isinstance(e, Message))
        assert got == b"\x00\x01" * 50000
        # Another stream on the same connection is plain HTTP meanwhile.
        await client.send(client.headers(3, get("/")))
        assert (await client.response(3))["body"] == b"plain"
        await ws.send(TextMessage("close"))
        events = await ws.events()
        assert isinstance(events[0], CloseConnection)
        assert (events[0].code, events[0].reason) == (4001, "bye")
        await ws.send(events[0].response())
        while not ws.ended:
            await ws.events()
    scope = SCOPES[0]
    assert scope["type"] == "websocket" and scope["http_version"] == "2"
    assert (scope["path"], scope["query_string"]) == ("/chat", b"room=1")
    assert scope["scheme"] == "ws" and scope["subprotocols"] == ["chat", "x"]
    assert (b"host", b"localhost") in scope["headers"]


async def test_permessage_deflate_over_h2() -> None:
    async with open_server(ws_app) as server:
        client = await RawH2.open(server.port)
        offer = PerMessageDeflate().offer()
        assert isinstance(offer, str)
        offer = "permessage-deflate; " + offer
        await client.send(
            client.headers(1, connect("/", sec_websocket_extensions=offer), end_stream=False)
        )
        fields = client.decode(await client.frame())
        assert fields[b":status"] == b"200"
        assert fields[b"sec-websocket-extensions"].startswith(b"permessage-deflate")
        deflate = PerMessageDeflate()
        deflate.finalize(fields[b"sec-websocket-extensions"].decode())
        ws = WSOverH2(client, 1, extensions=[deflate])
        await ws.send(TextMessage("a" * 10000))
        first = await client.frame()
        assert isinstance(first, DataFrame) and len(first.data) < 200  # compressed
        ws.ws.receive_data(first.data)
        assert [e.data for e in ws.ws.events()] == ["a" * 10000]


async def test_denial_response_over_h2() -> None:
    async with open_server(ws_app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, connect("/deny"), end_stream=False))
        response = await client.response(1)
    assert response["headers"][b":status"] == b"403"
    assert response["headers"][b"x-why"] == b"no"
    assert response["body"] == b"denied"


async def test_client_reset_is_a_1006_disconnect_and_bad_versions_are_refused() -> None:
    async with open_server(ws_app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, connect("/"), end_stream=False))
        assert client.decode(await client.frame())[b":status"] == b"200"
        await client.send(client.rst(1, ErrorCodes.CANCEL))
        fields = connect("/")
        fields[-1] = (b"sec-websocket-version", b"8")
        await client.send(client.headers(3, fields, end_stream=False))
        response = await client.response(3)
        assert response["headers"][b":status"] == b"400"
        await client.send(client.headers(5, get("/")))
        assert (await client.response(5))["body"] == b"plain"


async def test_websocket_streams_do_not_block_shutdown() -> None:
    with trio.fail_after(10):
        async with open_server(ws_app, graceful_timeout=1) as server:
            client = await RawH2.open(server.port)
            await client.send(client.headers(1, connect("/"), end_stream=False))
            assert client.decode(await client.frame())[b":status"] == b"200"


async def test_server_names_refusal_is_an_http2_response() -> None:
    async with open_server(ws_app, server_names=["example.org"]) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, connect("/"), end_stream=False))
        response = await client.response(1)
        await client.send(client.headers(3, get("/", authority="example.org")))
        plain = await client.response(3)
    assert response["headers"][b":status"] == b"404"
    assert response["headers"][b"content-length"] == str(len(response["body"])).encode()
    assert b"date" in response["headers"]
    assert plain["body"] == b"plain"

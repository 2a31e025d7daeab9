"""WebSockets over HTTP/3 (RFC 9220): extended CONNECT on a QUIC stream served by the
shared WebSocket code; the client is aioquic's H3 client carrying wsproto's frames."""

from __future__ import annotations

from typing import Any

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, TextMessage
from wsproto.extensions import PerMessageDeflate

from tests.h3client import H3Client

from .conftest import Certs, h3_session

SCOPES: list[dict[str, Any]] = []
DISCONNECTS: list[dict[str, Any]] = []


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
            DISCONNECTS.append(message)
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
            continue
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})


def connect_fields(path: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", b"localhost"),
        (b"sec-websocket-version", b"13"),
        *extra,
    ]


class WSOverH3:
    """wsproto frames in the DATA of one HTTP/3 stream."""

    def __init__(self, client: H3Client, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.ws = Connection(ConnectionType.CLIENT)
        self.seen = 0

    def send(self, event: Any) -> None:
        self.client.send_body(self.stream_id, self.ws.send(event))

    async def events(self) -> list[Any]:
        result = self.client.streams[self.stream_id]
        await self.client.wait(
            self.stream_id, until=lambda r: len(r.body) > self.seen or r.ended or r.reset
        )
        self.ws.receive_data(bytes(result.body[self.seen :]))
        self.seen = len(result.body)
        if result.ended:
            self.ws.receive_data(None)
        return list(self.ws.events())


async def test_echo_close_and_plain_http_beside(certs: Certs) -> None:
    SCOPES.clear()
    async with h3_session(ws_app, certs) as (_, client):
        assert (client.h3.received_settings or {}).get(0x8) == 1  # ENABLE_CONNECT_PROTOCOL
        stream_id = client.open(
            fields=connect_fields(b"/chat?room=1", (b"sec-websocket-protocol", b"chat, x")),
            end=False,
        )
        result = await client.wait(stream_id, until=lambda r: bool(r.headers))
        assert result.status == 200
        assert result.header(b"sec-websocket-protocol") == b"chat"
        ws = WSOverH3(client, stream_id)
        ws.send(TextMessage("hello"))
        assert [(type(e), e.data) for e in await ws.events()] == [(TextMessage, "hello")]
        ws.send(BytesMessage(b"\x00\x01" * 200_000))  # several receive windows
        got = b""
        while len(got) < 400_000:
            got += b"".join(e.data for e in await ws.events() if isinstance(e, Message))
        assert got == b"\x00\x01" * 200_000
        assert bytes((await client.request(b"/")).body) == b"plain"
        ws.send(TextMessage("close"))
        events = await ws.events()
        assert isinstance(events[0], CloseConnection)
        assert (events[0].code, events[0].reason) == (4001, "bye")
        ws.send(events[0].response())
        await client.wait(stream_id)
        assert client.streams[stream_id].ended
    scope = SCOPES[0]
    assert scope["type"] == "websocket" and scope["http_version"] == "3"
    assert (scope["path"], scope["query_string"]) == ("/chat", b"room=1")
    assert scope["scheme"] == "wss" and scope["subprotocols"] == ["chat", "x"]
    assert (b"host", b"localhost") in scope["headers"]


async def test_denial_and_bad_version(certs: Certs) -> None:
    async with h3_session(ws_app, certs) as (_, client):
        denied = await client.wait(client.open(fields=connect_fields(b"/deny"), end=False))
        assert denied.status == 403
        assert denied.header(b"x-why") == b"no"
        assert bytes(denied.body) == b"denied"
        fields = connect_fields(b"/")
        fields[-1] = (b"sec-websocket-version", b"8")
        bad = await client.wait(client.open(fields=fields, end=False))
        assert bad.status == 400


async def test_client_cancel_is_a_disconnect(certs: Certs) -> None:
    DISCONNECTS.clear()
    async with h3_session(ws_app, certs) as (_, client):
        stream_id = client.open(fields=connect_fields(b"/"), end=False)
        assert (await client.wait(stream_id, until=lambda r: bool(r.headers))).status == 200
        client.cancel(stream_id)
        with trio.fail_after(5):
            while not DISCONNECTS:
                await trio.sleep(0.02)
        assert DISCONNECTS[0]["code"] == 1006
        assert bytes((await client.request(b"/")).body) == b"plain"


async def test_permessage_deflate_over_h3(certs: Certs) -> None:
    offer = PerMessageDeflate().offer()
    assert isinstance(offer, str)
    async with h3_session(ws_app, certs) as (_, client):
        stream_id = client.open(
            fields=connect_fields(
                b"/", (b"sec-websocket-extensions", f"permessage-deflate; {offer}".encode())
            ),
            end=False,
        )
        result = await client.wait(stream_id, until=lambda r: bool(r.headers))
        accepted = result.header(b"sec-websocket-extensions") or b""
        assert accepted.startswith(b"permessage-deflate")
        deflate = PerMessageDeflate()
        deflate.finalize(accepted.decode())
        ws = WSOverH3(client, stream_id)
        ws.ws = Connection(ConnectionType.CLIENT, extensions=[deflate])
        ws.send(TextMessage("a" * 10000))
        await client.wait(stream_id, until=lambda r: len(r.body) > 0)
        await trio.sleep(0.1)
        assert len(client.streams[stream_id].body) < 200  # compressed on the wire
        assert [e.data for e in await ws.events()] == ["a" * 10000]

"""WebSocketSession without sockets: upgrade checks, scope, handshake bytes, frames both ways.

The peer is a wsproto client connection, so the frames are real (masked) WebSocket frames.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import generate_accept_token

from trioserve.sansio.asgi import UnexpectedMessage
from trioserve.sansio.events import Request
from trioserve.sansio.http11 import HTTP11Protocol
from trioserve.sansio.websocket import (
    HandshakeError,
    SessionClosed,
    WebSocketSession,
    build_websocket_scope,
    check_handshake,
    negotiate_deflate,
    wants_websocket,
)

KEY = base64.b64encode(b"0123456789abcdef")


def upgrade_head(*extra: bytes, target: bytes = b"/chat?room=1") -> bytes:
    lines = [
        b"GET " + target + b" HTTP/1.1",
        b"Host: example.com",
        b"Upgrade: websocket",
        b"Connection: keep-alive, Upgrade",
        b"Sec-WebSocket-Key: " + KEY,
        b"Sec-WebSocket-Version: 13",
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def parse(raw: bytes) -> tuple[HTTP11Protocol, Request]:
    proto = HTTP11Protocol()
    proto.receive_data(raw)
    request = proto.next_event()
    assert isinstance(request, Request)
    return proto, request


def session_for(raw: bytes, *, max_size: int = 1 << 20, deflate: bool = False) -> WebSocketSession:
    proto, request = parse(raw)
    key = check_handshake(request)
    return WebSocketSession(
        request, proto, key=key, max_message_size=max_size, per_message_deflate=deflate
    )


def accepted(raw_after: bytes = b"", **kwargs: Any) -> tuple[WebSocketSession, bytes]:
    session = session_for(upgrade_head() + raw_after, **kwargs)
    head = session.app_message({"type": "websocket.accept"})
    return session, head


def client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def request_with(headers: list[tuple[bytes, bytes]], method: bytes = b"GET") -> Request:
    return Request(method=method, target=b"/", headers=headers, http_version="1.1")


GOOD = [
    (b"host", b"x"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
]


# -- recognising and checking the upgrade ---------------------------------------------------
def test_wants_websocket() -> None:
    assert wants_websocket(request_with(GOOD))
    assert wants_websocket(request_with([(b"upgrade", b"h2c, WebSocket")]))
    assert not wants_websocket(request_with([(b"upgrade", b"h2c")]))
    assert not wants_websocket(request_with([(b"upgrade", b"websocketx")]))
    assert not wants_websocket(request_with([(b"host", b"x")]))


def test_check_handshake_accepts_a_good_request() -> None:
    assert check_handshake(request_with(GOOD)) == KEY


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({b"connection": b"keep-alive"}, 400),
        ({b"sec-websocket-version": b"8"}, 426),
        ({b"sec-websocket-key": b"too-short"}, 400),
        ({b"sec-websocket-key": None}, 400),
        ({b"content-length": b"5"}, 400),
    ],
)
def test_check_handshake_refuses(change: dict[bytes, bytes | None], status: int) -> None:
    headers = [(k, change.get(k, v)) for k, v in GOOD if change.get(k, v) is not None]
    headers += [(k, v) for k, v in change.items() if v is not None and k not in dict(GOOD)]
    with pytest.raises(HandshakeError) as info:
        check_handshake(request_with(headers))  # type: ignore[arg-type]
    assert info.value.status == status
    if status == 426:
        assert (b"sec-websocket-version", b"13") in info.value.headers


def test_check_handshake_refuses_post_and_http10() -> None:
    with pytest.raises(HandshakeError):
        check_handshake(request_with(GOOD, method=b"POST"))
    old = Request(method=b"GET", target=b"/", headers=GOOD, http_version="1.0")
    with pytest.raises(HandshakeError):
        check_handshake(old)


# -- scope ----------------------------------------------------------------------------------
def test_scope() -> None:
    _, request = parse(upgrade_head(b"Sec-WebSocket-Protocol: chat, superchat"))
    state = {"db": object()}
    scope = build_websocket_scope(
        request,
        scheme="https",
        client=("1.2.3.4", 5),
        server=("5.6.7.8", 443),
        root_path="/api",
        state=state,
    )
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["scheme"] == "wss"
    assert "method" not in scope
    assert scope["path"] == "/api/chat"
    assert scope["raw_path"] == b"/api/chat"
    assert scope["query_string"] == b"room=1"
    assert scope["root_path"] == "/api"
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["client"] == ("1.2.3.4", 5) and scope["server"] == ("5.6.7.8", 443)
    assert scope["state"] == state and scope["state"] is not state
    assert scope["state"]["db"] is state["db"]  # a shallow copy
    plain = build_websocket_scope(
        request, scheme="http", client=None, server=None, root_path="", state=None
    )
    assert plain["scheme"] == "ws" and "state" not in plain


# -- handshake ------------------------------------------------------------------------------
def test_accept_writes_101_with_the_accept_token() -> None:
    session, head = accepted()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"sec-websocket-accept: " + generate_accept_token(KEY) + b"\r\n" in head
    assert b"upgrade: websocket\r\n" in head
    assert head.endswith(b"\r\n\r\n")
    assert session.status == 101


def test_accept_with_subprotocol_and_headers() -> None:
    session = session_for(upgrade_head(b"Sec-WebSocket-Protocol: a, b"))
    head = session.app_message(
        {
            "type": "websocket.accept",
            "subprotocol": "b",
            "headers": [(b"X-Extra", b"1"), (b"upgrade", b"evil")],
        },
        [(b"server", b"trioserve")],
    )
    assert b"sec-websocket-protocol: b\r\n" in head
    assert b"x-extra: 1\r\n" in head
    assert b"server: trioserve\r\n" in head
    assert b"evil" not in head  # the app cannot rewrite the handshake


def test_bytes_after_the_upgrade_request_are_not_lost() -> None:
    peer = client()
    frames = peer.send(TextMessage(data="early")) + peer.send(BytesMessage(data=b"bird"))
    session, _ = accepted(frames)
    assert session.app_messages() == [
        {"type": "websocket.receive", "text": "early"},
        {"type": "websocket.receive", "bytes": b"bird"},
    ]


def test_close_before_accept_is_403() -> None:
    session = session_for(upgrade_head())
    out = session.app_message({"type": "websocket.close", "code": 1000})
    assert out.startswith(b"HTTP/1.1 403 ")
    assert b"connection: close" in out.lower()
    assert session.status == 403
    with pytest.raises(SessionClosed):
        session.app_message({"type": "websocket.send", "text": "x"})


def test_denial_response_is_streamed() -> None:
    session = session_for(upgrade_head())
    head = session.app_message(
        {
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [(b"www-authenticate", b"Bearer")],
        }
    )
    assert head == b""  # held back until the first body part
    first = session.app_message(
        {"type": "websocket.http.response.body", "body": b"no ", "more_body": True}
    )
    last = session.app_message({"type": "websocket.http.response.body", "body": b"entry"})
    out = first + last
    assert out.startswith(b"HTTP/1.1 401 ")
    assert b"www-authenticate: Bearer" in out
    assert b"transfer-encoding: chunked" in out.lower()
    assert out.endswith(b"3\r\nno \r\n5\r\nentry\r\n0\r\n\r\n")
    assert session.status == 401 and not session.denial_incomplete


def test_wrong_messages_before_accept() -> None:
    session = session_for(upgrade_head())
    with pytest.raises(UnexpectedMessage):
        session.app_message({"type": "websocket.send", "text": "too early"})
    with pytest.raises(UnexpectedMessage):
        session.app_message({"type": "websocket.http.response.body", "body": b""})
    with pytest.raises(UnexpectedMessage):
        session.app_message({"no": "type"})
    assert session.handshake_pending


def test_refuse_500() -> None:
    session = session_for(upgrade_head())
    out = session.refuse(500)
    assert out.startswith(b"HTTP/1.1 500 ") and out.endswith(b"Internal Server Error\n")


# -- messages -------------------------------------------------------------------------------
def test_send_text_and_bytes() -> None:
    session, _ = accepted()
    peer = client()
    out = session.app_message({"type": "websocket.send", "text": "héllo"})
    out += session.app_message({"type": "websocket.send", "bytes": b"\x00\x01"})
    peer.receive_data(out)
    events = list(peer.events())
    assert [type(e) for e in events] == [TextMessage, BytesMessage]
    assert events[0].data == "héllo" and events[1].data == b"\x00\x01"
    assert session.bytes_sent == 7


@pytest.mark.parametrize(
    "message",
    [
        {"type": "websocket.send"},
        {"type": "websocket.send", "text": "a", "bytes": b"b"},
        {"type": "websocket.send", "text": b"not str"},
        {"type": "websocket.send", "bytes": "not bytes"},
        {"type": "websocket.close", "code": 99},
        {"type": "websocket.accept"},
    ],
)
def test_bad_messages_after_accept(message: dict[str, Any]) -> None:
    session, _ = accepted()
    with pytest.raises(UnexpectedMessage):
        session.app_message(message)


def test_app_close_then_send_raises_and_second_close_is_harmless() -> None:
    session, _ = accepted()
    peer = client()
    out = session.app_message({"type": "websocket.close", "code": 4000, "reason": "bye"})
    peer.receive_data(out)
    (event,) = list(peer.events())
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (4000, "bye")
    assert session.app_message({"type": "websocket.close"}) == b""
    with pytest.raises(SessionClosed):
        session.app_message({"type": "websocket.send", "text": "late"})
    # the peer's answer ends it; the app hears the peer's code
    peer_close = peer.send(event.response())
    session.receive_data(peer_close)
    assert session.app_messages() == [
        {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
    ]


def test_peer_close_is_echoed_and_reported_once() -> None:
    session, _ = accepted()
    peer = client()
    session.receive_data(peer.send(CloseConnection(code=4321, reason="done")))
    assert session.app_messages() == [
        {"type": "websocket.disconnect", "code": 4321, "reason": "done"}
    ]
    echo = session.data_to_send()
    peer.receive_data(echo)
    (event,) = list(peer.events())
    assert isinstance(event, CloseConnection) and event.code == 4321
    session.receive_data(b"more")  # ignored after the end
    assert session.app_messages() == []
    assert session.connection_lost() is None  # never a second disconnect
    with pytest.raises(SessionClosed):
        session.app_message({"type": "websocket.send", "bytes": b"x"})


def test_ping_gets_a_pong_and_our_ping_is_matched() -> None:
    session, _ = accepted()
    peer = client()
    session.receive_data(peer.send(Ping(payload=b"abc")))
    assert session.app_messages() == []
    peer.receive_data(session.data_to_send())
    (pong,) = list(peer.events())
    assert isinstance(pong, Pong) and pong.payload == b"abc"

    ping = session.ping(b"\x00\x00\x00\x01")
    assert session.awaiting_pong == b"\x00\x00\x00\x01"
    peer.receive_data(ping)
    (received,) = list(peer.events())
    session.receive_data(peer.send(received.response()))  # type: ignore[attr-defined]
    assert session.app_messages() == []
    assert session.awaiting_pong is None


def test_an_accepted_session_keeps_nothing_of_the_handshake() -> None:
    # Thousands of idle WebSockets: the upgrade request, its key and the HTTP/1.1 side
    # were only needed to answer it, and no reply buffer is held between replies.
    session, _ = accepted()
    assert session.request is None and session.proto is None
    session.receive_data(client().send(Ping(b"hi")))
    assert session.app_messages() == []
    assert session.data_to_send() == Connection(ConnectionType.SERVER).send(Pong(b"hi"))
    assert session.data_to_send() == b""


def test_fragmented_messages_are_joined() -> None:
    session, _ = accepted()
    peer = client()
    data = peer.send(TextMessage(data="ab", message_finished=False))
    data += peer.send(TextMessage(data="cd", message_finished=True))
    data += peer.send(BytesMessage(data=b"12", message_finished=False))
    data += peer.send(BytesMessage(data=b"34", message_finished=True))
    session.receive_data(data)
    assert session.app_messages() == [
        {"type": "websocket.receive", "text": "abcd"},
        {"type": "websocket.receive", "bytes": b"1234"},
    ]


@pytest.mark.parametrize("fragmented", [False, True])
@pytest.mark.parametrize("text", [False, True])
def test_oversized_message_closes_1009(fragmented: bool, text: bool) -> None:
    session, _ = accepted(max_size=100)
    peer = client()
    ok = "x" * 100 if text else b"x" * 100
    big = "y" * 101 if text else b"y" * 101
    kind: Any = TextMessage if text else BytesMessage
    data = peer.send(kind(data=ok))
    if fragmented:
        data += peer.send(kind(data=big[:60], message_finished=False))
        data += peer.send(kind(data=big[60:], message_finished=True))
    else:
        data += peer.send(kind(data=big))
    session.receive_data(data)
    messages = session.app_messages()
    assert messages[0]["type"] == "websocket.receive"
    assert messages[1] == {
        "type": "websocket.disconnect",
        "code": 1009,
        "reason": "message too big",
    }
    peer.receive_data(session.data_to_send())
    (event,) = list(peer.events())
    assert isinstance(event, CloseConnection) and event.code == 1009


def test_multibyte_text_is_measured_in_bytes() -> None:
    session, _ = accepted(max_size=100)
    peer = client()
    session.receive_data(peer.send(TextMessage(data="é" * 51)))  # 51 chars, 102 bytes
    assert session.app_messages()[0]["code"] == 1009


def test_protocol_error_closes_1002() -> None:
    session, _ = accepted()
    # An unmasked frame from a client is a protocol error.
    session.receive_data(b"\x81\x02hi")
    (message,) = session.app_messages()
    assert message["type"] == "websocket.disconnect" and message["code"] == 1002
    peer = client()
    peer.receive_data(session.data_to_send())
    (event,) = list(peer.events())
    assert isinstance(event, CloseConnection) and event.code == 1002


def test_invalid_utf8_closes_1007() -> None:
    session, _ = accepted()
    peer = client()
    frame = bytearray(peer.send(BytesMessage(data=b"\xff\xfe")))
    frame[0] = (frame[0] & 0xF0) | 0x1  # make it a text frame
    session.receive_data(bytes(frame))
    assert session.app_messages()[0]["code"] == 1007


def test_connection_lost_is_1006_once() -> None:
    session, _ = accepted()
    session.receive_data(None)
    assert session.app_messages() == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert session.connection_lost() is None


def test_connection_lost_without_eof() -> None:
    session, _ = accepted()
    assert session.connection_lost() == {
        "type": "websocket.disconnect",
        "code": 1006,
        "reason": "",
    }
    assert session.connection_lost() is None


def test_server_close_and_ping_after_close() -> None:
    session, _ = accepted()
    assert session.close(1001, "server shutting down")
    assert session.close(1001) == b""
    assert session.ping(b"x") == b""


# -- permessage-deflate ---------------------------------------------------------------------
def test_deflate_negotiation() -> None:
    offer = [(b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")]
    negotiated = negotiate_deflate(offer, 1 << 20)
    assert negotiated is not None
    assert negotiated[1].startswith(b"permessage-deflate")
    assert negotiate_deflate([(b"sec-websocket-extensions", b"x-foo")], 1 << 20) is None
    assert negotiate_deflate([], 1 << 20) is None


def test_deflate_off_by_config() -> None:
    raw = upgrade_head(b"Sec-WebSocket-Extensions: permessage-deflate")
    on = session_for(raw, deflate=True).app_message({"type": "websocket.accept"})
    off = session_for(raw, deflate=False).app_message({"type": "websocket.accept"})
    assert b"sec-websocket-extensions: permessage-deflate" in on
    assert b"sec-websocket-extensions" not in off


# -- chunking invariance --------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(
        st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1, max_size=6
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=30),
)
def test_any_chunking_gives_the_same_messages(messages: list[Any], cuts: list[int]) -> None:
    peer = client()
    data = b"".join(
        peer.send(TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m))
        for m in messages
    )
    expected = [
        {"type": "websocket.receive", "text": m}
        if isinstance(m, str)
        else {"type": "websocket.receive", "bytes": m}
        for m in messages
    ]
    session, _ = accepted()
    got: list[dict[str, Any]] = []
    pos = 0
    for cut in cuts:
        session.receive_data(data[pos : pos + cut])
        got += session.app_messages()
        pos += cut
    session.receive_data(data[pos:])
    got += session.app_messages()
    assert got == expected

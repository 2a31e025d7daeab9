"""Bounded permessage-deflate and bounded parses (issue 22): sans-IO, synchronous."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Message, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from trioserve.sansio.websocket import WebSocketSession, check_handshake
from trioserve.sansio.wsdeflate import BoundedDeflate

from .test_websocket import parse, upgrade_head

OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"


def deflate_pair(max_size: int, offer: bytes = OFFER) -> tuple[WebSocketSession, Connection]:
    """An accepted session with permessage-deflate, and a client speaking it."""
    proto, request = parse(upgrade_head(offer))
    session = WebSocketSession(
        request, proto, key=check_handshake(request), max_message_size=max_size
    )
    head = session.app_message({"type": "websocket.accept"})
    value = head.split(b"sec-websocket-extensions: ", 1)[1].split(b"\r\n", 1)[0]
    ext = PerMessageDeflate()
    ext.finalize(value.decode())
    return session, Connection(ConnectionType.CLIENT, [ext])


def test_a_bomb_stops_at_the_limit_with_1009() -> None:
    session, peer = deflate_pair(1 << 20)
    session.receive_data(peer.send(BytesMessage(data=bytes(256 << 20))))  # 256 MiB of zeros
    messages = session.app_messages()
    assert messages == [
        {"type": "websocket.disconnect", "code": 1009, "reason": "error in extension"}
    ]
    assert session.data_to_send()[2:4] == b"\x03\xf1"  # our close frame says 1009


def test_a_fragmented_bomb_is_counted_across_its_frames() -> None:
    session, peer = deflate_pair(1 << 20)
    data = b"".join(
        peer.send(Message(data=bytes(300 << 10), message_finished=False)) for _ in range(3)
    )
    data += peer.send(Message(data=bytes(300 << 10), message_finished=True))
    session.receive_data(data)
    assert session.app_messages()[-1]["code"] == 1009


def test_messages_at_the_limit_pass_and_the_count_restarts() -> None:
    session, peer = deflate_pair(1 << 20)
    for _ in range(3):
        session.receive_data(peer.send(BytesMessage(data=bytes(1 << 20))))
        session.receive_data(peer.send(Ping(b"p")))
        assert session.app_messages() == [{"type": "websocket.receive", "bytes": bytes(1 << 20)}]


def test_parse_stops_at_the_limits_and_the_rest_waits_compressed() -> None:
    session, peer = deflate_pair(1 << 20)
    session.receive_data(b"".join(peer.send(BytesMessage(data=bytes(1000))) for _ in range(20)))
    first = session.app_messages(10, 1 << 30)
    assert len(first) == 10 and session.backlog
    assert session.app_messages(1, 1500) == first[:1] and session.backlog
    assert session.app_messages(5, 1500) == first[:2]  # stops once 1500 bytes are out
    assert session.app_messages(5, 0) == [] and session.backlog  # no room at all
    assert len(session.app_messages()) == 7 and not session.backlog


@settings(max_examples=40, deadline=None)
@given(
    messages=st.lists(
        st.one_of(st.text(max_size=3000), st.binary(max_size=3000)), min_size=1, max_size=8
    ),
    no_takeover=st.booleans(),
    limit=st.integers(1, 3),
)
def test_same_messages_as_wsprotos_own_deflate(
    messages: list[Any], no_takeover: bool, limit: int
) -> None:
    offer = OFFER + (b"; client_no_context_takeover" if no_takeover else b"")
    session, peer = deflate_pair(1 << 20, offer)
    assert isinstance(session.conn._proto.extensions[0], BoundedDeflate)  # type: ignore[union-attr]
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
    session.receive_data(data, limit)
    got = session.app_messages(limit)
    while session.backlog:
        got += session.app_messages(limit)
    assert got == expected

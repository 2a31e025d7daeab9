"""The sans-IO QUIC pieces, driven synchronously with a made-up clock: routing decisions,
the half-open cap, Retry, and the request-stream window that follows what the app read."""

from __future__ import annotations

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived
from hypothesis import given
from hypothesis import strategies as st

from trioserve.sansio.events import BadRequest, Request
from trioserve.sansio.http3 import ServerH3Connection
from trioserve.sansio.quic import Accept, BoundedQuicConnection, Deliver, QuicRouter, Reply
from trioserve.sansio.streams import request_from_fields as shared_request_from_fields

from .conftest import sansio_server_config

CLIENT = ("10.0.0.1", 5000)
SERVER = ("10.0.0.2", 443)


@pytest.fixture(scope="module")
def server_config(tmp_path_factory: pytest.TempPathFactory) -> QuicConfiguration:
    return sansio_server_config(tmp_path_factory)


def client_initial(now: float = 0.0, token: bytes = b"") -> tuple[QuicConnection, bytes]:
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=0)
    config.token = token
    quic = QuicConnection(configuration=config)
    quic.connect(SERVER, now=now)
    return quic, quic.datagrams_to_send(now=now)[0][0]


def test_router_accepts_delivers_and_caps_half_open(server_config: QuicConfiguration) -> None:
    router: QuicRouter[str] = QuicRouter(
        server_config, max_streams=10, max_half_open=2, retry="off"
    )
    _, first = client_initial()
    decision = router.route(first, CLIENT, 0.0)
    assert isinstance(decision, Accept)
    router.register(decision.cids, "conn-1", CLIENT)
    assert router.route(first, CLIENT, 0.1) == Deliver("conn-1")
    _, second = client_initial()
    accepted = router.route(second, CLIENT, 0.1)
    assert isinstance(accepted, Accept)
    router.register(accepted.cids, "conn-2", CLIENT)
    _, third = client_initial()
    assert router.route(third, CLIENT, 0.2) is None  # the address has 2 half-open
    assert isinstance(router.route(third, ("10.0.0.9", 1), 0.2), Accept)  # another address
    router.established(CLIENT)
    assert isinstance(router.route(third, CLIENT, 0.3), Accept)
    router.accepting = False
    _, fourth = client_initial()
    assert router.route(fourth, ("10.0.0.8", 1), 0.3) is None  # shutting down
    assert router.route(b"\x00junk", CLIENT, 0.3) is None


def test_router_version_negotiation(server_config: QuicConfiguration) -> None:
    router: QuicRouter[str] = QuicRouter(server_config, max_streams=10, max_half_open=2)
    _, initial = client_initial()
    unknown = initial[:1] + b"\x1a\x2a\x3a\x4a" + initial[5:]
    decision = router.route(unknown, CLIENT, 0.0)
    assert isinstance(decision, Reply)
    assert decision.data[1:5] == b"\x00\x00\x00\x00"  # a Version Negotiation packet


def test_router_retry_round_trip(server_config: QuicConfiguration) -> None:
    router: QuicRouter[str] = QuicRouter(
        server_config, max_streams=10, max_half_open=5, retry="on"
    )
    client, initial = client_initial()
    decision = router.route(initial, CLIENT, 0.0)
    assert isinstance(decision, Reply)
    assert decision.data[0] & 0xF0 == 0xF0  # Retry
    client.receive_datagram(decision.data, SERVER, now=0.01)
    retried = client.datagrams_to_send(now=0.01)[0][0]
    assert isinstance(router.route(retried, CLIENT, 0.02), Accept)
    # The token is bound to the address and expires.
    assert router.route(retried, ("10.9.9.9", 1), 0.02) is None
    assert router.route(retried, CLIENT, 100.0) is None


def test_retry_under_load_only(server_config: QuicConfiguration) -> None:
    router: QuicRouter[str] = QuicRouter(
        server_config, max_streams=10, max_half_open=50, retry="load", retry_threshold=2
    )
    kinds = []
    for i in range(4):
        _, initial = client_initial()
        decision = router.route(initial, (f"10.0.1.{i}", 1), 0.0)
        kinds.append(type(decision).__name__)
        if isinstance(decision, Accept):
            router.register(decision.cids, f"c{i}", (f"10.0.1.{i}", 1))
    assert kinds == ["Accept", "Accept", "Reply", "Reply"]


def handshake(
    server_config: QuicConfiguration, window: int
) -> tuple[QuicConnection, BoundedQuicConnection, list[float]]:
    client, initial = client_initial()
    client._configuration.max_stream_data = 1 << 20
    router: QuicRouter[str] = QuicRouter(server_config, max_streams=4, max_half_open=5)
    decision = router.route(initial, CLIENT, 0.0)
    assert isinstance(decision, Accept)
    server = decision.quic
    now = [0.0]
    server.receive_datagram(initial, CLIENT, now=0.0)
    pump(client, server, now)
    return client, server, now


def pump(client: QuicConnection, server: QuicConnection, now: list[float]) -> None:
    """Move datagrams both ways until quiet; stream data the server gets counts as unread
    body once its stream has started (as the connection task reports it)."""
    for _ in range(50):
        now[0] += 0.001
        moved = False
        for data, _ in client.datagrams_to_send(now=now[0]):
            server.receive_datagram(data, CLIENT, now=now[0])
            moved = True
            while (event := server.next_event()) is not None:
                if (
                    isinstance(event, StreamDataReceived)
                    and isinstance(server, BoundedQuicConnection)
                    and event.stream_id in server._started
                ):
                    server.received(event.stream_id, len(event.data))
        for data, _ in server.datagrams_to_send(now=now[0]):
            client.receive_datagram(data, SERVER, now=now[0])
            moved = True
        if not moved:
            return


def test_request_window_follows_reads(server_config: QuicConfiguration) -> None:
    """The client can only get one window ahead of what the server says was read."""
    window = server_config.max_stream_data
    client, server, now = handshake(server_config, window)
    assert server._local_max_streams_bidi.value == 4
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"h" * 10)  # stands for the HEADERS frame
    pump(client, server, now)
    server.start(stream_id)
    client.send_stream_data(stream_id, b"b" * (4 * window))
    pump(client, server, now)
    sent = client._streams[stream_id].sender.highest_offset
    assert sent == window  # aioquic alone would have doubled the window by now
    server.consumed(stream_id, window // 8)  # under a quarter window: no update yet
    pump(client, server, now)
    assert client._streams[stream_id].sender.highest_offset == window
    server.consumed(stream_id, window // 2 - window // 8)
    pump(client, server, now)
    # The 10 head bytes count as read: the peer is one window past the body read.
    assert client._streams[stream_id].sender.highest_offset == 10 + window // 2 + window


def test_send_backlog(server_config: QuicConfiguration) -> None:
    client, server, now = handshake(server_config, server_config.max_stream_data)
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"GET")
    pump(client, server, now)
    server.send_stream_data(stream_id, b"r" * 100_000)
    assert server.send_backlog(stream_id) == 100_000
    assert server.can_send(stream_id)
    pump(client, server, now)
    assert server.send_backlog(stream_id) < 100_000
    server.reset_stream(stream_id, 0x10C)
    assert not server.can_send(stream_id)
    assert server.send_backlog(999) == 0


def test_server_settings(server_config: QuicConfiguration) -> None:
    _, server, _ = handshake(server_config, server_config.max_stream_data)
    h3 = ServerH3Connection(server, max_field_section_size=1234)
    assert h3.sent_settings is not None
    assert h3.sent_settings[0x6] == 1234
    assert h3.sent_settings[0x8] == 1  # ENABLE_CONNECT_PROTOCOL (aioquic's default)
    _, other, _ = handshake(server_config, server_config.max_stream_data)
    plain = ServerH3Connection(other, max_field_section_size=1234, websockets=False)
    assert 0x8 not in (plain.sent_settings or {})


BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"ex.com")]


def request_from_fields(
    fields: list[tuple[bytes, bytes]], *, max_size: int
) -> Request | BadRequest:
    return shared_request_from_fields(fields, "3", max_size=max_size)


def test_request_from_fields() -> None:
    request = request_from_fields(
        [
            *BASE,
            (b":path", b"/p?q"),
            (b"cookie", b"a=1"),
            (b"host", b"ex.com"),
            (b"cookie", b"b=2"),
            (b"expect", b"100-continue"),
        ],
        max_size=4096,
    )
    assert isinstance(request, Request)
    assert request.target == b"/p?q"
    assert request.http_version == "3"
    assert request.headers[0] == (b"host", b"ex.com")
    assert sum(1 for name, _ in request.headers if name == b"host") == 1
    assert request.headers[-1] == (b"cookie", b"a=1; b=2")
    assert request.expects_continue


def test_websocket_connect_is_a_request() -> None:
    fields = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *BASE[1:]]
    request = request_from_fields([*fields, (b":path", b"/ws")], max_size=4096)
    assert isinstance(request, Request)
    assert (request.method, request.protocol, request.target) == (b"CONNECT", b"websocket", b"/ws")


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([(b":method", b"CONNECT"), (b":authority", b"ex.com:443")], 405),
        ([*BASE[:1], (b":protocol", b"websocket"), *BASE[1:], (b":path", b"/")], 400),
        (
            [(b":method", b"CONNECT"), (b":protocol", b"bogus"), *BASE[1:], (b":path", b"/")],
            501,
        ),
        ([(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":authority", b"x")], 400),
        ([*BASE], 400),
        ([*BASE, (b":path", b"/"), (b"connection", b"close")], 400),
        ([*BASE, (b":path", b"/"), (b"x", b"y" * 5000)], 431),
    ],
)
def test_request_refusals(fields: list[tuple[bytes, bytes]], status: int) -> None:
    refusal = request_from_fields(fields, max_size=4096)
    assert isinstance(refusal, BadRequest)
    assert refusal.status == status


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b":method", b":path", b":protocol", b"cookie", b"host", b"x-a"]),
            st.binary(max_size=20),
        ),
        max_size=12,
    )
)
def test_request_from_fields_never_raises(fields: list[tuple[bytes, bytes]]) -> None:
    result = request_from_fields(fields, max_size=300)
    assert isinstance(result, (Request, BadRequest))
    if isinstance(result, Request):
        assert sum(1 for n, _ in result.headers if n == b"cookie") <= 1

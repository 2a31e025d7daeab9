"""H3Protocol without I/O: aioquic's events become the same stream events HTTP/2's protocol
gives (Request or a BadRequest refusal, Data, EndData, StreamReset), and it frames the
response. A client QuicConnection/H3Connection and the server exchange datagrams in memory;
the time is passed in."""

from __future__ import annotations

from typing import Any

import pytest
from aioquic.h3.connection import ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamReset as QuicStreamReset

from trioserve.sansio.events import BadRequest, Data, EndData, Request, StreamReset
from trioserve.sansio.h3protocol import Established, H3Protocol
from trioserve.sansio.quic import Accept, QuicRouter

from .conftest import sansio_server_config

CLIENT = ("10.0.0.1", 5000)
SERVER = ("10.0.0.2", 443)


@pytest.fixture(scope="module")
def server_config(tmp_path_factory: pytest.TempPathFactory) -> QuicConfiguration:
    return sansio_server_config(tmp_path_factory)


class Pair:
    """A client and an H3Protocol server, datagrams moved by :meth:`pump`."""

    def __init__(self, server_config: QuicConfiguration, max_streams: int = 4) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=0)
        self.client = QuicConnection(configuration=config)
        self.client.connect(SERVER, now=0.0)
        self.h3 = H3Connection(self.client)
        initial = self.client.datagrams_to_send(now=0.0)[0][0]
        router: QuicRouter[str] = QuicRouter(
            server_config, max_streams=8, max_half_open=5, retry="off"
        )
        decision = router.route(initial, CLIENT, 0.0)
        assert isinstance(decision, Accept)
        self.server = H3Protocol(
            decision.quic, max_field_section_size=4096, max_streams=max_streams,
            stream_buffer=64 * 1024,
        )  # fmt: skip
        self.now = 0.0
        self.server.receive_datagram(initial, CLIENT, self.now)
        self.events: list[tuple[int, Any]] = []
        self.client_events: list[Any] = []
        self.pump()

    def pump(self) -> None:
        for _ in range(50):
            self.now += 0.001
            moved = False
            for data, _ in self.client.datagrams_to_send(now=self.now):
                self.server.receive_datagram(data, CLIENT, self.now)
                moved = True
            self.events += self.server.events(self.now)
            for data, _ in self.server.datagrams_to_send(self.now):
                self.client.receive_datagram(data, SERVER, now=self.now)
                moved = True
            while (event := self.client.next_event()) is not None:
                self.client_events.append(event)
                self.client_events += self.h3.handle_event(event)
            if not moved:
                return

    def request(self, path: bytes = b"/", body: bytes | None = None, end: bool = True) -> int:
        stream_id = self.client.get_next_available_stream_id()
        head = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x")]
        self.h3.send_headers(stream_id, [*head, (b":path", path)], end and body is None)
        if body is not None:
            self.h3.send_data(stream_id, body, end)
        self.pump()
        return stream_id

    def of(self, stream_id: int) -> list[Any]:
        return [event for sid, event in self.events if sid == stream_id]


def test_request_events_and_response_framing(server_config: QuicConfiguration) -> None:
    pair = Pair(server_config)
    assert any(isinstance(event, Established) for _, event in pair.events)
    stream_id = pair.request(b"/up?x=1", body=b"abc")
    request, data, end = pair.of(stream_id)
    assert isinstance(request, Request) and request.target == b"/up?x=1"
    assert request.http_version == "3" and (b"host", b"x") in request.headers
    assert data == Data(b"abc") and end == EndData()
    server = pair.server
    assert server.is_open(stream_id) and server.send_window(stream_id) > 0
    server.send_headers(stream_id, 200, [(b"connection", b"close"), (b"x-a", b"1")], False)
    server.send_data(stream_id, b"hi", True)
    pair.pump()
    heads = [e for e in pair.client_events if isinstance(e, HeadersReceived)]
    assert heads[0].headers == [(b":status", b"200"), (b"x-a", b"1")]
    body = [e for e in pair.client_events if isinstance(e, DataReceived)]
    assert body[-1].data == b"hi" and body[-1].stream_ended
    assert not server.is_open(stream_id)  # FIN sent


def test_malformed_path_is_a_refusal_for_the_stream(server_config: QuicConfiguration) -> None:
    pair = Pair(server_config)
    stream_id = pair.request(b"admin")
    refusal = pair.of(stream_id)[0]
    assert isinstance(refusal, BadRequest) and refusal.status == 400


def test_client_reset_ends_both_directions(server_config: QuicConfiguration) -> None:
    pair = Pair(server_config)
    stream_id = pair.request(b"/", body=b"partial", end=False)
    pair.client.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
    pair.pump()
    assert isinstance(pair.of(stream_id)[-1], StreamReset)
    assert not pair.server.is_open(stream_id) and pair.server.send_window(stream_id) == 0
    resets = [e for e in pair.client_events if isinstance(e, QuicStreamReset)]
    assert resets and resets[0].error_code == ErrorCode.H3_REQUEST_CANCELLED


def test_our_reset_is_an_internal_error(server_config: QuicConfiguration) -> None:
    pair = Pair(server_config)
    stream_id = pair.request(b"/", body=b"partial", end=False)
    pair.server.reset(stream_id, pair.now)
    pair.pump()
    resets = [e for e in pair.client_events if isinstance(e, QuicStreamReset)]
    assert resets and resets[0].error_code == ErrorCode.H3_INTERNAL_ERROR
    assert not pair.server.is_open(stream_id)


def test_streams_over_the_limit_are_rejected(server_config: QuicConfiguration) -> None:
    pair = Pair(server_config, max_streams=1)
    first = pair.request(b"/a", end=False)
    second = pair.request(b"/b")
    assert pair.of(first) and not pair.of(second)
    resets = [e for e in pair.client_events if isinstance(e, QuicStreamReset)]
    assert [e.error_code for e in resets] == [ErrorCode.H3_REQUEST_REJECTED]
    pair.server.stream_finished(first)
    third = pair.request(b"/c")
    assert isinstance(pair.of(third)[0], Request)

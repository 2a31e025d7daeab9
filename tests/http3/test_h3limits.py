"""Header sections cost at most their limit (sansio/h3limits.py), and a stream's window
follows the bytes delivered in order, driven synchronously with aioquic's own objects."""

from __future__ import annotations

from typing import Any

import pylsqpack
import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3 import connection as h3_connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import QuicStreamFrame

from trioserve.sansio.h3limits import HeadersRefused, LimitedH3Connection
from trioserve.sansio.quic import UNI_STREAMS, UNI_WINDOW, BoundedQuicConnection

from .conftest import sansio_server_config
from .test_sansio_quic import handshake, pump

LIMIT = 16 * 1024
HEAD = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"localhost"),
    (b":path", b"/"),
]


@pytest.fixture(scope="module")
def server_config(tmp_path_factory: pytest.TempPathFactory) -> QuicConfiguration:
    return sansio_server_config(tmp_path_factory, stream_window=256 * 1024)


def h3(server_config: QuicConfiguration) -> tuple[LimitedH3Connection, BoundedQuicConnection]:
    _, server, _ = handshake(server_config, server_config.max_stream_data)
    return LimitedH3Connection(server, max_field_section_size=LIMIT), server


def feed(conn: LimitedH3Connection, stream_id: int, data: bytes, end: bool = False) -> list[Any]:
    return conn.handle_event(StreamDataReceived(data=data, end_stream=end, stream_id=stream_id))


def frame(kind: int, payload: bytes, declared: int | None = None) -> bytes:
    length = len(payload) if declared is None else declared
    return encode_uint_var(kind) + encode_uint_var(length) + payload


def head_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    _, block = pylsqpack.Encoder().encode(0, fields)  # no dynamic table: static + literals
    return block


def test_settings_advertise_no_dynamic_table(server_config: QuicConfiguration) -> None:
    conn, _ = h3(server_config)
    settings = conn.sent_settings or {}
    assert settings[0x1] == 0  # SETTINGS_QPACK_MAX_TABLE_CAPACITY
    assert settings[0x7] == 0  # SETTINGS_QPACK_BLOCKED_STREAMS
    assert settings[0x6] == LIMIT


def test_a_dynamic_table_insert_is_an_encoder_stream_error(
    server_config: QuicConfiguration,
) -> None:
    """The bomb's first step (a 4,000-byte entry) ends the connection at once."""
    conn, server = h3(server_config)
    set_capacity = bytes([0x3F, 0xE1, 0x1F])  # Set Dynamic Table Capacity 4096
    feed(conn, 2, encode_uint_var(2) + set_capacity)  # client uni stream 2: QPACK encoder
    assert server._close_event is not None
    assert server._close_event.error_code == 0x201  # QPACK_ENCODER_STREAM_ERROR


def test_headers_frame_over_the_limit_refused_at_its_frame_header(
    server_config: QuicConfiguration,
) -> None:
    conn, server = h3(server_config)
    # A 1 MiB HEADERS frame: refused as soon as its 5-byte frame header is parsed.
    events = feed(conn, 0, frame(0x1, b"", declared=1 << 20))
    assert events == [HeadersRefused(0, False)]
    # Its payload is discarded as it arrives, never buffered nor decoded.
    for _ in range(16):
        assert feed(conn, 0, b"\xc0" * 65536) == []
        assert len(conn._stream[0].buffer) == 0
    # The stream goes on after it (a body the 431 does not read, then the end).
    events = feed(conn, 0, frame(0x0, b"body"), end=True)
    assert [type(e) for e in events] == [DataReceived]
    assert events[-1].stream_ended
    assert server._close_event is None  # a stream matter, not a connection error


def test_trailers_over_the_limit_refused(server_config: QuicConfiguration) -> None:
    conn, server = h3(server_config)
    events = feed(conn, 0, frame(0x1, head_block(HEAD)) + frame(0x0, b"x" * 100))
    assert [type(e) for e in events] == [HeadersReceived, DataReceived]
    trailers = frame(0x1, b"\x00\x00" + b"\xc0" * 1000, declared=100 << 20)
    assert feed(conn, 0, trailers) == [HeadersRefused(0, True)]
    assert len(conn._stream[0].buffer) == 0
    assert server._close_event is None
    # All in one piece: the head and the body come before the refusal.
    events = feed(conn, 4, frame(0x1, head_block(HEAD)) + frame(0x0, b"x") + trailers)
    assert [type(e) for e in events] == [HeadersReceived, DataReceived, HeadersRefused]


def test_static_table_amplification_refused_before_validation(
    server_config: QuicConfiguration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 KiB of one-byte references to the 69-byte static entry 58 decode to 1.6 MB:
    refused by decoded size before aioquic validates them byte by byte."""
    validated: list[int] = []
    real = h3_connection.validate_request_headers

    def counting(headers: Any, stream: Any = None) -> None:
        validated.append(len(headers))
        real(headers, stream)

    monkeypatch.setattr(h3_connection, "validate_request_headers", counting)
    conn, _ = h3(server_config)
    block = b"\x00\x00" + bytes([0xC0 | 58]) * (LIMIT - 2)
    assert feed(conn, 0, frame(0x1, block)) == [HeadersRefused(0, False)]
    assert validated == [2]  # only the two stand-in fields
    # A head within the limit is decoded and passed on as usual.
    events = feed(conn, 4, frame(0x1, head_block(HEAD)), end=True)
    assert [type(e) for e in events] == [HeadersReceived]
    assert events[0].headers == HEAD
    # Trailers over the limit once decoded are refused too.
    feed(conn, 8, frame(0x1, head_block(HEAD)))
    assert feed(conn, 8, frame(0x1, block)) == [HeadersRefused(8, True)]


def test_long_settings_frame_is_a_connection_error(server_config: QuicConfiguration) -> None:
    conn, server = h3(server_config)
    feed(conn, 2, encode_uint_var(0) + frame(0x4, b"", declared=1 << 30))  # control stream
    assert server._close_event is not None
    assert server._close_event.error_code == 0x106  # H3_FRAME_ERROR


def test_data_past_a_gap_earns_no_credit(server_config: QuicConfiguration) -> None:
    """A client that leaves a hole in a stream cannot grow its window: aioquic buffers
    what lies past the hole, so only bytes delivered in order may earn credit."""
    window = server_config.max_stream_data
    client, server, now = handshake(server_config, window)
    request = client.get_next_available_stream_id()
    control = client.get_next_available_stream_id(is_unidirectional=True)
    assert server._local_max_stream_data_uni == UNI_WINDOW < window
    assert server._local_max_streams_uni.value == UNI_STREAMS
    for stream_id, limit in ((request, window), (control, UNI_WINDOW)):
        client.send_stream_data(stream_id, b"h" * 10)
        pump(client, server, now)
        server.start(stream_id)  # a request's head arrived (no effect on a uni stream)
        # A window's worth of bytes past a one-byte hole after the head: buffered by
        # aioquic, delivered to nobody.
        receiver = server._streams[stream_id].receiver
        assert receiver.handle_frame(QuicStreamFrame(offset=11, data=b"b" * (limit - 11))) is None
        assert receiver.highest_offset == limit
        server.datagrams_to_send(now=now[0])
        granted = server._streams[stream_id].max_stream_data_local
        assert granted == limit, stream_id  # aioquic alone doubles it; the old rule grew it

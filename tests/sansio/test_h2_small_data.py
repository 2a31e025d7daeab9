"""The small-DATA budget (issue 22): tiny frames are charged, full and final ones are free."""

from __future__ import annotations

import h2.config
import h2.connection
from hyperframe.frame import DataFrame

from trioserve.sansio.events import ConnectionClosed
from trioserve.sansio.h2limits import SMALL_DATA, FrameScanner, small_data_cost
from trioserve.sansio.http2 import H2Limits, H2Protocol


def test_cost_is_the_missing_fraction_of_a_full_frame() -> None:
    assert small_data_cost(2, 0) > 0.99
    assert small_data_cost(SMALL_DATA // 2, 0) == 0.5
    assert small_data_cost(SMALL_DATA, 0) == 0.0
    assert small_data_cost(16384, 0) == 0.0
    assert small_data_cost(2, 0x1) == 0.0  # END_STREAM: the last piece of a body
    assert small_data_cost(0, 0) == 0.0  # empty DATA is a cheap frame, counted there


def test_scanner_sums_the_cost_whatever_the_read_sizes() -> None:
    wire = b"".join(DataFrame(1, b"xy").serialize() for _ in range(100))
    scanner = FrameScanner(skip=0)
    for i in range(0, len(wire), 7):
        scanner.feed(wire[i : i + 7])
    assert 99 < scanner.small_data < 100
    assert scanner.cheap == 0


def _client_and_server(limits: H2Limits) -> tuple[h2.connection.H2Connection, H2Protocol]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server = H2Protocol(limits)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send(), 0.0)
    client.send_headers(
        1, [(":method", "POST"), (":scheme", "http"), (":path", "/"), (":authority", "x")]
    )
    server.receive_data(client.data_to_send(), 0.0)
    return client, server


def test_a_flood_of_tiny_frames_ends_the_connection() -> None:
    _, server = _client_and_server(H2Limits(small_data_rate=10, small_data_burst=50))
    events = server.receive_data(DataFrame(1, b"xy").serialize() * 60, 0.0)
    assert any(isinstance(event, ConnectionClosed) for _, event in events)
    assert server.error == "too many small DATA frames"
    assert b"\x00\x00\x00\x0b" in server.data_to_send()  # GOAWAY ENHANCE_YOUR_CALM


def test_tiny_frames_at_a_modest_rate_and_full_frames_pass() -> None:
    _, server = _client_and_server(H2Limits(small_data_rate=10, small_data_burst=50))
    for second in range(20):  # 10 a second, the sustained rate, for 20 s
        events = server.receive_data(DataFrame(1, b"xy").serialize() * 10, float(second))
        assert not any(isinstance(event, ConnectionClosed) for _, event in events)
    events = server.receive_data(DataFrame(1, b"z" * 16384).serialize() * 10, 20.0)
    assert not any(isinstance(event, ConnectionClosed) for _, event in events)

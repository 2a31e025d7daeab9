"""DATA framing in batches (H2Protocol.send_data): several frames per call, the middle ones
framed by trioserve, and every byte still counted against both flow-control windows."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest

from trioserve.sansio.http2 import H2Limits, H2Protocol

GET = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
FRAME = 16384


def open_stream(wide: bool = True) -> tuple[h2.connection.H2Connection, H2Protocol]:
    """``wide``: the client opens its connection window far, so the stream's counts."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    if wide:
        client.increment_flow_control_window(1 << 20)
    server = H2Protocol(H2Limits())
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send(), 0.0)
    client.send_headers(1, GET, end_stream=True)
    server.receive_data(client.data_to_send(), 0.0)
    server.send_headers(1, 200, [], False)
    return client, server


@pytest.mark.parametrize("size", [1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 5, 65535])
def test_a_batch_arrives_whole_and_uses_up_the_window(size: int) -> None:
    client, server = open_stream()
    assert server.send_window(1) == 65535  # the client's default windows
    body = bytes(range(256)) * (size // 256 + 1)
    server.send_data(1, body[:size], True)
    # Without the window accounting of the frames framed here, this would be too large
    # and the next send would overrun the client's window (FLOW_CONTROL_ERROR).
    assert server._conn.local_flow_control_window(1) == 65535 - size
    events = client.receive_data(server.data_to_send())
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == body[:size]
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    frames = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert len(frames) == (size + FRAME - 1) // FRAME
    assert all(len(e.data) <= FRAME for e in frames)


def test_the_window_is_shared_with_the_connection() -> None:
    client, server = open_stream(wide=False)
    server.send_data(1, b"x" * (3 * FRAME), False)
    client.send_headers(3, GET, end_stream=True)
    server.receive_data(client.data_to_send(), 0.0)
    server.send_headers(3, 200, [], False)
    assert server.send_window(3) == 65535 - 3 * FRAME  # the connection's window is spent


def test_a_batch_on_a_reset_stream_raises_before_writing() -> None:
    client, server = open_stream()
    client.reset_stream(1)
    server.receive_data(client.data_to_send(), 0.0)
    server.data_to_send()
    with pytest.raises(h2.exceptions.StreamClosedError):
        server.send_data(1, b"x" * (3 * FRAME), False)
    assert server.data_to_send() == b""

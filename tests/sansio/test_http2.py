"""The HTTP/2 protocol core, driven synchronously by h2 as a client and by raw hyperframe
frames (RFC 9113 / RFC 7541 behaviour and each abuse case)."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from trioserve.sansio.events import (
    BadRequest,
    ConnectionClosed,
    Data,
    EndData,
    Request,
    StreamReset,
)
from trioserve.sansio.h2limits import FrameScanner, TokenBucket
from trioserve.sansio.http2 import PREFACE, H2Limits, H2Protocol, SendCredit

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/a?b=1"), (b":authority", b"h")]


def client_pair(limits: H2Limits | None = None) -> tuple[h2.connection.H2Connection, H2Protocol]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server = H2Protocol(limits or H2Limits())
    events = server.receive_data(client.data_to_send(), 0.0)
    assert events == [(0, SendCredit())]  # the client's SETTINGS
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send(), 0.0)  # the SETTINGS ACK
    return client, server


def exchange(client: h2.connection.H2Connection, server: H2Protocol, now: float = 0.0) -> list:
    events = server.receive_data(client.data_to_send(), now)
    return events


def frames(data: bytes) -> list[Frame]:
    out = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        out.append(frame)
        view = view[9 + length :]
    return out


def raw_server(limits: H2Limits | None = None) -> H2Protocol:
    """A server past the preface, fed by hand-built frames."""
    server = H2Protocol(limits or H2Limits())
    server.receive_data(PREFACE + SettingsFrame(0).serialize(), 0.0)
    server.data_to_send()
    return server


def headers_frame(stream_id: int, fields: list, end_stream: bool = True) -> bytes:
    frame = HeadersFrame(stream_id)
    frame.data = hpack.Encoder().encode(fields)
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame.serialize()


# -- SETTINGS (RFC 9113 6.5) -------------------------------------------------------------------
def test_server_settings_advertise_the_limits() -> None:
    limits = H2Limits(max_concurrent_streams=7, max_header_list_size=5000, stream_window=99999)
    server = H2Protocol(limits)
    settings_frame = frames(server.data_to_send())
    first = settings_frame[0]
    assert isinstance(first, SettingsFrame)
    assert first.settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    assert first.settings[SettingCodes.MAX_HEADER_LIST_SIZE] == 5000
    assert first.settings[SettingCodes.INITIAL_WINDOW_SIZE] == 99999
    assert first.settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    window = settings_frame[1]
    assert isinstance(window, WindowUpdateFrame)
    assert window.stream_id == 0 and window.window_increment == limits.connection_window - 65535


def test_request_events_and_pseudo_headers() -> None:
    client, server = client_pair()
    client.send_headers(
        1,
        [
            *GET[:3],
            (b":authority", b"example.com"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-y", b"z"),
        ],
        end_stream=True,
    )
    events = exchange(client, server)
    assert [type(e) for _, e in events] == [Request, EndData]
    request = events[0][1]
    assert request.method == b"GET" and request.target == b"/a?b=1"
    assert request.http_version == "2"
    assert request.authority == b"example.com"
    assert request.headers == [(b"host", b"example.com"), (b"x-y", b"z"), (b"cookie", b"a=1; b=2")]
    assert server.running == 1


def test_response_round_trip_and_stream_finished() -> None:
    client, server = client_pair()
    client.send_headers(1, GET, end_stream=True)
    exchange(client, server)
    server.send_headers(1, 200, [(b"Content-Type", b"text/plain"), (b"connection", b"x")], False)
    server.send_data(1, b"hello", end=False)
    server.send_trailers(1, [(b"x-checksum", b"1")])
    got = client.receive_data(server.data_to_send())
    response = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
    assert (b"content-type", b"text/plain") in response.headers
    assert all(name != b"connection" for name, _ in response.headers)
    assert any(isinstance(e, h2.events.TrailersReceived) for e in got)
    server.stream_finished(1, 0.0)
    assert server.running == 0
    assert server.data_to_send() == b""  # both sides ended: no reset needed


# -- flow control (RFC 9113 5.2, 6.9) ----------------------------------------------------------
def test_data_is_acknowledged_only_when_consumed() -> None:
    client, server = client_pair()
    client.send_headers(1, [(b":method", b"POST"), *GET[1:]], end_stream=False)
    for _ in range(10):
        client.send_data(1, b"x" * 15000)
    events = exchange(client, server)
    assert [type(e) for _, e in events] == [Request] + [Data] * 10
    assert server.data_to_send() == b""  # no WINDOW_UPDATE until the app reads
    server.consumed(1, 150000)
    updates = [f for f in frames(server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert {f.stream_id for f in updates} == {1}  # stream credit (conn window is large)


def test_client_cannot_overrun_the_stream_window() -> None:
    client, server = client_pair(H2Limits(stream_window=65535))
    client.send_headers(1, [(b":method", b"POST"), *GET[1:]], end_stream=False)
    exchange(client, server)
    body = DataFrame(1)
    body.data = b"x" * 16384
    events = []
    for _ in range(5):  # 4 x 16384 > 65535
        events += server.receive_data(body.serialize(), 0.0)
    assert events[-1] == (0, ConnectionClosed())
    goaway = frames(server.data_to_send())[-1]
    assert isinstance(goaway, GoAwayFrame) and goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def test_padding_is_acknowledged_at_once() -> None:
    client, server = client_pair(H2Limits(connection_window=65535))
    client.send_headers(1, [(b":method", b"POST"), *GET[1:]], end_stream=False)
    for _ in range(150):
        client.send_data(1, b"a", pad_length=250)
    events = exchange(client, server)
    assert events[-1] == (1, Data(b"a"))
    updates = [f for f in frames(server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    # The 150 bytes the app has not read stay unacknowledged; the padding does not.
    assert sum(f.window_increment for f in updates if f.stream_id == 0) >= 32768


def test_send_window_and_credit() -> None:
    client, server = client_pair()
    client.send_headers(1, GET, end_stream=True)
    exchange(client, server)
    # The windows (the client's default 65535), not one frame: send_data splits a batch
    # into frames of the peer's size (tests/sansio/test_h2_send_batch.py).
    assert server.send_window(1) == 65535
    client.increment_flow_control_window(1000, stream_id=None)
    assert exchange(client, server) == [(0, SendCredit())]


def test_zero_length_data_never_reaches_the_app() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1, GET, end_stream=False), 0.0)
    empty = DataFrame(1)
    assert server.receive_data(empty.serialize() * 10, 0.0) == []


# -- concurrency and resets (RFC 9113 5.1.2, 6.4) -----------------------------------------------
def test_stream_over_the_limit_is_refused_not_the_connection() -> None:
    server = raw_server(H2Limits(max_concurrent_streams=2))
    for stream_id in (1, 3):
        server.receive_data(headers_frame(stream_id, GET), 0.0)
    assert server.receive_data(headers_frame(5, GET), 0.0) == []
    (reset,) = frames(server.data_to_send())
    assert isinstance(reset, RstStreamFrame)
    assert (reset.stream_id, reset.error_code) == (5, ErrorCodes.REFUSED_STREAM)
    assert not server.closed
    server.stream_finished(1, 0.0)
    events = server.receive_data(headers_frame(7, GET), 0.0)
    assert events[0][0] == 7 and isinstance(events[0][1], Request)


def test_reset_streams_keep_their_slot_until_the_handler_ends() -> None:
    """Rapid reset: a reset stream's handler still counts against the limit."""
    server = raw_server(H2Limits(max_concurrent_streams=2))
    stream_id = 1
    for _ in range(2):
        server.receive_data(headers_frame(stream_id, GET, end_stream=False), 0.0)
        events = server.receive_data(RstStreamFrame(stream_id).serialize(), 0.0)
        assert events == [(stream_id, StreamReset(0))]
        stream_id += 2
    server.receive_data(headers_frame(stream_id, GET), 0.0)
    (refused,) = frames(server.data_to_send())
    assert refused.error_code == ErrorCodes.REFUSED_STREAM
    assert server.running == 2


def test_rapid_reset_gets_enhance_your_calm() -> None:
    server = raw_server(H2Limits(reset_burst=20, reset_rate=1.0))
    data = b"".join(
        headers_frame(sid, GET, end_stream=False) + RstStreamFrame(sid).serialize()
        for sid in range(1, 80, 2)
    )
    events = server.receive_data(data, 0.0)
    assert events[-1] == (0, ConnectionClosed())
    goaway = frames(server.data_to_send())[-1]
    assert isinstance(goaway, GoAwayFrame)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert server.error == "too many stream resets"


def test_server_resets_count_too() -> None:
    """MadeYouReset: frames that make the server reset streams use the same budget."""
    server = raw_server(H2Limits(reset_burst=10, reset_rate=1.0, max_concurrent_streams=1))
    server.receive_data(headers_frame(1, GET, end_stream=False), 0.0)
    # Every further stream is refused (a server reset) while stream 1's handler runs.
    data = b"".join(headers_frame(sid, GET) for sid in range(3, 60, 2))
    events = server.receive_data(data, 0.0)
    assert events == [(0, ConnectionClosed())]
    assert isinstance(frames(server.data_to_send())[-1], GoAwayFrame)


def test_resets_refill_over_time() -> None:
    server = raw_server(H2Limits(reset_burst=4, reset_rate=2.0))
    sid = 1
    for second in range(20):
        for _ in range(2):
            server.receive_data(headers_frame(sid, GET, end_stream=False), float(second))
            server.receive_data(RstStreamFrame(sid).serialize(), float(second))
            server.stream_finished(sid, float(second))
            sid += 2
    assert not server.closed


def test_reset_by_server_frees_the_body_credit() -> None:
    client, server = client_pair(H2Limits(connection_window=65535))
    client.send_headers(1, [(b":method", b"POST"), *GET[1:]], end_stream=False)
    for _ in range(3):
        client.send_data(1, b"x" * 15000)
    exchange(client, server)
    server.reset(1, 0.0, ErrorCodes.CANCEL)
    sent = frames(server.data_to_send())
    assert any(isinstance(f, WindowUpdateFrame) and f.stream_id == 0 for f in sent)
    assert any(isinstance(f, RstStreamFrame) and f.error_code == ErrorCodes.CANCEL for f in sent)
    assert not server.is_open(1) and server.send_window(1) == 0


# -- floods -------------------------------------------------------------------------------------
def _flood(frame_bytes: bytes, count: int) -> H2Protocol:
    server = raw_server(H2Limits(control_burst=100, control_rate=10.0))
    for _ in range(count):
        if server.receive_data(frame_bytes, 0.0) == [(0, ConnectionClosed())]:
            break
    return server


def test_ping_flood() -> None:
    server = _flood(PingFrame(0, opaque_data=b"12345678").serialize(), 500)
    assert server.closed and server.error == "too many control frames"
    assert len(server.data_to_send()) < 200 * 17 + 100  # bounded replies


def test_settings_priority_window_update_empty_data_floods() -> None:
    priority = PriorityFrame(1)
    priority.depends_on = 0
    update = WindowUpdateFrame(0)
    update.window_increment = 1
    for frame in (SettingsFrame(0), priority, update):
        assert _flood(frame.serialize(), 500).closed, frame
    server = raw_server(H2Limits(control_burst=100, control_rate=10.0))
    server.receive_data(headers_frame(1, GET, end_stream=False), 0.0)
    empty = DataFrame(1).serialize()
    events = []
    for _ in range(200):
        events += server.receive_data(empty, 0.0)
    assert events[-1] == (0, ConnectionClosed())
    assert not any(isinstance(e, Data) for _, e in events)


def test_continuation_flood() -> None:
    server = raw_server(H2Limits(max_header_list_size=4096))
    head = HeadersFrame(1)
    head.data = hpack.Encoder().encode(GET)
    server.receive_data(head.serialize(), 0.0)
    piece = ContinuationFrame(1)
    piece.data = b"\x00" * 4000
    events = []
    for _ in range(10):
        events += server.receive_data(piece.serialize(), 0.0)
    assert events == [(0, ConnectionClosed())]
    assert "CONTINUATION" in (server.error or "")


def test_hpack_bomb_is_refused() -> None:
    """One large dynamic-table entry referenced many times: the decoded size is bounded."""
    server = raw_server(H2Limits(max_header_list_size=16384))
    encoder = hpack.Encoder()
    big = (b"x-big", b"v" * 3000)
    block = encoder.encode([*GET, big]) + encoder.encode([big] * 40)
    events = server.receive_data(headers_frame_raw(1, block), 0.0)
    assert events == [(0, ConnectionClosed())]
    goaway = frames(server.data_to_send())[-1]
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def headers_frame_raw(stream_id: int, block: bytes) -> bytes:
    frame = HeadersFrame(stream_id)
    frame.data = block
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    return frame.serialize()


def test_oversized_frame_is_a_frame_size_error() -> None:
    server = raw_server()
    frame = DataFrame(1)
    frame.data = b"x" * 20000
    assert server.receive_data(frame.serialize(), 0.0) == [(0, ConnectionClosed())]
    assert frames(server.data_to_send())[-1].error_code == ErrorCodes.FRAME_SIZE_ERROR


# -- GOAWAY (RFC 9113 6.8) --------------------------------------------------------------------
def test_graceful_goaway_lets_open_streams_finish_and_refuses_new_ones() -> None:
    client, server = client_pair()
    client.send_headers(1, GET, end_stream=True)
    exchange(client, server)
    server.goaway()
    (goaway,) = frames(server.data_to_send())
    assert isinstance(goaway, GoAwayFrame) and goaway.last_stream_id == 1
    server.send_headers(1, 200, [], end=True)
    assert server.data_to_send()
    server.receive_data(headers_frame(3, GET), 0.0)
    (refused,) = frames(server.data_to_send())
    assert refused.error_code == ErrorCodes.REFUSED_STREAM


def test_bad_preface_is_a_protocol_error() -> None:
    server = H2Protocol(H2Limits())
    server.data_to_send()
    assert server.receive_data(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20, 0.0) == [
        (0, ConnectionClosed())
    ]
    assert server.error is not None


def test_connect_without_protocol_is_a_refusal_not_a_crash() -> None:
    server = raw_server()
    fields = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
    events = server.receive_data(headers_frame(1, fields, end_stream=False), 0.0)
    refusal = events[0][1]
    assert isinstance(refusal, BadRequest) and refusal.status == 405


def test_extended_connect_carries_the_protocol() -> None:
    server = raw_server()
    fields = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":path", b"/ws"),
        (b":authority", b"example.com"),
    ]
    events = server.receive_data(headers_frame(1, fields, end_stream=False), 0.0)
    assert events[0][1].protocol == b"websocket"


def test_client_goaway_closes() -> None:
    server = raw_server()
    assert server.receive_data(GoAwayFrame(0).serialize(), 0.0) == [(0, ConnectionClosed())]


# -- the pieces, under any split ----------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30))
def test_scanner_counts_the_same_whatever_the_read_sizes(cuts: list[int]) -> None:
    update = WindowUpdateFrame(0)
    update.window_increment = 5
    data = (
        SettingsFrame(0).serialize()
        + PingFrame(0).serialize()
        + headers_frame(1, GET, end_stream=False)
        + DataFrame(1).serialize()
        + RstStreamFrame(1).serialize()
        + update.serialize()
    )
    scanner = FrameScanner(skip=0)
    pos = 0
    for cut in cuts:
        scanner.feed(data[pos : pos + cut])
        pos += cut
    scanner.feed(data[pos:])
    assert (scanner.cheap, scanner.resets, scanner.block_bytes) == (4, 1, 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=64), st.binary(min_size=0, max_size=3000))
def test_any_split_of_a_request_gives_the_same_events(step: int, body: bytes) -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"POST"), *GET[1:]], end_stream=False)
    if body:
        client.send_data(1, body)
    client.end_stream(1)
    wire = client.data_to_send()
    server = H2Protocol(H2Limits())
    events = []
    for pos in range(0, len(wire), step):
        events += server.receive_data(wire[pos : pos + step], 0.0)
    events = [e for e in events if not isinstance(e[1], SendCredit)]
    received = b"".join(e.data for _, e in events if isinstance(e, Data))
    assert received == body
    assert isinstance(events[0][1], Request) and isinstance(events[-1][1], EndData)


def test_token_bucket_over_its_burst_stays_empty() -> None:
    """A take past the burst left the bucket negative, which read as "never used": the
    next take refilled it (found by the property below)."""
    bucket = TokenBucket(rate=10.0, burst=5)
    assert [bucket.take(0.0) for _ in range(8)] == [True] * 5 + [False] * 3


@given(st.lists(st.floats(min_value=0, max_value=5), max_size=50))
def test_token_bucket_never_exceeds_its_rate(gaps: list[float]) -> None:
    bucket = TokenBucket(rate=10.0, burst=5)
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        allowed += bucket.take(now)
    assert allowed <= 5 + 10.0 * now + 1e-6


# -- no input makes the protocol raise ----------------------------------------------------------
_frame = st.tuples(
    st.integers(min_value=0, max_value=12),  # type: the ten of RFC 9113 and unknown ones
    st.integers(min_value=0, max_value=255),  # flags
    st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),  # stream id
    st.binary(max_size=40),
)


def _serialize(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_frame, max_size=25),
    st.lists(st.integers(min_value=1, max_value=7), max_size=5),
    st.integers(min_value=1, max_value=64),
)
def test_random_frames_never_raise(frames: list, finished: list[int], step: int) -> None:
    """Hypercorn's trio worker dies from one odd frame (a KeyError, an assertion); here
    every input ends, at worst, in ConnectionClosed with a GOAWAY to send; a malformed head
    (an empty HEADERS block, say) is that stream's BadRequest."""
    server = H2Protocol(H2Limits(max_concurrent_streams=3))
    server.data_to_send()
    wire = PREFACE + SettingsFrame(0).serialize()
    wire += headers_frame(1, GET, end_stream=False)
    wire += b"".join(_serialize(*frame) for frame in frames)
    events = []
    for pos in range(0, len(wire), step):
        events += server.receive_data(wire[pos : pos + step], 0.0)
        for stream_id in finished:
            if server.is_open(stream_id) and server.send_window(stream_id) > 0:
                server.send_headers(stream_id, 200, [], end=False)
                server.send_data(stream_id, b"x", end=True)
            server.stream_finished(stream_id, 0.0)
    assert all(
        isinstance(
            event, (Request, BadRequest, Data, EndData, StreamReset, ConnectionClosed, SendCredit)
        )
        for _, event in events
    )
    assert server.running >= 0
    if server.closed:
        assert events[-1] == (0, ConnectionClosed())
    assert len(server.data_to_send()) < 64 * 1024


# -- h2c: the preface and Upgrade (sansio/h2c.py) ------------------------------------------------
def _upgrade_request(*extra: tuple[bytes, bytes], method: bytes = b"GET") -> Request:
    headers = [
        (b"host", b"example.com"),
        (b"connection", b"Upgrade, HTTP2-Settings"),
        (b"upgrade", b"h2c"),
        (b"http2-settings", b"AAMAAABkAARAAAAAAAIAAAAA"),
        (b"te", b"trailers"),
        (b"x-app", b"1"),
        *extra,
    ]
    return Request(method=method, target=b"/u?x=1", headers=headers, http_version="1.1")


def test_h2c_settings_accepts_a_valid_upgrade_and_declines_the_rest() -> None:
    from trioserve.sansio.h2c import h2c_settings

    assert h2c_settings(_upgrade_request()) == b"AAMAAABkAARAAAAAAAIAAAAA"
    assert h2c_settings(_upgrade_request((b"content-length", b"5"))) is None  # a body
    assert h2c_settings(_upgrade_request((b"transfer-encoding", b"chunked"))) is None
    assert h2c_settings(_upgrade_request((b"content-length", b"0"))) is not None
    assert h2c_settings(_upgrade_request((b"http2-settings", b""))) is None  # two of them
    assert h2c_settings(_upgrade_request(method=b"CONNECT")) is None
    no_upgrade = _upgrade_request()
    no_upgrade.headers = [h for h in no_upgrade.headers if h[0] != b"upgrade"]
    assert h2c_settings(no_upgrade) is None


def test_upgraded_request_is_an_http2_request_without_hop_fields() -> None:
    from trioserve.sansio.h2c import upgraded_request

    request = upgraded_request(_upgrade_request())
    assert request.http_version == "2" and request.authority == b"example.com"
    assert [name for name, _ in request.headers] == [b"host", b"x-app"]


@given(st.binary(max_size=30))
def test_preface_detection(data: bytes) -> None:
    from trioserve.sansio.h2c import is_h2_preface

    expected = data[:4] == b"PRI " and (data.startswith(PREFACE[:14]) or PREFACE.startswith(data))
    assert is_h2_preface(data) == expected
    assert is_h2_preface(PREFACE + data)
    assert not is_h2_preface(b"GET / HTTP/1.1\r\n" + data)

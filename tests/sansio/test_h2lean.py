"""trioserve's HPACK shortcuts and compact h2 settings (sansio/h2lean.py): every block they
produce or accept must mean what hpack's own encoder and decoder say it means."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from h2.settings import SettingCodes
from hypothesis import given, settings
from hypothesis import strategies as st

from trioserve.sansio import h2lean
from trioserve.sansio.h2lean import RepeatDecoder, StaticEncoder
from trioserve.sansio.http2 import H2Limits, H2Protocol, SendCredit

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"h")]
RESPONSE = [
    (b":status", b"200"),
    (b"content-type", b"text/plain"),
    (b"x-name-not-in-the-static-table", b"\xff value"),
    (b"set-cookie", b"session=secret"),
    (b"content-length", b"13"),
]


def test_static_encoder_blocks_decode_and_leave_the_table_empty() -> None:
    encoder, decoder = StaticEncoder(), hpack.Decoder()
    first = encoder.encode(RESPONSE)
    assert encoder.encode(RESPONSE) == first  # no state: the same block every time
    for _ in range(2):
        assert decoder.decode(first, raw=True) == RESPONSE
    assert not decoder.header_table.dynamic_entries


def test_credentials_are_never_indexed() -> None:
    block = StaticEncoder().encode([(b"set-cookie", b"a=b")])
    assert block[0] & 0xF0 == 0x10  # RFC 7541 6.2.3 (set-cookie is static index 55)
    decoded = hpack.Decoder().decode(block, raw=True)
    assert isinstance(decoded[0], hpack.NeverIndexedHeaderTuple)


def pair() -> tuple[h2.connection.H2Connection, H2Protocol]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server = H2Protocol(H2Limits())
    assert server.receive_data(client.data_to_send(), 0.0) == [(0, SendCredit())]
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send(), 0.0)
    return client, server


def answer(client: h2.connection.H2Connection, server: H2Protocol) -> list:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, GET, end_stream=True)
    events = server.receive_data(client.data_to_send(), 0.0)
    assert events[0][0] == stream_id
    server.send_headers(stream_id, 200, RESPONSE[1:], True)
    server.stream_finished(stream_id, 0.0)
    received = client.receive_data(server.data_to_send())
    return [e.headers for e in received if isinstance(e, h2.events.ResponseReceived)]


def test_a_smaller_header_table_is_announced_to_the_client() -> None:
    """RFC 7541 4.2: once the client's SETTINGS_HEADER_TABLE_SIZE is below the default, the
    next block starts with a size update (the client's decoder fails the block without)."""
    client, server = pair()
    assert answer(client, server) == [RESPONSE]
    client.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())  # our ACK: the client now expects size 0
    assert answer(client, server) == [RESPONSE]
    assert answer(client, server) == [RESPONSE]


def test_settings_still_take_effect_when_acknowledged() -> None:
    client, server = pair()
    client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100})
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())
    client.send_headers(3, GET, end_stream=True)
    server.receive_data(client.data_to_send(), 0.0)
    assert server.send_window(3) == 100


def decode_alike(plain: hpack.Decoder, repeat: RepeatDecoder, block: bytes) -> object:
    """Both decoders give the same headers, or fail alike; what they gave."""
    outcomes: list[object] = []
    for decoder in (plain, repeat):
        try:
            outcomes.append(decoder.decode(block, raw=True))
        except hpack.HPACKError as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]
    return outcomes[0]


FIELDS = st.tuples(
    st.sampled_from([b":path", b"x-a", b"cookie", b"user-agent", b"accept"]),
    st.sampled_from([b"/", b"/a", b"v", b"w" * 40, b"z" * 300]),
)
STEPS = st.lists(
    st.tuples(
        st.lists(FIELDS, min_size=1, max_size=4),
        st.sampled_from([None, 0, 64, 256, 4096]),  # a table size change before the block
        st.one_of(st.none(), st.integers(0, 3)),  # send the block this far back again
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_repeat_decoder_agrees_with_hpack(steps: list) -> None:
    """Blocks from hpack's indexing encoder, repeated and interleaved with table changes
    and evictions: RepeatDecoder returns what hpack's decoder does, errors included."""
    encoder, plain, repeat = hpack.Encoder(), hpack.Decoder(), RepeatDecoder()
    sent: list[bytes] = []
    for fields, table_size, back in steps:
        if table_size is not None:
            encoder.header_table_size = table_size
        if back is not None and back < len(sent):
            block = sent[-1 - back]  # (a repeat, or a block the table has moved on from)
        else:
            block = encoder.encode(fields)
        sent.append(block)
        if not isinstance(decode_alike(plain, repeat, block), list):
            return


def _literal(name: bytes, value: bytes) -> bytes:
    """Literal with incremental indexing, new name (RFC 7541 6.2.1): the table changes."""
    return b"\x40" + bytes((len(name),)) + name + bytes((len(value),)) + value


SIZE_64 = b"\x3f\x21"  # a dynamic table size update to 64 (RFC 7541 6.3)
REPLAYS = {
    # A repeat after the table moved on at the same length (insertion plus eviction).
    "same length, other entries": [
        SIZE_64 + _literal(b"x-a", b"v"),
        b"\xbe",
        _literal(b"x-b", b"v"),
        b"\xbe",
    ],
    # Indexes past the table's end, after an eviction: an error both ways.
    "evicted": [SIZE_64 + _literal(b"x-a", b"v"), b"\xbe", _literal(b"x-b", b"v"), b"\xbf"],
}


@pytest.mark.parametrize("blocks", REPLAYS.values(), ids=REPLAYS)
def test_repeat_decoder_replays(blocks: list[bytes]) -> None:
    plain, repeat = hpack.Decoder(), RepeatDecoder()
    for block in blocks:
        decode_alike(plain, repeat, block)


def test_the_encoding_cache_stays_bounded() -> None:
    """Unique values (IDs, dates) must not grow the process-wide cache without end, and
    credentials and long values are never kept."""
    encoder = StaticEncoder()
    for i in range(3000):
        encoder.encode([(b"x-request-id", b"%d" % i)])
    encoder.encode([(b"set-cookie", b"secret"), (b"location", b"/" * 300)])
    assert 0 < len(h2lean._cache) <= h2lean._CACHE_LIMIT
    assert not [field for field in h2lean._cache if field[0] in (b"set-cookie", b"location")]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([(b"content-length", b"abc")], "content-length is not a number"),
        ([(b"content-length", b"1"), (b"content-length", b"2")], "two disagree"),
        ([(b":status", b"103")], ":status in a request"),
    ],
)
def test_fields_h2_would_end_the_connection_for_are_refused_on_their_stream(
    fields: list[tuple[bytes, bytes]], reason: str
) -> None:
    """h2 checks content-length and takes a request's 1xx :status for an informational
    response even with its validation off, and either ends the whole connection: the
    decoder renames them, and the stream's own rules give the head a 400 that says why."""
    from trioserve.sansio.events import BadRequest
    from trioserve.sansio.streams import DEFUSED_FIELDS, request_from_fields

    base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    base = fields + base if fields[0][0] == b":status" else base + fields
    decoded = h2lean.RepeatDecoder().decode(hpack.Encoder().encode(base), raw=True)
    assert any(name in DEFUSED_FIELDS for name, _ in decoded)
    refusal = request_from_fields(decoded, http_version="2")
    assert isinstance(refusal, BadRequest) and refusal.status == 400
    assert reason in refusal.reason


def test_a_repeat_after_a_table_size_update_decodes_as_hpack_does() -> None:
    """Found by the property above: a block that inserted, then evicted all (the table
    looked unchanged), sent again after a size update to 0. Its second field names the
    first one's entry, which no longer fits: hpack fails the block, and so must we (the
    answer from memory was for a table that could hold that entry)."""
    encoder, plain, repeat = hpack.Encoder(), hpack.Decoder(), RepeatDecoder()
    encoder.header_table_size = 64
    decode_alike(plain, repeat, encoder.encode([(b":path", b"/")]))
    inserting = encoder.encode([(b"x-a", b"/"), (b"x-a", b"w" * 40)])
    decode_alike(plain, repeat, inserting)
    encoder.header_table_size = 0
    decode_alike(plain, repeat, encoder.encode([(b":path", b"/")]))
    assert decode_alike(plain, repeat, inserting) is hpack.InvalidTableIndex

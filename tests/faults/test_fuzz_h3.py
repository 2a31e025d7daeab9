"""Property fuzzer over HTTP/3 HEADERS frames and QPACK encoder/decoder stream data.

Each example is one QUIC connection to a server subprocess: random or half-valid QPACK field
sections in HEADERS frames (declared lengths short, long or right, FIN or not, other
frames around them) and random bytes on the client's QPACK encoder and decoder streams.
Whatever the server makes of them (431, 400, a stream reset, a connection error), the
connection, if still open, answers a well-formed request on another stream; the server
stays up, answers other connections, and logs no traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioserve.config import aioquic_usable

from ..supervisor.procs import Server
from .fuzzserver import fuzz_settings, start_h3_server

if not aioquic_usable():  # pragma: no cover - Python 3.10: aioquic 1.7 needs 3.11
    pytest.skip("HTTP/3 needs aioquic 1.7 (Python 3.11)", allow_module_level=True)

from aioquic.buffer import encode_uint_var

from tests.h3client import H3Client, StreamResult, h3_client

EXAMPLES = int(os.environ.get("FAULTS_FUZZ_H3_EXAMPLES", "60"))


def varint(value: int) -> bytes:
    return encode_uint_var(min(value, (1 << 62) - 1))


def prefixed(value: int, bits: int, flags: int) -> bytes:
    """An RFC 7541 prefixed integer (QPACK's), ``flags`` above the prefix."""
    limit = (1 << bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(out) + bytes([value])


short = st.binary(max_size=12)
length = st.one_of(st.integers(0, 40), st.integers(0, 1 << 20))
line = st.one_of(
    st.integers(0, 120).map(lambda i: prefixed(i, 6, 0xC0)),  # static (99+ out of range)
    st.integers(0, 70).map(lambda i: prefixed(i, 6, 0x80)),  # dynamic: there is no table
    st.integers(0, 9).map(lambda i: prefixed(i, 4, 0x10)),  # post-base index
    st.tuples(st.integers(0, 110), short).map(  # static name, literal value
        lambda t: prefixed(t[0], 4, 0x50) + prefixed(len(t[1]), 7, 0) + t[1]
    ),
    st.tuples(short, short, st.booleans()).map(  # literal name and value (Huffman flag)
        lambda t: (
            prefixed(len(t[0]), 3, 0x28 if t[2] else 0x20)
            + t[0]
            + prefixed(len(t[1]), 7, 0x80 if t[2] else 0)
            + t[1]
        )
    ),
    st.tuples(length, short).map(lambda t: prefixed(t[0], 7, 0) + t[1]),  # lying lengths
    short,
)
pseudo = st.sampled_from(
    [b"", bytes([0xC0 | 17, 0xC0 | 23, 0xC0 | 1, 0x50, 1]) + b"x", bytes([0xC0 | 20])]
)
prefix = st.one_of(st.just(b"\x00\x00"), st.binary(min_size=1, max_size=3))
section = st.one_of(
    st.tuples(prefix, pseudo, st.lists(line, max_size=12)).map(
        lambda t: t[0] + t[1] + b"".join(t[2])
    ),
    st.binary(max_size=80),
)


@st.composite
def headers_frame(draw: st.DrawFn) -> bytes:
    payload = draw(section)
    declared = draw(st.one_of(st.just(len(payload)), length))
    return varint(1) + varint(declared) + payload


other_frame = st.one_of(
    short.map(lambda d: varint(0) + varint(len(d)) + d),  # DATA
    st.sampled_from([0x2, 0x4, 0x6, 0x7, 0x21, 0x41]).map(lambda t: varint(t) + b"\x01\x00"),
)
request_stream = st.lists(st.one_of(headers_frame(), other_frame), min_size=1, max_size=4).map(
    b"".join
)
instructions = st.one_of(
    st.binary(max_size=40),
    st.integers(0, 5000).map(lambda c: prefixed(c, 5, 0x20)),  # Set Dynamic Table Capacity
    st.tuples(short, short).map(  # Insert With Literal Name
        lambda t: prefixed(len(t[0]), 5, 0x40) + t[0] + prefixed(len(t[1]), 7, 0) + t[1]
    ),
)


@pytest.fixture(scope="module")
def h3_fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    import trustme

    tmp: Path = tmp_path_factory.mktemp("h3fuzz")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    server = start_h3_server(tmp, "--timeout-request-head", "2", "--timeout-request-body", "2")
    try:
        yield server, str(tmp / "ca.pem")
    finally:
        server.stop()


async def attack(
    port: int, ca: str, stream: bytes, fin: bool, encoder: bytes, decoder: bytes
) -> None:
    async with h3_client(port, ca) as client:
        with trio.fail_after(5):
            while client.h3.received_settings is None and client.terminated is None:
                await trio.sleep(0.01)
        for stream_id, data in (
            (client.h3._local_encoder_stream_id, encoder),
            (client.h3._local_decoder_stream_id, decoder),
        ):
            if data and stream_id is not None:
                client.quic.send_stream_data(stream_id, data)
        junk = client.quic.get_next_available_stream_id()
        client.streams[junk] = StreamResult()
        client.quic.send_stream_data(junk, stream, end_stream=fin)
        client.wake()
        await still_serving(client)


async def still_serving(client: H3Client) -> None:
    """A connection still open answers a well-formed request on a new stream."""
    if client.terminated is not None:
        return
    result = await client.wait(client.open(b"/"), timeout=10)
    if client.terminated is None:
        assert result.status == 200, result


@pytest.mark.timeout(60 + EXAMPLES)  # one connection per example, ~0.3 s each
@fuzz_settings(EXAMPLES)
@given(
    stream=request_stream,
    fin=st.booleans(),
    encoder=st.one_of(st.just(b""), st.lists(instructions, max_size=3).map(b"".join)),
    decoder=st.one_of(st.just(b""), st.binary(max_size=8)),
)
def test_headers_and_qpack_never_break_the_server(
    h3_fuzz_server: tuple[Server, str], stream: bytes, fin: bool, encoder: bytes, decoder: bytes
) -> None:
    server, ca = h3_fuzz_server
    trio.run(attack, server.port, ca, stream, fin, encoder, decoder)
    assert server.proc.poll() is None, "the server died"


def test_no_traceback_and_still_serving(h3_fuzz_server: tuple[Server, str]) -> None:
    """Runs after the fuzzer on the same server (module-scoped, in file order)."""
    server, ca = h3_fuzz_server

    async def get() -> None:
        async with h3_client(server.port, ca) as client:
            assert (await client.request(b"/")).status == 200

    trio.run(get)
    assert "Traceback" not in server.output, server.output[-3000:]
    assert "ERROR" not in server.output, server.output[-3000:]

"""Property fuzzer over WebSocket frames sent to an echo app, for both HTTP/1.1 parsers.

Whatever frames arrive (bad opcodes, RSV bits, unmasked, oversized or fragmented control
frames, bad UTF-8, bad close codes, lengths that lie, garbage), the server answers only with
well-formed, unmasked frames, closes cleanly, logs no traceback and keeps serving.
"""

from __future__ import annotations

import os
import struct

from hypothesis import given
from hypothesis import strategies as st

from ..supervisor.procs import Server
from .fuzzserver import assert_serving_without_traceback, exchange, fuzz_settings

EXAMPLES = int(os.environ.get("FAULTS_FUZZ_EXAMPLES", "200"))

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
VALID_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    fin = draw(st.booleans())
    rsv = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7]))
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3, 11, 15]))
    payload = draw(
        st.one_of(
            st.binary(max_size=40),
            st.text(max_size=20).map(str.encode),
            st.sampled_from([b"\xff\xfe", b"\xc3", b"\x03\xe8", b"\x03\xe8bye", b"\x00\x00"]),
            st.integers(0, 65535).map(lambda c: struct.pack("!H", c)),
            st.just(b"x" * 200),  # a control frame over 125 bytes
        )
    )
    masked = draw(st.booleans() | st.just(True))
    length = len(payload)
    form = draw(st.sampled_from(["7", "16", "64", "lie"]))
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if form == "lie":
        length_bytes = bytes([mask_bit | draw(st.integers(0, 125))])
    elif form == "16" or length > 125:
        length_bytes = bytes([mask_bit | 126]) + struct.pack("!H", length)
    elif form == "64":
        length_bytes = bytes([mask_bit | 127]) + struct.pack("!Q", length)
    else:
        length_bytes = bytes([mask_bit | length])
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return head + length_bytes + key + payload
    return head + length_bytes + payload


streams = st.one_of(
    st.lists(frame(), min_size=1, max_size=5).map(b"".join),
    st.binary(max_size=100),
)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse what the server sent: (opcode, payload) each; fails on a malformed frame."""
    frames = []
    while data:
        assert len(data) >= 2, data
        opcode = data[0] & 0x0F
        assert data[0] & 0x70 == 0, "RSV bits from the server"
        assert not data[1] & 0x80, "a masked frame from the server"
        length = data[1] & 0x7F
        pos = 2
        if length == 126:
            length = struct.unpack("!H", data[2:4])[0]
            pos = 4
        elif length == 127:
            length = struct.unpack("!Q", data[2:10])[0]
            pos = 10
        payload = data[pos : pos + length]
        assert len(payload) == length, "a truncated frame from the server"
        assert opcode in (0, 1, 2, 8, 9, 10), opcode
        frames.append((opcode, payload))
        data = data[pos + length :]
    return frames


def assert_one_valid_close(frames: list[tuple[int, bytes]]) -> None:
    """At most one close frame from the server, and its code (if any) one a peer may send."""
    closes = [payload for opcode, payload in frames if opcode == 8]
    assert len(closes) <= 1
    if closes and len(closes[0]) >= 2:
        assert struct.unpack("!H", closes[0][:2])[0] in VALID_CLOSE_CODES


@fuzz_settings(EXAMPLES)
@given(data=streams)
def test_every_frame_stream_gets_well_formed_frames_and_a_clean_close(
    fuzz_server: Server, data: bytes
) -> None:
    answer, ending = exchange(fuzz_server.port, HANDSHAKE + data)
    assert ending != "timeout", f"hang on {data!r}"
    head, sep, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), answer[:200]
    assert sep
    assert_one_valid_close(server_frames(rest))
    assert fuzz_server.proc.poll() is None, "the server died"


def test_no_traceback_and_still_serving(fuzz_server: Server) -> None:
    assert_serving_without_traceback(fuzz_server)

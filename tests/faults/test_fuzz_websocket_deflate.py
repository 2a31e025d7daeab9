"""Property fuzzer over permessage-deflate WebSocket frames sent to an echo app.

Deflated messages whole, cut, fragmented, with their tail, with garbage for a payload,
RSV1 where it must not be (control frames, continuations), and bombs (zeros that inflate
far past the 64 KiB ``--ws-max-size`` the server runs with): the server answers only with
well-formed frames, closes with a valid code (1009 for a bomb), never hangs, logs no
traceback, and meanwhile answers other connections.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ..supervisor.procs import Server
from .fuzzserver import (
    assert_serving_without_traceback,
    exchange,
    fuzz_server_running,
    fuzz_settings,
)
from .test_fuzz_websocket import assert_one_valid_close

EXAMPLES = int(os.environ.get("FAULTS_FUZZ_EXAMPLES", "150"))
MAX_SIZE = 64 * 1024

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate%s\r\n\r\n"
)
OFFER_PARAMS = [b"", b"; client_no_context_takeover", b"; client_max_window_bits=9"]


def deflate(data: bytes, *, keep_tail: bool = False, bits: int = 9) -> bytes:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out if keep_tail else out[:-4]


@cache
def bomb(size: int) -> bytes:
    return deflate(bytes(size))


def masked(first: int, payload: bytes, key: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        head = bytes([first, 0x80 | length])
    elif length < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", length)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["deflated", "deflated", "bomb", "garbage", "plain", "control"]))
    fin = 0x80 if draw(st.booleans() | st.just(True)) else 0
    opcode = draw(st.sampled_from([1, 2, 2, 0]))
    rsv1 = 0x40 if draw(st.booleans() | st.just(True)) else 0
    if kind == "deflated":
        text = draw(st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
        payload = deflate(text, keep_tail=draw(st.booleans()))
        payload = payload[: draw(st.integers(0, len(payload)))]  # maybe cut short
    elif kind == "bomb":
        payload = bomb(draw(st.sampled_from([MAX_SIZE, MAX_SIZE + 1, 1 << 20, 16 << 20])))
    elif kind == "garbage":
        payload = draw(st.binary(max_size=60))
    elif kind == "plain":
        payload, rsv1 = draw(st.binary(max_size=60)), 0
    else:
        opcode = draw(st.sampled_from([8, 9, 10]))
        payload = draw(st.sampled_from([b"", b"\x03\xe8", deflate(b"ping")]))
    key = draw(st.binary(min_size=4, max_size=4))
    return masked(fin | rsv1 | opcode, payload, key)


streams = st.lists(frame(), min_size=1, max_size=5).map(b"".join)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse what the server sent; fails on a malformed frame (RSV1 only on data)."""
    frames = []
    while data:
        assert len(data) >= 2, data
        opcode = data[0] & 0x0F
        assert data[0] & 0x30 == 0, "RSV2/RSV3 from the server"
        assert not (data[0] & 0x40 and opcode not in (1, 2)), "RSV1 on a non-first frame"
        assert not data[1] & 0x80, "a masked frame from the server"
        length, pos = data[1] & 0x7F, 2
        if length == 126:
            length, pos = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            length, pos = struct.unpack("!Q", data[2:10])[0], 10
        payload = data[pos : pos + length]
        assert len(payload) == length, "a truncated frame from the server"
        assert opcode in (0, 1, 2, 8, 9, 10), opcode
        frames.append((opcode, payload))
        data = data[pos + length :]
    return frames


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[Server]:
    """Overrides tests/faults/conftest.py's: the default parser only (the fuzzing starts
    after the handshake), and a 64 KiB message limit for the bombs."""
    with fuzz_server_running("--ws-max-size", str(MAX_SIZE)) as server:
        yield server


@fuzz_settings(EXAMPLES)
@given(data=streams, params=st.sampled_from(OFFER_PARAMS))
def test_every_deflated_stream_gets_well_formed_frames_and_a_clean_close(
    fuzz_server: Server, data: bytes, params: bytes
) -> None:
    answer, ending = exchange(fuzz_server.port, HANDSHAKE % params + data)
    assert ending != "timeout", f"hang on {data[:200]!r}"
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), answer[:200]
    assert b"permessage-deflate" in head
    assert_one_valid_close(server_frames(rest))
    assert fuzz_server.proc.poll() is None, "the server died"


def test_a_bomb_alone_is_closed_1009(fuzz_server: Server) -> None:
    key = b"\x01\x02\x03\x04"
    answer, _ = exchange(fuzz_server.port, HANDSHAKE % b"" + masked(0xC2, bomb(16 << 20), key))
    frames = server_frames(answer.partition(b"\r\n\r\n")[2])
    assert [payload[:2] for opcode, payload in frames if opcode == 8] == [b"\x03\xf1"]


def test_no_traceback_and_others_still_served(fuzz_server: Server) -> None:
    start = time.monotonic()
    assert_serving_without_traceback(fuzz_server)
    assert time.monotonic() - start < 2.0

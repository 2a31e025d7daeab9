"""Amplification attacks on HTTP/3 (issue 22, rows 1, 2 and 7), each over real loopback
QUIC against a server subprocess, measuring what the server must bound: its CPU seconds
and peak RSS (/proc/PID), the window it grants, another client's latency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from aioquic.buffer import encode_uint_var

from tests.faults.fuzzserver import cpu_seconds, proc_status_kb, start_h3_server
from tests.h3client import H3Client, StreamResult, h3_client
from tests.supervisor.procs import Server

from .conftest import Certs, h3_server

MB = 1 << 20
LIMIT = 16 * 1024  # h3_max_field_section_size's default
WINDOW = 256 * 1024  # h3_stream_buffer_size's default


@pytest.fixture
def server(certs: Certs) -> Iterator[Server]:
    proc = start_h3_server(certs.ca_file.parent, "--timeout-keep-alive", "2")
    try:
        yield proc
    finally:
        proc.stop()


def frame(kind: int, payload: bytes, declared: int | None = None) -> bytes:
    length = len(payload) if declared is None else declared
    return encode_uint_var(kind) + encode_uint_var(length) + payload


def qpack_int(value: int, bits: int, flags: int) -> bytes:
    """An RFC 7541 5.1 prefixed integer, ``flags`` in the bits above the prefix."""
    limit = (1 << bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


# A request's pseudo-header fields by static table index (RFC 9204 Appendix A):
# :method GET (17), :scheme https (23), :path / (1), then :authority (0) with a literal.
PSEUDO = bytes([0xC0 | 17, 0xC0 | 23, 0xC0 | 1, 0x50, 9]) + b"localhost"


def raw_stream(client: H3Client) -> tuple[int, StreamResult]:
    stream_id = client.quic.get_next_available_stream_id()
    result = client.streams[stream_id] = StreamResult()
    return stream_id, result


async def settled(client: H3Client, result: StreamResult, timeout: float) -> None:
    """Until the server answered the stream, reset it, or closed the connection."""
    with trio.fail_after(timeout):
        while not (result.headers or result.reset is not None or client.terminated):
            await trio.sleep(0.02)


async def answered_meanwhile(port: int, ca: str, delays: list[float]) -> None:
    """Another connection's requests, timed, while the attack runs."""
    async with h3_client(port, ca) as other:
        for _ in range(5):
            start = trio.current_time()
            result = await other.wait(other.open(b"/"), timeout=60)
            assert result.header(b":status") == b"200", f"not answered: {other.terminated}"
            delays.append(trio.current_time() - start)
            await trio.sleep(0.1)


class Cost:
    """The server process's CPU seconds and peak RSS growth over a block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = cpu_seconds(pid)
        self.peak = proc_status_kb(pid, "VmHWM")
        self.rss = proc_status_kb(pid, "VmRSS")

    def measure(self) -> tuple[float, float]:
        """(CPU seconds spent, peak RSS growth in MB) since this was made."""
        cpu = cpu_seconds(self.pid) - self.cpu
        peak = max(proc_status_kb(self.pid, "VmHWM") - self.rss, 0) / 1024
        return cpu, peak


async def test_qpack_bomb(server: Server, certs: Certs) -> None:
    """Row 1: one 4,000-byte dynamic table entry, then a 250 KB HEADERS frame referencing
    it at one byte each (1 GB decoded on main: ~30 s of CPU). Now the insert is refused
    (no dynamic table) and the frame over the limit is never decoded."""
    ca = str(certs.ca_file)
    cost = Cost(server.proc.pid)
    delays: list[float] = []
    async with h3_client(server.port, ca) as bomber, trio.open_nursery() as nursery:
        with trio.fail_after(5):
            while bomber.h3.received_settings is None:
                await trio.sleep(0.01)
        entry = qpack_int(6, 5, 0x40) + b"x-bomb" + qpack_int(4000, 7, 0) + b"a" * 4000
        encoder = bomber.h3._local_encoder_stream_id
        assert encoder is not None
        bomber.quic.send_stream_data(encoder, qpack_int(4096, 5, 0x20) + entry)
        stream_id, result = raw_stream(bomber)
        # Required Insert Count 1 (encoded 2 for a 4 KiB table), base 0; each 0x80 is
        # "dynamic entry, relative index 0".
        block = b"\x02\x00" + PSEUDO + b"\x80" * 250_000
        bomber.quic.send_stream_data(stream_id, frame(0x1, block), end_stream=True)
        bomber.wake()
        nursery.start_soon(answered_meanwhile, server.port, ca, delays)
        await settled(bomber, result, timeout=90)
        refused = result.header(b":status") == b"431"
        assert refused or result.reset is not None or bomber.terminated is not None, result
    cpu, peak = cost.measure()
    print(f"server: {cpu:.2f} s CPU, peak RSS +{peak:.1f} MB, other client {delays}")
    assert cpu < 0.5, f"{cpu:.2f} s of CPU"
    assert peak < 20, f"peak RSS +{peak:.1f} MB"
    assert max(delays) < 2.0, delays
    assert server.proc.poll() is None
    assert "Traceback" not in server.output, server.output[-3000:]


async def test_static_table_bomb_over_the_limit(server: Server, certs: Certs) -> None:
    """Row 1 without the dynamic table: a 250 KB HEADERS frame of one-byte references to
    the 69-byte static entry (17 MB decoded on main, and validated byte by byte in
    Python). Now: 431 from its frame header, and the connection keeps serving."""
    ca = str(certs.ca_file)
    cost = Cost(server.proc.pid)
    delays: list[float] = []
    async with h3_client(server.port, ca) as bomber, trio.open_nursery() as nursery:
        stream_id, result = raw_stream(bomber)
        block = b"\x00\x00" + PSEUDO + bytes([0xC0 | 58]) * 250_000
        bomber.quic.send_stream_data(stream_id, frame(0x1, block), end_stream=True)
        bomber.wake()
        nursery.start_soon(answered_meanwhile, server.port, ca, delays)
        await settled(bomber, result, timeout=60)
        assert result.status == 431
        assert (await bomber.request(b"/")).status == 200  # a stream matter only
    cpu, peak = cost.measure()
    print(f"server: {cpu:.2f} s CPU, peak RSS +{peak:.1f} MB, other client {delays}")
    assert cpu < 0.5, f"{cpu:.2f} s of CPU"
    assert peak < 20, f"peak RSS +{peak:.1f} MB"
    assert max(delays) < 2.0, delays
    assert "Traceback" not in server.output, server.output[-3000:]


async def test_trailers_past_the_stream_buffer(server: Server, certs: Certs) -> None:
    """Row 2: a trailers HEADERS frame declaring 64 MiB, trickled while the app does not
    read. On main the window grew with every trailer byte (they were not body, so not
    "unread") and aioquic buffered them all by copying. Now the frame is refused at its
    header: the request is reset, and the window stays within one buffer of the body."""
    ca = str(certs.ca_file)
    cost = Cost(server.proc.pid)
    delays: list[float] = []
    async with h3_client(server.port, ca) as client:
        stream_id, result = raw_stream(client)
        fields = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost")]
        client.h3.send_headers(stream_id, [*fields, (b":path", b"/noread")])
        client.h3.send_data(stream_id, b"b" * 1000, end_stream=False)
        client.quic.send_stream_data(stream_id, frame(0x1, b"\x00\x00", declared=64 * MB))
        client.wake()
        quic_stream = client.quic._streams[stream_id]  # kept: aioquic drops it once reset
        sender = quic_stream.sender
        with trio.move_on_after(3):
            while sender._reset_error_code is None:
                if sender._buffer_stop - sender.highest_offset < MB:
                    client.quic.send_stream_data(stream_id, b"\xc0" * 32768)
                    client.wake()
                await trio.sleep(0.02)
        granted = quic_stream.max_stream_data_remote
        print(f"granted window {granted}")
        assert granted <= 2000 + WINDOW + LIMIT, f"window grew to {granted}"
        assert result.reset is not None or sender._reset_error_code is not None
        assert (await client.request(b"/")).status == 200
    cpu, peak = cost.measure()
    print(f"server: {cpu:.2f} s CPU, peak RSS +{peak:.1f} MB, other client {delays}")
    assert peak < 20, f"peak RSS +{peak:.1f} MB"
    assert cpu < 1.0, f"{cpu:.2f} s of CPU"
    assert "Traceback" not in server.output, server.output[-3000:]


async def pinging(client: H3Client, stop: trio.Event) -> None:
    """QUIC PINGs every 0.2 s: liveness that is not a request."""
    uid = 0
    while not stop.is_set() and client.terminated is None:
        uid += 1
        client.quic.send_ping(uid)
        client.wake()
        await trio.sleep(0.2)


async def test_idle_connections_follow_keep_alive_timeout(server: Server, certs: Certs) -> None:
    """Row 7: 20 connections from one address, one request each, then only PINGs. On main
    they stayed open for quic_idle_timeout (30 s) after every PING; now each is closed
    (GOAWAY, CONNECTION_CLOSE H3_NO_ERROR) keep_alive_timeout (2 s here) after its request."""
    ca = str(certs.ca_file)
    held: list[float] = []  # seconds from each connection's response to its close

    async def one() -> None:
        async with h3_client(server.port, ca) as client:
            assert (await client.request(b"/")).status == 200
            answered = trio.current_time()
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pinging, client, stop)
                with trio.move_on_after(10):
                    while client.terminated is None:
                        await trio.sleep(0.05)
                stop.set()
            assert client.terminated is not None, "still open 10 s after its request"
            assert client.terminated.error_code == 0x100, client.terminated  # H3_NO_ERROR
            held.append(trio.current_time() - answered)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    print(f"held after the request: {min(held):.2f}-{max(held):.2f} s")
    assert len(held) == 20
    assert min(held) > 1.5 and max(held) < 8, held  # keep_alive_timeout is 2 s here


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})


async def test_idle_timer_counts_requests_not_pings(certs: Certs) -> None:
    """A connection that never sends a request is closed after keep_alive_timeout too, and
    a request in flight is never cut by it."""

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await trio.sleep(1.5)
        await hello(scope, receive, send)

    async with h3_server(slow, certs, keep_alive_timeout=0.5) as server:
        async with h3_client(server.port, str(certs.ca_file)) as silent:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pinging, silent, stop)
                with trio.fail_after(5):
                    while silent.terminated is None:
                        await trio.sleep(0.05)
                stop.set()
            assert silent.terminated.error_code == 0x100
        async with h3_client(server.port, str(certs.ca_file)) as busy:
            result = await busy.request(b"/")  # 1.5 s, three times the idle timeout
            assert (result.status, bytes(result.body)) == (200, b"hi")


async def test_keep_alive_off_serves_one_request_then_closes(certs: Certs) -> None:
    """keep_alive_timeout = 0: a new connection still gets its request served (it has
    request_head_timeout for it), and is closed as soon as that stream ends."""
    async with (
        h3_server(hello, certs, keep_alive_timeout=0) as server,
        h3_client(server.port, str(certs.ca_file)) as client,
    ):
        await trio.sleep(0.3)  # longer than 0 s: not closed before its first request
        assert client.terminated is None
        assert (await client.request(b"/")).status == 200
        with trio.fail_after(5):
            while client.terminated is None:
                await trio.sleep(0.05)
        assert client.terminated.error_code == 0x100


async def connects(client: H3Client, within: float) -> bool:
    with trio.move_on_after(within):
        await client.connected.wait()
        return True
    return False


async def test_established_connections_capped_per_address(certs: Certs) -> None:
    """Row 7's second half: at most quic_max_connections_per_ip connections per address
    (further Initials are dropped); a slot frees when a connection ends."""
    ca = str(certs.ca_file)
    async with h3_server(hello, certs, quic_max_connections_per_ip=3) as server:
        async with trio.open_nursery() as nursery:
            held = [H3Client(server.port, ca) for _ in range(3)]
            for client in held:
                nursery.start_soon(client.run)
                assert await connects(client, 10)
            extra = H3Client(server.port, ca)
            nursery.start_soon(extra.run)
            assert not await connects(extra, 1.5)
            held[0].close()
            assert await connects(extra, 10)  # its Initial is retransmitted and now taken
            assert (await extra.request(b"/")).status == 200
            nursery.cancel_scope.cancel()
        for client in [*held, extra]:
            client.sock.close()

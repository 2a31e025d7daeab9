"""trioserve's lean SocketStream and StreamListener over real loopback sockets.

The peer is a plain trio.SocketStream (or a stdlib socket where the test needs to control
the kernel side: buffer sizes, a reset).
"""

from __future__ import annotations

import hashlib
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio
import trio.testing

from trioserve.server.sockstream import _YIELD_EVERY, SocketStream, StreamListener
from trioserve.server.writebatch import WriteBatch


@contextmanager
def tcp_pair(
    *, small_buffers: bool = False, batch: WriteBatch | None = None
) -> Iterator[tuple[SocketStream, socket.socket]]:
    """(our stream, the peer's stdlib socket), connected over 127.0.0.1; ``batch``: the
    stream's write batch (server/writebatch.py)."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        client = socket.socket()
        if small_buffers:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        client.connect(lsock.getsockname())
        server, _ = lsock.accept()
    server.setblocking(False)
    if small_buffers:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    stream = SocketStream(server, batch)
    try:
        yield stream, client
    finally:
        stream.close()
        client.close()


def peer(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def test_receive_and_send_round_trip() -> None:
    with tcp_pair() as (stream, client):
        other = peer(client)
        await other.send_all(b"ping")
        assert await stream.receive_some(100) == b"ping"
        await stream.send_all(b"pong")
        await stream.send_all(memoryview(b"-view"))
        await stream.send_all(b"")
        got = b""
        with trio.fail_after(5):
            while len(got) < 9:
                got += await other.receive_some(100)
        assert got == b"pong-view"


async def test_a_receive_timeout_bounds_only_the_wait() -> None:
    with tcp_pair() as (stream, client):
        client.sendall(b"here")
        await trio.sleep(0.05)  # (in the kernel's buffer by now)
        assert await stream.receive_some(100, timeout=0) == b"here"
        with pytest.raises(trio.TooSlowError):
            await stream.receive_some(100, timeout=0.05)
        client.sendall(b"later")  # the stream is still usable after a timeout
        assert await stream.receive_some(100, timeout=5) == b"later"


async def test_receive_some_rejects_a_zero_size() -> None:
    with tcp_pair() as (stream, _), pytest.raises(ValueError):
        await stream.receive_some(0)


async def test_cancel_while_blocked_in_receive_leaves_the_stream_usable() -> None:
    with tcp_pair() as (stream, client):
        with trio.move_on_after(0.05) as scope:
            await stream.receive_some(100)
        assert scope.cancelled_caught
        await peer(client).send_all(b"later")
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b"later"


async def test_an_already_cancelled_call_does_not_touch_the_socket() -> None:
    with tcp_pair() as (stream, client):
        client.sendall(b"waiting")
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.receive_some(100)
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.send_all(b"never")
        assert scope.cancelled_caught
        assert await stream.receive_some(100) == b"waiting"  # still unread
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(100)  # nothing was sent


async def test_cancel_while_blocked_in_send() -> None:
    with tcp_pair(small_buffers=True) as (stream, _client):
        with trio.move_on_after(0.2) as scope:
            await stream.send_all(b"x" * (8 * 1024 * 1024))  # the peer never reads
        assert scope.cancelled_caught


async def test_big_send_to_a_slow_reader_arrives_intact() -> None:
    payload = b"".join(struct.pack(">I", i) for i in range(1024 * 1024))  # 4 MiB, no repeats
    with tcp_pair(small_buffers=True) as (stream, client):
        other = peer(client)
        done = trio.Event()

        async def send() -> None:
            await stream.send_all(payload)
            done.set()

        digest = hashlib.sha256()
        received = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.sleep(0.1)
            assert not done.is_set()  # it is blocked part-way, waiting for the reader
            with trio.fail_after(20):
                while received < len(payload):
                    data = await other.receive_some(8192)
                    assert data
                    digest.update(data)
                    received += len(data)
                    if received % 16 == 0:
                        await trio.sleep(0)
        assert done.is_set()
        assert received == len(payload)
        assert digest.digest() == hashlib.sha256(payload).digest()


async def test_a_second_sender_while_one_is_blocked_is_busy() -> None:
    with tcp_pair(small_buffers=True) as (stream, _client):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, b"x" * (8 * 1024 * 1024))
            await trio.sleep(0.05)
            with pytest.raises(trio.BusyResourceError):
                await stream.send_all(b"interleaved")
            with pytest.raises(trio.BusyResourceError):
                await stream.wait_send_all_might_not_block()
            nursery.cancel_scope.cancel()


async def test_two_blocked_readers_are_busy() -> None:
    with tcp_pair() as (stream, _client):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.receive_some, 100)
            await trio.sleep(0.05)
            with pytest.raises(trio.BusyResourceError):
                await stream.receive_some(100)
            nursery.cancel_scope.cancel()


async def test_peer_reset_is_a_broken_resource() -> None:
    with tcp_pair() as (stream, client):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
        await trio.sleep(0.05)
        with pytest.raises(trio.BrokenResourceError) as info:
            await stream.receive_some(100)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(10):  # the first send after a reset may still be accepted
                await stream.send_all(b"x" * 65536)


async def test_close_while_another_task_waits_is_a_closed_resource() -> None:
    with tcp_pair() as (stream, _client):
        errors: list[BaseException] = []

        async def wait_for_data() -> None:
            try:
                await stream.receive_some(100)
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_data)
            await trio.sleep(0.05)
            await stream.aclose()
        assert len(errors) == 1
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some(100)
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await stream.wait_send_all_might_not_block()
        stream.close()  # idempotent


async def test_close_while_a_send_waits_is_a_closed_resource() -> None:
    with tcp_pair(small_buffers=True) as (stream, _client):
        errors: list[BaseException] = []

        async def send() -> None:
            try:
                await stream.send_all(b"x" * (8 * 1024 * 1024))
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.sleep(0.05)
            stream.close()
        assert len(errors) == 1


async def test_send_eof_half_closes() -> None:
    with tcp_pair() as (stream, client):
        other = peer(client)
        await stream.send_all(b"last words")
        await stream.send_eof()
        await stream.send_eof()  # idempotent
        got = b""
        with trio.fail_after(5):
            while True:
                data = await other.receive_some(100)
                if not data:
                    break
                got += data
        assert got == b"last words"
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")
        await other.send_all(b"the peer may still talk")  # the other direction stays open
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b"the peer may still talk"


async def test_wait_send_all_might_not_block() -> None:
    with tcp_pair() as (stream, _client):
        with trio.fail_after(5):
            await stream.wait_send_all_might_not_block()


async def test_peek_leaves_the_bytes_for_the_next_read() -> None:
    with tcp_pair() as (stream, client):
        client.sendall(b"PROXY and more")
        with trio.fail_after(5):
            assert await stream.peek(5) == b"PROXY"
        assert await stream.receive_some(100) == b"PROXY and more"


@asynccontextmanager
async def ticking() -> AsyncIterator[list[int]]:
    """A task that counts its turns while the body runs: ticks[0] grows at each yield."""
    ticks = [0]

    async def other_task() -> None:
        while True:
            ticks[0] += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        yield ticks
        nursery.cancel_scope.cancel()


async def test_reads_that_never_wait_still_let_other_tasks_run() -> None:
    """A client whose requests are always there already must not starve the others."""
    with tcp_pair() as (stream, client):
        client.sendall(b"x" * (_YIELD_EVERY * 4))
        await trio.sleep(0.05)
        async with ticking() as ticks:
            await trio.sleep(0)
            before = ticks[0]
            for _ in range(_YIELD_EVERY * 4):
                assert await stream.receive_some(1) == b"x"
            assert ticks[0] - before >= 3


async def test_send_all_is_a_schedule_point() -> None:
    with tcp_pair() as (stream, _client):
        async with ticking() as ticks:
            for _ in range(20):  # each send completes at once, yet yields
                await stream.send_all(b"x")
            assert ticks[0] >= 10


async def test_listener_accepts_non_blocking_no_delay_streams() -> None:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        listener = StreamListener(lsock)
        async with trio.open_nursery() as nursery:

            async def connect() -> None:
                client = await trio.open_tcp_stream(*lsock.getsockname())
                await client.send_all(b"hi")
                await client.aclose()

            nursery.start_soon(connect)
            with trio.fail_after(5):
                stream = await listener.accept()
        try:
            assert stream.socket.getblocking() is False
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            with trio.fail_after(5):
                assert await stream.receive_some(100) == b"hi"
                assert await stream.receive_some(100) == b""
        finally:
            stream.close()


async def test_listener_accept_can_be_cancelled_and_reports_closing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        listener = StreamListener(lsock)
        with trio.move_on_after(0.05) as scope:
            await listener.accept()
        assert scope.cancelled_caught
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_listener_close_wakes_a_blocked_accept() -> None:
    lsock = socket.create_server(("127.0.0.1", 0))
    listener = StreamListener(lsock)
    errors: list[BaseException] = []

    async def accept() -> None:
        try:
            await listener.accept()
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        await trio.testing.wait_all_tasks_blocked()
        listener.close()
    assert len(errors) == 1
    assert lsock.fileno() == -1
    listener.close()  # twice is fine


async def test_unix_socket_stream() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    stream = SocketStream(left)
    try:
        other = peer(right)
        await stream.send_all(b"over unix")
        with trio.fail_after(5):
            assert await other.receive_some(100) == b"over unix"
    finally:
        stream.close()
        right.close()

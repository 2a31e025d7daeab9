"""The write batch (server/writebatch.py): a response's last small write waits for the end
of the scheduler's pass, then leaves before the writing task runs again, in order, and
whatever the kernel did not take (or an error) is settled by that task.

Real loopback sockets; the scheduler is trio's own, so "the end of the pass" is the
``before_io_wait`` hook the batch is installed on.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
import trio

from tests.server.test_sockstream import tcp_pair
from trioserve.server.sockstream import SocketStream
from trioserve.server.writebatch import DEFER_LIMIT, FLUSH_AT, WriteBatch, current_write_batch
from trioserve.testing import open_server


@contextmanager
def batched_pair(
    *, small_buffers: bool = False
) -> Iterator[tuple[SocketStream, socket.socket, WriteBatch]]:
    """(our stream on this run's batch, the peer's blocking stdlib socket, the batch)."""
    batch = current_write_batch()
    with tcp_pair(small_buffers=small_buffers, batch=batch) as (stream, client):
        yield stream, client, batch


async def read_response(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, bytes, bytes]:
    """The next Content-Length framed response from ``buffer`` and the stream."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end != -1:
            head = bytes(buffer[:end])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            if len(buffer) >= end + 4 + length:
                body = bytes(buffer[end + 4 : end + 4 + length])
                del buffer[: end + 4 + length]
                return int(head.split(b" ", 2)[1]), head, body
        data = await stream.receive_some(65536)
        assert data, "the server closed the connection"
        buffer.extend(data)


def readable_now(sock: socket.socket) -> bytes | None:
    """What the peer can read without waiting (None: nothing yet)."""
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


async def test_a_deferred_write_leaves_at_the_end_of_the_pass() -> None:
    with batched_pair() as (stream, client, batch):
        await stream.send_all(b"response", schedule=False)
        # Still this task's step: the write waits in the batch, nothing was sent.
        assert stream.deferred == b"response"
        assert batch.streams == [stream]
        assert readable_now(client) is None
        await trio.lowlevel.cancel_shielded_checkpoint()  # the task runs again...
        # ...only after the batch was sent, before trio waited for I/O.
        assert stream.deferred == b""
        assert batch.streams == []
        client.settimeout(5)
        assert client.recv(100) == b"response"


async def test_a_full_batch_is_sent_at_once() -> None:
    """The FLUSH_AT-th write of a pass sends the batch then and there: clients get their
    responses while the pass goes on, not in one burst after it."""
    with ExitStack() as stack:
        pairs = [stack.enter_context(batched_pair()) for _ in range(FLUSH_AT)]
        for i, (stream, _, _) in enumerate(pairs[:-1]):
            await stream.send_all(b"r%d" % i, schedule=False)
        assert all(readable_now(client) is None for _, client, _ in pairs)
        last, _, batch = pairs[-1]
        await last.send_all(b"last", schedule=False)  # (no schedule point in between)
        assert batch.streams == []
        for i, (stream, client, _) in enumerate(pairs):
            assert stream.deferred == b""
            client.settimeout(5)
            assert client.recv(100) == (b"r%d" % i if i < FLUSH_AT - 1 else b"last")


async def test_the_run_has_one_batch_installed_once() -> None:
    assert current_write_batch() is current_write_batch()


async def test_writes_of_one_pass_keep_each_streams_order() -> None:
    with batched_pair() as (first, client_a, _), batched_pair() as (second, client_b, _):
        await first.send_all(b"a1", schedule=False)
        await second.send_all(b"b1", schedule=False)
        # A later write on the same stream sends the waiting one first.
        await first.send_all(b"a2")
        client_a.settimeout(5)
        client_b.settimeout(5)
        got = b""
        while len(got) < 4:
            got += client_a.recv(100)
        assert got == b"a1a2"
        assert client_b.recv(100) == b"b1"


async def test_only_a_small_last_write_waits() -> None:
    with batched_pair() as (stream, client, _):
        await stream.send_all(b"x" * (DEFER_LIMIT + 1), schedule=False)  # too big: sent now
        assert stream.deferred == b""
        await stream.send_all([b"head", b"body"], schedule=False)  # a gather write: now
        await stream.send_all(b"plain")  # an ordinary write: now
        client.settimeout(5)
        got = b""
        while len(got) < DEFER_LIMIT + 1 + 13:
            got += client.recv(1 << 20)
        assert got.endswith(b"headbodyplain")


async def test_what_the_kernel_did_not_take_is_sent_by_the_stream_task() -> None:
    with batched_pair(small_buffers=True) as (stream, client, _):
        blocker = b"f" * 400_000
        sent = 0
        while True:  # fill the kernel's buffers without waiting
            try:
                sent += stream.socket.send(blocker[sent:])
            except BlockingIOError:
                break
        payload = bytes(range(256)) * (DEFER_LIMIT // 256)
        await stream.send_all(payload, schedule=False)
        await trio.lowlevel.cancel_shielded_checkpoint()  # the batch ran: not all fitted
        assert stream.deferred
        assert payload.endswith(stream.deferred)
        received = bytearray()

        def drain() -> None:
            client.settimeout(5)
            while len(received) < sent + len(payload):
                chunk = client.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, drain)
            with trio.fail_after(5):
                await stream.settle_deferred()
        assert stream.deferred == b""
        assert bytes(received[sent:]) == payload


async def test_a_failed_batch_send_is_raised_by_the_stream_task() -> None:
    with batched_pair() as (stream, client, _):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # a reset
        await trio.sleep(0.05)
        try:
            stream.socket.send(b"probe")  # the first write after a reset may still pass
        except OSError:
            pass
        await stream.send_all(b"response", schedule=False)
        await trio.lowlevel.cancel_shielded_checkpoint()
        assert stream.deferred_error is not None
        with pytest.raises(trio.BrokenResourceError):
            await stream.settle_deferred()
        assert stream.deferred_error is None


async def test_close_and_send_eof_send_a_waiting_write_first() -> None:
    with batched_pair() as (stream, client, _):
        await stream.send_all(b"last words", schedule=False)
        await stream.send_eof()  # the FIN goes after the waiting bytes
        client.settimeout(5)
        assert client.recv(100) == b"last words"
        assert client.recv(100) == b""
    with batched_pair() as (stream, client, _):
        await stream.send_all(b"goodbye", schedule=False)
        stream.close()
        client.settimeout(5)
        assert client.recv(100) == b"goodbye"


# -- through the server --------------------------------------------------------------------
async def hello(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    size = int(scope["query_string"] or b"13")
    body = (scope["path"].encode() * size)[:size]
    await send(  # type: ignore[operator]
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % size)],
        }
    )
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


async def test_pipelined_responses_from_the_batch_arrive_in_order() -> None:
    """Many keep-alive requests in one write, answered by responses that each wait in the
    batch: every response arrives whole and in order (the path says which)."""
    async with open_server(hello, access_log=False) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            requests = b"".join(b"GET /r%d?64 HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(200))
            await stream.send_all(requests)
            buffer = bytearray()
            with trio.fail_after(10):
                for i in range(200):
                    status, _, body = await read_response(stream, buffer)
                    assert status == 200
                    assert body == (b"/r%d" % i * 64)[:64]


async def test_a_client_that_stops_reading_still_gets_every_response() -> None:
    """While the client reads nothing, the kernel's buffers fill and a pass's responses no
    longer fit: the rest waits with each connection's task, and everything arrives intact
    and in order once the client reads again (about 15 MB, more than the buffers hold)."""
    async with open_server(hello, access_log=False) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            count = 1000
            size = DEFER_LIMIT - 200  # each response small enough to wait in the batch
            requests = b"".join(
                b"GET /p%04d?%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, size) for i in range(count)
            )
            await stream.send_all(requests)
            await trio.sleep(0.5)  # the server fills the buffers and waits on us
            buffer = bytearray()
            with trio.fail_after(30):
                for i in range(count):
                    status, _, body = await read_response(stream, buffer)
                    assert status == 200
                    assert body == (b"/p%04d" % i * size)[:size]


async def test_responses_over_httpx_keep_alive() -> None:
    async with (
        open_server(hello, access_log=False) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        for i in range(50):
            response = await client.get(f"/k{i}")
            assert response.status_code == 200
            assert response.content == (f"/k{i}".encode() * 13)[:13]

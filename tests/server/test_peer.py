"""PeerStream over real socket pairs: EOF, ClientDisconnected, turns, poll_gone()."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from trioserve.errors import ClientDisconnected
from trioserve.server.peer import PeerStream
from trioserve.server.sockstream import SocketStream


def _pair() -> tuple[PeerStream, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return PeerStream(SocketStream(ours)), theirs


async def test_reads_end_at_eof_and_remember_it() -> None:
    peer, other = _pair()
    other.sendall(b"hello")
    other.shutdown(socket.SHUT_WR)
    assert await peer.receive() == b"hello"
    assert await peer.receive() == b""
    assert peer.eof
    assert await peer.receive() == b""  # no read once the peer closed
    other.close()
    await peer.close()


async def test_a_stalled_read_times_out() -> None:
    peer, other = _pair()
    with pytest.raises(trio.TooSlowError):
        await peer.receive(timeout=0.05)
    other.close()
    await peer.close()


async def test_writes_to_a_gone_peer_raise_client_disconnected() -> None:
    peer, other = _pair()
    other.close()
    with pytest.raises(ClientDisconnected):
        for _ in range(100):  # the first write may still be taken by the kernel
            await peer.send(b"x" * 65536)
    assert peer.broken
    await peer.close()


async def test_poll_gone_sees_close_and_reset_without_reading() -> None:
    peer, other = _pair()
    assert not peer.poll_gone()
    other.sendall(b"pipelined bytes before the close")
    assert not peer.poll_gone()  # data alone is not a hang-up
    other.close()
    assert peer.poll_gone()
    assert not peer.eof  # nothing was read
    await peer.close()

    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server = await listener.accept()
    peer = PeerStream(SocketStream(server.socket.dup()))
    # SO_LINGER 0: close() sends RST.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    await trio.sleep(0.05)
    assert peer.poll_gone()
    await peer.close()
    await server.aclose()
    await listener.aclose()


async def test_two_readers_take_turns() -> None:
    peer, other = _pair()
    got: list[bytes] = []

    async def read() -> None:
        got.append(await peer.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        other.sendall(b"a")
        await trio.testing.wait_all_tasks_blocked()
        other.sendall(b"b")
    assert sorted(got) == [b"a", b"b"]
    other.close()
    await peer.close()

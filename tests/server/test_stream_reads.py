"""A cancelled read of an HTTP/2 or HTTP/3 stream leaves its bytes where they were.

The WebSocket reader reads under its keep-alive deadline: when the deadline passed while
the reading task was waking up for new DATA, the read took the bytes and then raised
``Cancelled`` at its schedule point, so the bytes were lost. They were the client's close
frame in the contract scenario ``ws_keepalive_pings`` on HTTP/3 (a CI failure under load):
the app never heard the close. These tests pin trio's rule on both reads of a stream.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio

from trioserve.sansio.events import Data, EndData
from trioserve.server.stream import Stream, StreamIO


class _Framer:
    def consumed(self, stream_id: int, size: int) -> bool:
        return False  # no window update owed: nothing for the connection to send


class _Owner:
    """Just what a stream's reads touch of its connection (no I/O loop: no socket)."""

    framer: Any = _Framer()
    state: Any = SimpleNamespace(config=SimpleNamespace(h2_reset_grace=1.0))

    def kick(self) -> None:
        raise AssertionError("a read with no window update to send kicked the sender")


def _stream_with(*pieces: bytes, end: bool = False) -> Stream:
    stream = Stream(_Owner(), 1)  # type: ignore[arg-type]
    for piece in pieces:
        stream.on_event(Data(piece))
    if end:
        stream.on_event(EndData())
    return stream


async def test_a_cancelled_websocket_read_keeps_the_bytes() -> None:
    io = StreamIO(_stream_with(b"close frame"))
    with trio.CancelScope() as scope:
        scope.cancel()  # the keep-alive deadline, passed as the read wakes up
        await io.receive_some()
    assert scope.cancelled_caught
    with trio.fail_after(1):
        assert await io.receive_some() == b"close frame"


async def test_a_cancelled_body_read_keeps_the_bytes() -> None:
    stream = _stream_with(b"body", end=True)
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.receive_body(None)
    assert scope.cancelled_caught
    with trio.fail_after(1):
        assert await stream.receive_body(None) == (b"body", False)

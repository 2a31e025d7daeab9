"""Item 2: a client that pipelined more than the server buffers, then left, is noticed.

The server stops reading once ~64 KiB of pipelined requests wait behind a long-poll
request, so it can't see the client's FIN or RST by reading; before, such connections (and
their app tasks) were held until shutdown.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
import trio

from trioserve.testing import open_server

CONNECTIONS = 50
PIPELINED = 200 * 1024


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_clients_gone_behind_a_full_pipeline_are_released(how: str) -> None:
    released: list[float] = []
    started = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal started
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        started += 1
        message = await receive()  # a long poll: nothing to send until the client leaves
        assert message["type"] == "http.disconnect"
        released.append(trio.current_time())

    filler = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    payload = b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n" + filler * (PIPELINED // len(filler))
    async with open_server(app, keep_alive_timeout=60) as server:
        streams = []
        for _ in range(CONNECTIONS):
            stream = await trio.open_tcp_stream(server.host, server.port)
            streams.append(stream)
            with trio.move_on_after(2):  # what the kernel buffers take is enough
                await stream.send_all(payload)
        with trio.fail_after(10):
            while started < CONNECTIONS:
                await trio.sleep(0.05)
        await trio.sleep(0.3)
        assert released == []  # still there: nobody is released early
        left = trio.current_time()
        for stream in streams:
            if how == "rst":
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            await stream.aclose()
        with trio.move_on_after(5):
            while len(released) < CONNECTIONS:
                await trio.sleep(0.05)
        assert len(released) == CONNECTIONS
        slowest = max(released) - left
        assert slowest < 2.0, f"slowest release took {slowest:.2f}s"

"""The held response head in asyncio mode (issue 21, item 10): an asyncio app that waits
after ``http.response.start`` has its head sent then; start and body back to back still
leave in one write (the connection's trio task does not yield between them)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio

from tests.server.test_streaming_head import SOON, WAIT, count_writes, head_time
from trioserve.testing import open_server


@pytest.fixture(autouse=True)
def _force_http_parser() -> None:
    """Any parser: the bridge is what is under test."""


async def asyncio_sse_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    asyncio.get_running_loop()  # (runs on the asyncio loop)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(WAIT)
    await send({"type": "http.response.body", "body": b"data: tick\n\n"})


async def asyncio_hello_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    asyncio.get_running_loop()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


async def test_asyncio_head_arrives_before_the_first_event() -> None:
    async with open_server(asyncio_sse_app, loop="asyncio") as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            elapsed, received = await head_time(stream, request)
    assert elapsed < SOON, f"headers after {elapsed:.2f}s"
    assert received.startswith(b"HTTP/1.1 200 ")


async def test_asyncio_hello_is_still_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = await count_writes(monkeypatch, asyncio_hello_app, loop="asyncio")
    assert len(writes) == 3

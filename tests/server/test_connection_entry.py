"""One entry point for an accepted stream: the server and the in-memory transport share it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from trioserve.server import connection
from trioserve.server.http11 import HTTP11Connection
from trioserve.testing import open_memory_client, open_server


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which connections went through handle_stream's protocol table (by transport)."""
    seen: list[str] = []

    def make(stream: trio.abc.Stream, *args: Any) -> HTTP11Connection:
        seen.append(type(stream).__name__)
        return HTTP11Connection(stream, *args)

    monkeypatch.setitem(connection.PROTOCOLS, "http/1.1", make)
    return seen


async def test_the_server_goes_through_handle_stream(served: list[str]) -> None:
    async with open_server(hello) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.text == "hi"
    assert served == ["SocketStream"]


async def test_the_memory_transport_goes_through_handle_stream(served: list[str]) -> None:
    async with open_memory_client(hello) as client:
        response = await client.get("/")
    assert response.text == "hi"
    assert served == ["StapledStream"]  # trio.testing's in-memory stream pair

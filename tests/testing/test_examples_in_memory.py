"""Dogfooding: the project's own examples, tested through the in-memory transport."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from examples import fastapi_app, starlette_app, streaming
from trioserve.testing import open_memory_client


async def test_streaming_example_events_arrive_as_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    arrivals: list[tuple[str, float]] = []
    async with open_memory_client(streaming.app) as client:
        start = trio.current_time()
        async with client.stream("GET", "/?n=3") as response:
            async for line in response.aiter_lines():
                if line:
                    arrivals.append((line, trio.current_time() - start))
    assert [line for line, _ in arrivals] == ["data: 0", "data: 1", "data: 2"]
    assert [at for _, at in arrivals] == pytest.approx([0, 0.05, 0.10])


async def test_fastapi_example() -> None:
    fastapi_app.events.clear()
    async with open_memory_client(fastapi_app.app) as client:
        assert fastapi_app.events == ["startup"]
        assert (await client.get("/items/1")).json() == {"id": 1, "name": "apple"}
        assert (await client.post("/items", json={"name": "pear"})).status_code == 422
        assert (await client.get("/sync")).json()["thread"] != "MainThread"
    assert fastapi_app.events[-1] == "shutdown"


async def test_starlette_example() -> None:
    async with open_memory_client(starlette_app.app) as client:
        assert (await client.get("/")).json() == {"greeting": "hello", "path": "/"}
        assert (await client.get("/stream?n=3")).text == "0\n1\n2\n"
        assert (await client.get("/background")).text == "accepted"
        assert (await client.get("/tasks")).json() == ["ran"]


async def test_http2_features_example() -> None:
    from examples import http2_features

    async with open_memory_client(http2_features.app, http2=True) as client:
        page = await client.get("/")
        source = await client.get("/source")
    assert page.http_version == "HTTP/2" and page.content == http2_features.PAGE
    assert source.content == http2_features.HERE.read_bytes()

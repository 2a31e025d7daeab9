"""Starlette and FastAPI on trioserve, over loopback, on anyio's trio backend."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from examples import fastapi_app, starlette_app, streaming
from trioserve.testing import open_server


async def test_starlette_lifespan_state_streaming_background_and_threads() -> None:
    async with (
        open_server(starlette_app.app) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        home = await client.get("/")
        assert home.json() == {"greeting": "hello", "path": "/"}

        chunks = []
        async with client.stream("GET", "/stream?n=4") as response:
            assert response.headers.get("transfer-encoding") == "chunked"
            async for chunk in response.aiter_text():
                chunks.append(chunk)
        assert "".join(chunks) == "0\n1\n2\n3\n"

        assert (await client.get("/background")).text == "accepted"
        assert (await client.get("/tasks")).json() == ["ran"]

        thread = (await client.get("/sync")).text
        assert thread != "MainThread"

        body = b"x" * 300_000
        echoed = await client.post("/echo", content=body)
        assert echoed.headers["x-length"] == str(len(body))


async def test_fastapi_endpoints() -> None:
    fastapi_app.events.clear()
    async with (
        open_server(fastapi_app.app) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert fastapi_app.events == ["startup"]
        assert (await client.get("/items/1")).json() == {"id": 1, "name": "apple"}
        created = await client.post("/items", json={"name": "pear", "price": 1.5})
        assert created.json() == {"name": "pear", "price": 1.5}
        invalid = await client.post("/items", json={"name": "pear"})
        assert invalid.status_code == 422
        assert (await client.get("/sync")).json()["thread"] != "MainThread"
        assert (await client.post("/notify")).json() == {"status": "queued"}
        # The background task runs after the response is written but before the server
        # reads the next request on this connection.
        await client.get("/items/1")
        assert "notified" in fastapi_app.events
        streamed = await client.get("/stream")
        assert streamed.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert fastapi_app.events[-1] == "shutdown"


# Starlette leaves the body generator un-closed when send() fails; trio's finalizer warns.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_fastapi_stream_stops_when_the_client_leaves(caplog: Any) -> None:
    async with open_server(fastapi_app.app) as server:
        sock = trio.socket.socket()
        await sock.connect((server.host, server.port))
        await sock.send(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"tick" in await sock.recv(4096)
        sock.close()
        # Once the client is gone, send() raises and the stream ends: no more ticks.
        with trio.fail_after(5):
            while True:
                before = fastapi_app.ticks_sent[0]
                await trio.sleep(0.1)
                if fastapi_app.ticks_sent[0] == before:
                    break
    # A disconnect is not an application error.
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_sse_events_arrive_one_by_one() -> None:
    async with open_server(streaming.app) as server, httpx.AsyncClient() as client:
        start = trio.current_time()
        async with client.stream("GET", server.url + "/?n=3") as response:
            assert response.headers["content-type"] == "text/event-stream"
            arrivals = []
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append((line, trio.current_time() - start))
    assert [a[0] for a in arrivals] == ["data: 0", "data: 1", "data: 2"]
    # The first event came before the stream ended (not buffered until the end).
    assert arrivals[0][1] < arrivals[-1][1]

"""``loop = "asyncio"``: Starlette's ``is_disconnected()`` (the SSE and long-poll loops of trio
mode's tests), per-request contextvars, and the in-memory transport running a FastAPI +
asyncpg app."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from fastapi import FastAPI, Request

from trioserve.server.asyncio_bridge import app_runner
from trioserve.testing import open_memory_client, open_server

from ..rawhttp import read_until_close
from ..server.test_request_disconnect import _read_until, starlette_polling_app
from .services import Postgres


# -- is_disconnected() ------------------------------------------------------------------------
class CrossThreadEvent:
    """A trio.Event the app sets from the asyncio loop's thread."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.token = trio.lowlevel.current_trio_token()

    def set(self) -> None:
        self.token.run_sync_soon(self.event.set)

    async def wait(self) -> None:
        await self.event.wait()


@pytest.mark.parametrize("path", [b"/sse", b"/longpoll"])
async def test_starlette_is_disconnected_sees_the_client_leave(path: bytes) -> None:
    """The SSE loop never writes after its first event: only is_disconnected() ends it."""
    ended = CrossThreadEvent()
    seen: list[str] = []
    app = starlette_polling_app(ended, seen)  # type: ignore[arg-type]
    async with open_server(app, loop="asyncio", raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        if path == b"/sse":
            await _read_until(stream, b"data: hello")
        else:
            await trio.sleep(0.1)  # the loop is polling
        await stream.aclose()
        with trio.fail_after(5):
            await ended.wait()
    assert len(seen) == 1


async def test_is_disconnected_is_false_while_the_client_is_there() -> None:
    ended = CrossThreadEvent()
    seen: list[str] = []
    app = starlette_polling_app(ended, seen)  # type: ignore[arg-type]
    async with open_server(app, loop="asyncio", raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
            await _read_until(stream, b"data: hello")
            await trio.sleep(0.3)
            assert not seen  # still polling: the client is connected


async def test_drain_ends_a_streaming_receive_cleanly_in_asyncio_mode() -> None:
    """The drain's http.disconnect reaches the asyncio app, whose last send still goes out
    (a send after http.disconnect waits for trio's answer, and trio's answer is "sent")."""
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        got.append(await receive())  # pending until the client leaves, or the drain
        await send({"type": "http.response.body", "body": b"data: bye\n\n"})

    answer = b""

    async def read_rest(stream: trio.SocketStream) -> None:
        nonlocal answer
        async with stream:
            answer = await read_until_close(stream)

    async with trio.open_nursery() as nursery:
        async with open_server(app, loop="asyncio", graceful_timeout=5) as server:
            stream = await trio.open_tcp_stream(server.host, server.port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await _read_until(stream, b"data: one")
            nursery.start_soon(read_rest, stream)
            start = trio.current_time()
        assert trio.current_time() - start < 3  # not held until graceful_timeout
    assert got == [{"type": "http.disconnect"}]
    assert answer.endswith(b"data: bye\n\n\r\n0\r\n\r\n")


# -- contextvars ------------------------------------------------------------------------------
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
STARTED_WITH: contextvars.ContextVar[str] = contextvars.ContextVar("started_with")


def make_context_app() -> Any:
    """Raw ASGI: reports what the request saw, then sets a ContextVar for the next one."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen = f"{REQUEST_ID.get('unset')} {STARTED_WITH.get('unset')}"
        REQUEST_ID.set(scope["path"])
        STARTED_WITH.set("changed by a request")
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": seen.encode()})

    return app


@pytest.mark.parametrize("reset", [False, True])
async def test_each_request_gets_its_own_context(reset: bool) -> None:
    """Two requests on one keep-alive connection: the second does not see the first's
    ContextVar. Without reset_contextvars, a value set before the loop started is seen."""
    token = STARTED_WITH.set("set before serving")
    try:
        config: dict[str, Any] = {"loop": "asyncio"}
        if reset:
            config["reset_contextvars"] = True
        async with (
            open_server(make_context_app(), **config) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            first = (await client.get("/first")).text
            second = (await client.get("/second")).text
    finally:
        STARTED_WITH.reset(token)
    started = "unset" if reset else "set before serving"
    assert first == second == f"unset {started}"


@pytest.mark.parametrize("reset", [False, True])
async def test_in_memory_requests_get_their_own_context(reset: bool) -> None:
    token = STARTED_WITH.set("set before serving")
    try:
        app = make_context_app()
        async with open_memory_client(app, loop="asyncio", reset_contextvars=reset) as client:
            first = (await client.get("/first")).text
            second = (await client.get("/second")).text
    finally:
        STARTED_WITH.reset(token)
    started = "unset" if reset else "set before serving"
    assert first == second == f"unset {started}"


async def test_reset_contextvars_gives_each_request_an_empty_context() -> None:
    """The bridge's own switch (what config's reset_contextvars turns on), over a socket."""
    token = STARTED_WITH.set("set before serving")
    try:
        bridged, app_loop = app_runner(make_context_app(), "asyncio", reset_contextvars=True)
        async with (
            app_loop,
            open_server(bridged) as server,  # trio mode: the app is already bridged
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            first = (await client.get("/first")).text
            second = (await client.get("/second")).text
    finally:
        STARTED_WITH.reset(token)
    assert first == second == "unset unset"


# -- the in-memory transport and the pytest fixture -------------------------------------------
def make_pool_app(dsn: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            yield {"pool": pool}
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/double/{n}")
    async def double(n: int, request: Request) -> dict[str, Any]:
        return {"value": await request.state.pool.fetchval("SELECT $1::int * 2", n)}

    return app


async def test_in_memory_client_runs_a_fastapi_asyncpg_app(postgres: Postgres) -> None:
    async with open_memory_client(make_pool_app(postgres.dsn), loop="asyncio") as client:
        for n in range(3):  # the pool made at startup serves every request
            assert (await client.get(f"/double/{n}")).json() == {"value": 2 * n}


async def test_pytest_fixture_runs_a_fastapi_asyncpg_app(
    postgres: Postgres, trioserve_client: Any
) -> None:
    client = await trioserve_client(make_pool_app(postgres.dsn), loop="asyncio")
    assert (await client.get("/double/21")).json() == {"value": 42}
    assert os.getpid()  # in this process


# -- HTTP/2 and bodies --------------------------------------------------------------------------
async def test_http2_requests_with_bodies_in_asyncio_mode() -> None:
    """HTTP/2 streams (a first receive() that may have to wait) and chunked HTTP/1.1 bodies."""
    app = FastAPI()

    @app.post("/size")
    async def size(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            await trio.sleep(0.01)
            yield b"x" * 10_000

    results: list[httpx.Response] = []
    async with open_server(app, loop="asyncio") as server:
        async with httpx.AsyncClient(http1=False, http2=True) as client:

            async def one(i: int) -> None:
                url = server.url + "/size"
                results.append(await client.post(url, content=b"q" * i * 1000))

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)
        async with httpx.AsyncClient() as client:
            chunked = await client.post(server.url + "/size", content=chunks())
    assert {r.http_version for r in results} == {"HTTP/2"}
    assert sorted(r.json()["size"] for r in results) == [i * 1000 for i in range(20)]
    assert chunked.json() == {"size": 50_000}


async def test_many_concurrent_requests_cross_correctly() -> None:
    """Crossings of many calls at once (wakes shared between them): every answer is right."""
    app = FastAPI()

    @app.post("/echo/{n}")
    async def echo(n: int, request: Request) -> dict[str, Any]:
        return {"n": n, "size": len(await request.body())}

    @app.get("/get/{n}")
    async def get(n: int) -> dict[str, int]:
        return {"n": n}

    answers: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=20)
    async with (
        open_server(app, loop="asyncio") as server,
        httpx.AsyncClient(base_url=server.url, limits=limits) as client,
    ):

        async def one(n: int) -> None:
            if n % 2:
                answers.append((await client.post(f"/echo/{n}", content=b"b" * n)).json())
            else:
                answers.append((await client.get(f"/get/{n}")).json())

        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(one, n)
    assert sorted(a["n"] for a in answers) == list(range(300))
    assert all(a["size"] == a["n"] for a in answers if a["n"] % 2)

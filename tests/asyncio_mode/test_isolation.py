"""``loop = "asyncio"``: per-request contextvars, and the in-memory transport running a
FastAPI + asyncpg app. Starlette's ``is_disconnected()`` (SSE and long-poll) and the drain's
http.disconnect are tested in both loops by tests/server/test_request_disconnect.py."""

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

from .services import Postgres

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

"""A FastAPI app built the way real ones are: asyncio-only clients made once, in lifespan.

asyncpg (a pool, queries, a transaction), SQLAlchemy's asyncio engine, redis.asyncio (GET/SET
and pub/sub fanned out to WebSockets) and an aiohttp client session calling a second server.
Where they are comes from the environment (``SVC_PG_DSN``, ``SVC_SA_URL``, ``SVC_REDIS_URL``,
``SVC_UPSTREAM_URL``), so worker processes find them too. It runs only with ``--loop
asyncio``; under trio every route fails with "no running event loop".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI, Request, WebSocket
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

# Set at lifespan shutdown: in-process tests check that every client was closed.
CLOSED: list[str] = []


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    pool = await asyncpg.create_pool(os.environ["SVC_PG_DSN"], min_size=1, max_size=4)
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS items (tag text, n int);"
        "CREATE TABLE IF NOT EXISTS progress (tag text, step text)"
    )
    engine = create_async_engine(os.environ["SVC_SA_URL"], pool_size=2)
    redis = aioredis.Redis.from_url(os.environ["SVC_REDIS_URL"])
    http = aiohttp.ClientSession()
    CLOSED.clear()
    try:
        yield {"pool": pool, "engine": engine, "redis": redis, "http": http}
    finally:
        # In asyncio context, on the loop the pools were made on.
        await http.close()
        await redis.aclose()
        await engine.dispose()
        await pool.close()
        CLOSED.extend(["aiohttp", "redis", "sqlalchemy", "asyncpg"])
        print(f"svc_app {os.getpid()}: clients closed", file=sys.stderr, flush=True)


app = FastAPI(lifespan=lifespan)


@app.get("/pg")
async def pg(request: Request) -> dict[str, Any]:
    pool: asyncpg.Pool = request.state.pool
    value = await pool.fetchval("SELECT $1::int + 1", 41)
    return {"value": value, "pid": os.getpid()}


@app.post("/pg/tx/{tag}")
async def pg_tx(tag: str, request: Request) -> dict[str, Any]:
    """One row per body chunk, in one transaction: committed only if the body completes."""
    pool: asyncpg.Pool = request.state.pool
    rows = 0
    try:
        async with pool.acquire() as conn, conn.transaction():
            async for chunk in request.stream():
                if chunk:
                    rows += 1
                    await conn.execute("INSERT INTO items VALUES ($1, $2)", tag, rows)
                    # Outside the transaction: the test sees that the insert happened.
                    await pool.execute("INSERT INTO progress VALUES ($1, $2)", tag, f"row {rows}")
    except BaseException as exc:
        await pool.execute("INSERT INTO progress VALUES ($1, $2)", tag, type(exc).__name__)
        raise
    return {"rows": rows}


@app.get("/pg/state/{tag}")
async def pg_state(tag: str, request: Request) -> dict[str, Any]:
    pool: asyncpg.Pool = request.state.pool
    count = await pool.fetchval("SELECT count(*) FROM items WHERE tag = $1", tag)
    steps = await pool.fetch("SELECT step FROM progress WHERE tag = $1", tag)
    return {"committed": count, "steps": [row["step"] for row in steps]}


@app.get("/sqlalchemy")
async def sqlalchemy(request: Request) -> dict[str, Any]:
    async with request.state.engine.connect() as conn:
        result = await conn.execute(text("SELECT :a * 6 AS v"), {"a": 7})
        version = (await conn.execute(text("SELECT current_setting('server_version_num')"))).one()
    return {"value": result.scalar_one(), "server": int(version[0]) // 10000}


@app.put("/redis/{key}")
async def redis_set(key: str, request: Request) -> dict[str, Any]:
    await request.state.redis.set(key, await request.body())
    return {"ok": True}


@app.get("/redis/{key}")
async def redis_get(key: str, request: Request) -> dict[str, Any]:
    value = await request.state.redis.get(key)
    return {"value": None if value is None else value.decode()}


@app.post("/publish/{channel}")
async def publish(channel: str, request: Request) -> dict[str, Any]:
    receivers = await request.state.redis.publish(channel, await request.body())
    return {"receivers": receivers}


@app.websocket("/subscribe/{channel}")
async def subscribe(websocket: WebSocket, channel: str) -> None:
    """Fan a Redis channel out to this WebSocket until the client leaves."""
    await websocket.accept()
    pubsub = websocket.state.redis.pubsub()
    await pubsub.subscribe(channel)

    async def forward() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                await websocket.send_text(message["data"].decode())

    forwarder = asyncio.create_task(forward())
    await websocket.send_text("subscribed")
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarder
        await pubsub.aclose()


@app.get("/upstream")
async def upstream(request: Request) -> dict[str, Any]:
    http: aiohttp.ClientSession = request.state.http
    async with http.get(os.environ["SVC_UPSTREAM_URL"]) as response:
        return {"status": response.status, "body": await response.text()}

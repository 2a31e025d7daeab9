"""The app of the asyncio-mode benchmark (``benchmarks/asyncio_mode.py``): FastAPI, three routes.

* ``GET /json``: a small JSON document, no I/O - what the bridge itself costs per request.
* ``GET /db``: one asyncpg query on a pool made in lifespan (``BENCH_PG_DSN``). asyncpg needs
  asyncio, so the pool exists only when the app runs on asyncio (Uvicorn, trioserve
  ``--loop asyncio``); under plain trio the route answers 503.
* ``GET /redis``: one redis.asyncio GET on a client made in lifespan (``BENCH_REDIS_URL``),
  the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import sniffio
from fastapi import FastAPI, Request, Response


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    dsn, redis_url = os.environ.get("BENCH_PG_DSN"), os.environ.get("BENCH_REDIS_URL")
    if sniffio.current_async_library() != "asyncio":
        yield {"pool": None, "redis": None}
        return
    async with contextlib.AsyncExitStack() as stack:
        pool = redis = None
        if dsn:
            import asyncpg

            pool = await asyncpg.create_pool(dsn, min_size=4, max_size=8)
            stack.push_async_callback(pool.close)
        if redis_url:
            import redis.asyncio as aioredis

            redis = aioredis.Redis.from_url(redis_url, max_connections=64)
            await redis.set("bench", "hello")
            stack.push_async_callback(redis.aclose)
        yield {"pool": pool, "redis": redis}


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/json")
async def json_route() -> dict[str, Any]:
    return {"message": "hello", "items": [1, 2, 3], "ok": True}


@app.get("/db", response_model=None)
async def db_route(request: Request) -> dict[str, Any] | Response:
    pool = request.state.pool
    if pool is None:
        return Response("asyncpg needs --loop asyncio\n", status_code=503)
    value = await pool.fetchval("SELECT $1::int * 2", 21)
    return {"value": value}


@app.get("/redis", response_model=None)
async def redis_route(request: Request) -> dict[str, Any] | Response:
    redis = request.state.redis
    if redis is None:
        return Response("redis.asyncio needs --loop asyncio\n", status_code=503)
    return {"value": (await redis.get("bench")).decode()}

"""A Starlette app on trioserve: ``trioserve examples.starlette_app:app``.

Shows lifespan state, a streaming response, a background task and a sync endpoint (run in
anyio's worker threads on the trio backend).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # Yielded state is copied (shallowly) into every request's scope by the server.
    yield {"greeting": "hello", "done_tasks": []}


async def homepage(request: Request) -> JSONResponse:
    return JSONResponse({"greeting": request.state.greeting, "path": request.url.path})


async def stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "3"))

    async def numbers() -> AsyncIterator[bytes]:
        for i in range(count):
            yield f"{i}\n".encode()
            await anyio.sleep(0.01)

    return StreamingResponse(numbers(), media_type="text/plain")


async def with_background(request: Request) -> PlainTextResponse:
    done: list[str] = request.state.done_tasks

    async def record() -> None:
        done.append("ran")

    return PlainTextResponse("accepted", background=BackgroundTask(record))


async def tasks(request: Request) -> JSONResponse:
    return JSONResponse(request.state.done_tasks)


def sync_endpoint(request: Request) -> PlainTextResponse:
    # Starlette runs plain functions in a worker thread, off the event loop's thread.
    return PlainTextResponse(threading.current_thread().name)


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(body.decode(), headers={"x-length": str(len(body))})


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/stream", stream),
        Route("/background", with_background),
        Route("/tasks", tasks),
        Route("/sync", sync_endpoint),
        Route("/echo", echo, methods=["POST"]),
    ],
    lifespan=lifespan,
)

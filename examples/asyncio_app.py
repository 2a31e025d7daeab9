"""An app written for asyncio: ``trioserve examples.asyncio_app:app --loop asyncio``.

The pattern asyncio-only libraries use (a pool or client made in lifespan, background tasks
on the loop, timeouts), shown with the standard library only: lifespan starts a
worker task that takes jobs from an ``asyncio.Queue``; requests submit jobs and wait for
their results. Without ``--loop asyncio`` it fails at startup, and the log says to use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

Job = tuple[str, "asyncio.Future[str]"]


async def worker(queue: asyncio.Queue[Job]) -> None:
    while True:
        text, result = await queue.get()
        await asyncio.sleep(0.001)  # stands in for a call to an asyncio-only library
        if not result.done():
            result.set_result(text.upper())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    queue: asyncio.Queue[Job] = asyncio.Queue()
    task = asyncio.create_task(worker(queue), name="job-worker")  # needs a running loop
    try:
        yield {"queue": queue}
    finally:  # shutdown runs on the same loop: the worker is stopped, not leaked
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


app = FastAPI(lifespan=lifespan)


@app.post("/upper")
async def upper(text: str, request: Request) -> dict[str, str]:
    result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    await request.state.queue.put((text, result))
    try:
        return {"result": await asyncio.wait_for(result, 5)}
    except asyncio.TimeoutError:
        raise HTTPException(504, "the worker did not answer in time") from None

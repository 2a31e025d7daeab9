"""A FastAPI app on trioserve: ``trioserve examples.fastapi_app:app``.

Streaming, ``BackgroundTasks``, a ``def`` endpoint run in the thread pool, and an endpoint
that notices the client going away (its work is cancelled on disconnect).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

events: list[str] = []
ticks_sent = [0]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    events.append("startup")
    yield {"db": {"items": {1: "apple"}}}
    events.append("shutdown")


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request) -> dict[str, Any]:
    return {"id": item_id, "name": request.state.db["items"].get(item_id)}


@app.post("/items")
async def create_item(item: Item) -> dict[str, Any]:
    return {"name": item.name, "price": item.price}


@app.get("/sync")
def sync_endpoint() -> dict[str, str]:
    return {"thread": threading.current_thread().name}


@app.post("/notify")
async def notify(background: BackgroundTasks) -> dict[str, str]:
    background.add_task(events.append, "notified")
    return {"status": "queued"}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"chunk {i}\n".encode()
            await anyio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/forever")
async def forever() -> StreamingResponse:
    """Streams until the client leaves; Starlette cancels the generator on disconnect."""

    async def ticks() -> AsyncIterator[bytes]:
        while True:
            ticks_sent[0] += 1
            yield b"tick\n"
            await anyio.sleep(0.01)

    return StreamingResponse(ticks(), media_type="text/plain")

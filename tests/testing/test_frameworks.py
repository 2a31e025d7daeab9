"""FastAPI and Starlette apps give the same results live and in memory (HTTP + WebSocket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from trioserve.testing import WebSocketClosed, WebSocketDenied, open_server, ws_connect
from trioserve.testing.memory import InMemoryTransport


async def ws_echo(websocket: WebSocket) -> None:
    """The same WebSocket handler on both frameworks: echo JSON, deny on ?deny, close on "bye"."""
    if websocket.query_params.get("deny"):
        await websocket.send_denial_response(PlainTextResponse("go away", status_code=401))
        return
    await websocket.accept(subprotocol="v1" if "v1" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            message = await websocket.receive_json()
            if message == "bye":
                await websocket.close(code=4000, reason="asked to")
                return
            await websocket.send_json({"echo": message, "db": websocket.state.db})
    except WebSocketDisconnect:
        pass


def make_fastapi_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"db": "connected", "hits": []}

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> dict[str, Any]:
        request.state.hits.append(item_id)
        return {"id": item_id, "db": request.state.db, "hits": len(request.state.hits)}

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse((await request.body()).decode()[::-1])

    @app.get("/events")
    async def events() -> StreamingResponse:
        async def gen() -> AsyncIterator[str]:
            for i in range(3):
                yield f"data: {i}\n\n"
                await anyio.sleep(0.01)

        return StreamingResponse(gen(), media_type="text/event-stream")

    app.add_api_websocket_route("/ws", ws_echo)

    return app


def make_starlette_app() -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"db": "connected", "hits": []}

    async def item(request: Request) -> JSONResponse:
        item_id = int(request.path_params["item_id"])
        request.state.hits.append(item_id)
        return JSONResponse(
            {"id": item_id, "db": request.state.db, "hits": len(request.state.hits)}
        )

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse((await request.body()).decode()[::-1])

    async def events(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[str]:
            for i in range(3):
                yield f"data: {i}\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/echo", echo, methods=["POST"]),
            Route("/events", events),
            WebSocketRoute("/ws", ws_echo),
        ],
        lifespan=lifespan,
    )


@asynccontextmanager
async def serve(app: Any, mode: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An httpx client and a ws_connect target for ``app``, live or in memory."""
    if mode == "live":
        async with open_server(app) as server, httpx.AsyncClient(base_url=server.url) as client:
            yield client, server
    else:
        transport = InMemoryTransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, client


async def scenario(app: Any, mode: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with serve(app, mode) as (client, target):
        results["items"] = [(await client.get(f"/items/{i}")).json() for i in (1, 2)]
        results["missing"] = (await client.get("/nope")).status_code
        echoed = await client.post("/echo", content=b"abc" * 1000)
        results["echo"] = (echoed.status_code, echoed.text[:6], len(echoed.text))
        async with client.stream("GET", "/events") as response:
            results["sse_type"] = response.headers["content-type"]
            results["sse"] = [line async for line in response.aiter_lines() if line]
        async with ws_connect(target, "/ws", subprotocols=["v1"]) as ws:
            results["subprotocol"] = ws.subprotocol
            await ws.send_json({"n": 1})
            results["ws_echo"] = await ws.receive_json()
            await ws.send_json("bye")
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            results["ws_close"] = (closed.value.code, closed.value.reason)
        with pytest.raises(WebSocketDenied) as denied:
            async with ws_connect(target, "/ws?deny=1"):
                pass  # pragma: no cover
        results["ws_denied"] = (denied.value.status_code, denied.value.body)
        with pytest.raises(WebSocketDenied) as no_route:
            async with ws_connect(target, "/missing"):
                pass  # pragma: no cover
        results["ws_no_route"] = no_route.value.status_code
    return results


EXPECTED = {
    "items": [
        {"id": 1, "db": "connected", "hits": 1},
        {"id": 2, "db": "connected", "hits": 2},
    ],
    "missing": 404,
    "echo": (200, "cbacba", 3000),
    "sse_type": "text/event-stream; charset=utf-8",
    "sse": ["data: 0", "data: 1", "data: 2"],
    "subprotocol": "v1",
    "ws_echo": {"echo": {"n": 1}, "db": "connected"},
    "ws_close": (4000, "asked to"),
    "ws_denied": (401, b"go away"),
    "ws_no_route": 403,
}


@pytest.mark.parametrize("factory", [make_fastapi_app, make_starlette_app])
async def test_live_and_in_memory_agree(factory: Any) -> None:
    live = await scenario(factory(), "live")
    memory = await scenario(factory(), "memory")
    assert live == EXPECTED
    assert memory == live


async def test_websocket_app_exception_is_raised_in_memory() -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def broken(websocket: WebSocket) -> None:
        await websocket.accept()
        raise LookupError("websocket handler broke")

    with pytest.raises(LookupError, match="handler broke"):
        async with (
            httpx.AsyncClient(transport=InMemoryTransport(app), base_url="http://t") as client,
            ws_connect(client, "/ws") as ws,
        ):
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert closed.value.code == 1011


@pytest.mark.parametrize("mode", ["live", "memory"])
async def test_an_uncaught_websocket_disconnect_is_not_an_app_failure(mode: str) -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def naive(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:  # the common pattern: WebSocketDisconnect escapes when the client leaves
            await websocket.send_text(await websocket.receive_text())

    async with serve(app, mode) as (_, target), ws_connect(target, "/ws") as ws:
        await ws.send_text("ping")
        assert await ws.receive_text() == "ping"

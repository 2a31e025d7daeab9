"""The one ASGI app every server in the benchmark serves (``bench_apps:app``).

Raw ASGI, so that what is measured is the server and not a framework, except ``/json``:

* ``GET /`` (any path not below): ``Hello, world!``, 13 bytes, the hello and close scenarios;
* ``GET /big``: a 1 MiB body, built once at import;
* ``POST /echo``: reads the whole request body and sends it back (64 KiB in the benchmark);
* ``GET /json``: a FastAPI route returning a small JSON document (FastAPI runs on whichever
  event loop the server gives it: trio under trioserve and Hypercorn-trio, asyncio under
  Uvicorn and Granian);
* WebSocket: accept, then echo every message back;
* lifespan: acknowledged, so no server logs a lifespan error.

The dispatch on the path is one comparison, the same for every server.
"""

from __future__ import annotations

from typing import Any

try:
    from fastapi import FastAPI
except ImportError:  # pragma: no cover - the json scenario then reports 500s
    FastAPI = None  # type: ignore[assignment,misc]

HELLO = b"Hello, world!"
BIG = b"x" * (1 << 20)
TEXT = [(b"content-type", b"text/plain")]
ECHO_HEADERS = [(b"content-type", b"application/octet-stream")]

if FastAPI is not None:
    fastapi_app: Any = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @fastapi_app.get("/json")
    async def json_endpoint() -> dict[str, Any]:
        return {"message": "Hello, world!", "items": [1, 2, 3], "ok": True}

else:  # pragma: no cover
    fastapi_app = None


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(send: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _websocket(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        else:
            return


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        kind = (await receive())["type"]
        await send({"type": kind + ".complete"})
        if kind == "lifespan.shutdown":
            return


async def app(scope: Any, receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path == "/json" and fastapi_app is not None:
            await fastapi_app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        if path == "/echo":
            await _respond(send, body, ECHO_HEADERS)
        else:
            await _respond(send, BIG if path == "/big" else HELLO, TEXT)
    elif kind == "websocket":
        await _websocket(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)

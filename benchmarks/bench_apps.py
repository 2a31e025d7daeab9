"""The one ASGI app every server in the benchmark serves (``bench_apps:app``).

It is the shared harness's raw app (``apps.py`` in ../shared/tools/bench: ``/`` hello,
``/big`` 1 MiB, WebSocket echo, lifespan) plus the two scenarios that harness lacks:

* ``POST /echo``: reads the whole request body and sends it back (64 KiB in the benchmark);
* ``GET /json``: a FastAPI route returning a small JSON document (FastAPI runs on whichever
  event loop the server gives it: trio under trioserve and Hypercorn-trio, asyncio under
  Uvicorn).

The dispatch on the path is one comparison, the same for every server.
"""

from __future__ import annotations

from typing import Any

from apps import app as shared_app  # type: ignore[import-not-found]

try:
    from fastapi import FastAPI
except ImportError:  # pragma: no cover - the json scenario then reports 500s
    FastAPI = None  # type: ignore[assignment,misc]


ECHO_HEADERS = [(b"content-type", b"application/octet-stream")]

if FastAPI is not None:
    fastapi_app: Any = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @fastapi_app.get("/json")
    async def json_endpoint() -> dict[str, Any]:
        return {"message": "Hello, world!", "items": [1, 2, 3], "ok": True}

else:  # pragma: no cover
    fastapi_app = None


async def _echo(receive: Any, send: Any) -> None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    headers = [*ECHO_HEADERS, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        path = scope["path"]
        if path == "/echo":
            await _echo(receive, send)
            return
        if path == "/json" and fastapi_app is not None:
            await fastapi_app(scope, receive, send)
            return
    await shared_app(scope, receive, send)

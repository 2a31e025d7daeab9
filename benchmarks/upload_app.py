"""The app of the uploads scenario (``upload_app:app``), written as a FastAPI user would.

* ``POST /upload``: one ``UploadFile`` form field (Starlette's multipart parser, the part
  spooled to a temporary file), answered with its size;
* ``POST /stream``: the body read with ``request.stream()``, answered with its size and the
  number of pieces the app was handed;
* ``POST /raw``: the same body read by a raw ASGI app (no framework), for reference.

Every answer is small JSON; the client checks the size so a truncated upload is not
counted as a fast one.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, UploadFile

api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@api.post("/upload")
async def upload(file: UploadFile) -> dict[str, Any]:
    return {"size": file.size, "name": file.filename}


@api.post("/stream")
async def stream(request: Request) -> dict[str, Any]:
    size = pieces = 0
    async for chunk in request.stream():
        size += len(chunk)
        pieces += 1
    return {"size": size, "pieces": pieces}


async def _raw(receive: Any, send: Any) -> None:
    size = pieces = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        pieces += 1
        more = message.get("more_body", False)
    body = json.dumps({"size": size, "pieces": pieces}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/raw":
        await _raw(receive, send)
    else:
        await api(scope, receive, send)

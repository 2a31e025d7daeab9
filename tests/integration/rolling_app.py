"""The app of the rolling-deploy test: who answered, a streaming response, a WebSocket echo."""

from __future__ import annotations

import os
from typing import Any

import trio

HOST = os.environ.get("ROLLING_HOST", "?")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "text": message.get("text") or ""})
    who = f"{HOST} {os.getpid()}".encode()
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(10):
            await send({"type": "http.response.body", "body": b"%d " % i, "more_body": True})
            await trio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"end " + who})
        return
    headers = [(b"content-length", b"%d" % len(who))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": who})

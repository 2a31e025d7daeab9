"""Apps the fault tests run in ``python -m trioserve`` subprocesses (tests.faults.apps:NAME)."""

from __future__ import annotations

import os
from typing import Any

import trio


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 with the worker's pid (/big: 1 MiB); /slow takes 0.2 s (a drain finds it in flight)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await trio.sleep(0.2)
    body = b"x" * (1 << 20) if scope["path"] == "/big" else b"%d" % os.getpid()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """HTTP: the body's length back (/noread: never reads it, answers after 30 s);
    WebSocket: every message echoed."""
    if scope["type"] == "http":
        if scope["path"] == "/noread":
            await trio.sleep(30)
        return await hello(scope, receive, send)
    if scope["type"] != "websocket":
        return None
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def ws_sender(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """WebSocket: accept, then only send (a tick a second) and never receive(): the server
    reads ahead for it (the permessage-deflate bomb's target). HTTP: as hello."""
    if scope["type"] == "http":
        return await hello(scope, receive, send)
    if scope["type"] != "websocket":
        return None
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        await send({"type": "websocket.send", "text": "tick"})
        await trio.sleep(1.0)

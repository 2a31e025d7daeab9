"""Raw ASGI server-sent events: ``trioserve examples.streaming:app``.

Each event is sent as soon as it exists (no buffering), and the stream stops when the
client goes away: ``send()`` raises an ``OSError`` then, and ``receive()`` says
``http.disconnect``.
"""

from __future__ import annotations

from typing import Any

import trio


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    count = 5
    for part in scope["query_string"].split(b"&"):
        if part.startswith(b"n="):
            count = int(part[2:])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    for i in range(count):
        await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await trio.sleep(0.05)
    await send({"type": "http.response.body", "body": b""})

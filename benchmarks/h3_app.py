"""The app both servers run in benchmarks/h3.py: ``/`` hello, ``/N`` an N-byte body.

A body is sent in 256 KiB pieces, so a server's send-side backpressure is exercised.
"""

from __future__ import annotations

from typing import Any

HELLO = b"Hello, world!"
PIECE = b"x" * (256 * 1024)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # Hypercorn waits for startup.complete
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/":
        headers = [(b"content-length", b"%d" % len(HELLO))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": HELLO})
        return
    size = int(path[1:]) if path[1:].isdigit() else 0
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % size)],
        }
    )
    while size > 0:
        piece = PIECE if size >= len(PIECE) else PIECE[:size]
        size -= len(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": size > 0})

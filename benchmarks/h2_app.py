"""The app both servers serve in ``h2bench.py``: ``/`` hello, ``/big`` 1 MiB."""

from __future__ import annotations

from typing import Any

HELLO = b"Hello, world!"
BIG = b"x" * (1024 * 1024)
_HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
_BIG_HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"1048576")]


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    big = scope["path"] == "/big"
    headers = _BIG_HEADERS if big else _HELLO_HEADERS
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BIG if big else HELLO})

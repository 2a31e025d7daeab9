"""The raw ASGI app the conformance runners talk to.

HTTP: every request is read to its end and answered ``200 ok`` with ``x-body-length`` set to
the number of body bytes the server delivered, so the corpus runner can tell whether the
server framed the body it expected (a smuggling bug shows up as a wrong length, not only as a
wrong status). WebSocket: accept, then send every message back unchanged, which is what
Autobahn's fuzzing client expects of the server under test. Lifespan is acknowledged so no
server logs a lifespan error.

No framework on purpose: what the runners measure is the server, not an app library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    handler = {"http": _http, "websocket": _websocket, "lifespan": _lifespan}.get(scope["type"])
    if handler is not None:
        await handler(receive, send)


async def _http(receive: Receive, send: Send) -> None:
    received = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        more = bool(message.get("more_body", False))
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"2"),
        (b"x-body-length", str(received).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def _websocket(receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        kind = (await receive())["type"]
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

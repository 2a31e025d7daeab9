"""Small raw ASGI apps the testing-helper tests share."""

from __future__ import annotations

import json
from typing import Any

import trio


class Probe:
    """A raw ASGI app that records what it saw, with a few endpoints to poke at the server."""

    def __init__(self) -> None:
        self.startups = 0
        self.shutdowns = 0
        self.scopes: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.chunk_seen = trio.Event()
        self.release = trio.Event()
        self.disconnected = trio.Event()
        self.disconnected_at: float | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.startups += 1
                    scope["state"]["greeting"] = "hello"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.shutdowns += 1
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.scopes.append(scope)
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("the app broke")
        if path == "/boom-late":
            await _start(send, 200)
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("the app broke mid-response")
        if path == "/sse":
            await _start(send, 200, b"text/event-stream")
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            await self.release.wait()  # blocked before the second event until the test says
            await send({"type": "http.response.body", "body": b"data: two\n\n"})
            return
        if path == "/forever":
            # Streams until the client leaves; the disconnect arrives through receive().
            await _start(send, 200)
            async with trio.open_nursery() as nursery:

                async def listen() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    self.disconnected_at = trio.current_time()
                    self.disconnected.set()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(listen)
                while True:
                    await send(
                        {"type": "http.response.body", "body": b"tick\n", "more_body": True}
                    )
                    await trio.sleep(0.01)
            return
        if path == "/upload":
            total = 0
            while True:
                message = await receive()
                self.received.append(message)
                if message["type"] == "http.disconnect":
                    self.disconnected_at = trio.current_time()
                    self.disconnected.set()
                    return
                total += len(message.get("body", b""))
                self.chunk_seen.set()
                if not message.get("more_body"):
                    break
            body = json.dumps({"bytes": total, "messages": len(self.received)}).encode()
            await _start(send, 200, b"application/json")
            await send({"type": "http.response.body", "body": body})
            return
        if path == "/sleep":
            await trio.sleep(float(scope["query_string"] or b"1"))
        body = json.dumps(
            {
                "path": path,
                "state": dict(scope.get("state", {})),
                "client": scope["client"],
                "server": scope["server"],
            }
        ).encode()
        await _start(send, 200, b"application/json")
        await send({"type": "http.response.body", "body": body})


async def _start(send: Any, status: int, content_type: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )

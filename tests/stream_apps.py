"""The ASGI apps the HTTP/2 and HTTP/3 stream-rule tests serve (tests/server/
test_stream_rules_h2.py, tests/http3/test_stream_rules.py): one app per rule, so the two
versions' tests differ only in their transport."""

from __future__ import annotations

from typing import Any

import trio


class Recorder:
    """Answers 200 with the body it read; records each path and each body message."""

    def __init__(self, pause: float = 0.0) -> None:
        self.paths: list[str] = []
        self.bodies: list[bytes] = []
        self.pause = pause

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        if self.pause:
            await trio.sleep(self.pause)
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            self.bodies.append(message.get("body", b""))
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok " + body})


async def started_then_reads(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Starts its response, then waits for a body that never ends."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] != "/up":
        await send({"type": "http.response.body", "body": b"done"})
        return
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    while (await receive())["type"] == "http.request":
        pass

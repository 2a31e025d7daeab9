"""The app every server in the differential test runs: each path is one edge case."""

from __future__ import annotations

import json
from typing import Any


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def scope_view(scope: dict[str, Any]) -> dict[str, Any]:
    """The parts of a scope every server must agree on (not ports, not extensions)."""
    return {
        "type": scope["type"],
        "asgi": scope.get("asgi", {}).get("version"),
        "http_version": scope["http_version"],
        "method": scope["method"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope["root_path"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "client_host": scope["client"][0] if scope.get("client") else None,
        "server_host": scope["server"][0] if scope.get("server") else None,
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = await read_body(receive) if not path.startswith("/noread") else b""

    async def respond(status: int, data: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/raise-before":
        raise RuntimeError("before the response")
    elif path == "/return-early":
        return
    elif path in ("/204-body", "/304-body"):
        await respond(int(path[1:4]), b"not allowed", [])
    elif path == "/raise-after":
        await respond(200, b"done", [(b"content-length", b"4")])
        raise RuntimeError("after the response")
    elif path == "/cl-short":
        await respond(200, b"12345", [(b"content-length", b"10")])
    elif path == "/start-only":
        await send({"type": "http.response.start", "status": 200, "headers": []})
    elif path == "/ows-header":
        await respond(200, b"ok", [(b"x-padded", b" padded "), (b"content-length", b"2")])
    elif path == "/noread-post":
        await respond(200, b"unread", [(b"content-length", b"6")])
    else:
        view = scope_view(scope)
        view["body_length"] = len(body)
        data = json.dumps(view).encode()
        await respond(
            200,
            data,
            [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))],
        )

"""The one small app every scenario talks to; it writes down what it saw.

The first path segment picks what the app does (``/echo``, ``/raise-before``, ...), so a
scenario names its behaviour in its request. What the app saw is appended to
``Recorder.seen`` as short strings: message types, what ``send()`` raised, scope facts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PATHSEND_BODY = b"sent from a file\n" * 64


class AppBaseError(BaseException):
    """An app's own BaseException: it must fail one request, never the server."""


class Recorder:
    def __init__(self, tmp: Path) -> None:
        self.seen: list[str] = []
        self.release = trio.Event()  # /hold waits for it
        self.held = trio.Event()  # set once /hold is in the app
        self.file = tmp / "pathsend.txt"
        self.file.write_bytes(PATHSEND_BODY)

    def app(self) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
        async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
            if scope["type"] == "websocket":
                await self._websocket(scope["path"], receive, send)
            elif scope["type"] == "http":
                route = scope["path"].rsplit("/", 1)[-1]
                await ROUTES.get(route, _echo)(self, scope, receive, send)

        return app

    async def _websocket(self, path: str, receive: Receive, send: Send) -> None:
        self.seen.append((await receive())["type"])
        if path == "/ws-deny":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        if path == "/ws-raise":
            raise ValueError("contract: a WebSocket app raised")
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.seen.append(f"websocket.disconnect {message.get('code')}")
                return
            self.seen.append(message["type"])

    async def read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None if the app saw ``http.disconnect`` first."""
        body = b""
        while True:
            message = await receive()
            self.seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return None
            body += bytes(message.get("body", b""))
            if not message.get("more_body"):
                return body

    async def try_send(self, send: Send, message: dict[str, Any]) -> bool:
        try:
            await send(message)
        except OSError as exc:
            self.seen.append(f"send raised {type(exc).__name__}")
            return False
        return True


def _start(status: int = 200, **extra: Any) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": [], **extra}


def _body(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": more}


async def _echo(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    body = await rec.read_body(receive)
    if body is not None and await rec.try_send(send, _start()):
        await rec.try_send(send, _body(b"%d" % len(body)))


async def _hold(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    rec.seen.append("held")
    rec.held.set()
    with trio.move_on_after(5):
        await rec.release.wait()
    await _echo(rec, scope, receive, send)


async def _stream(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if not await rec.try_send(send, _start()):
        return
    with trio.move_on_after(5):
        while await rec.try_send(send, _body(b"x" * 4096, more=True)):
            await trio.sleep(0.01)


async def _start_read(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answer first, then read the body: a body deadline can no longer be a 408."""
    await send(_start())
    await send(_body(b"early", more=True))
    if await rec.read_body(receive) is not None:
        await rec.try_send(send, _body(b""))


async def _raise_before(
    rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    raise ValueError("contract: raised before the response start")


async def _raise_held(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await send(_start())
    raise ValueError("contract: raised after the start, before any body")


async def _raise_after(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await send(_start())
    await send(_body(b"partial", more=True))
    await trio.sleep(0.2)  # the partial body is on the wire
    raise ValueError("contract: raised after body bytes were sent")


async def _raise_base(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    raise AppBaseError("contract: the app's own BaseException")


async def _late_send(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    rec.seen.append("http.disconnect")
    if await rec.try_send(send, _start()):
        await rec.try_send(send, _body(b"too late"))


async def _trailers(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await send(_start(headers=[(b"trailer", b"x-checksum")], trailers=True))
    await send(_body(b"with trailers"))
    trailers = {"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]}
    await send({**trailers, "more_trailers": False})


async def _hints(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    advertised = [name for name in scope.get("extensions", {}) if name.startswith("http.")]
    rec.seen.append(",".join(sorted(advertised)))
    link = b"</style.css>; rel=preload; as=style"
    await send({"type": "http.response.early_hint", "links": [link]})
    await send(_start())
    await send(_body(b"hinted"))


async def _pathsend(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await send(_start())
    await send({"type": "http.response.pathsend", "path": str(rec.file)})


async def _scope(rec: Recorder, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    facts = [
        f"path={scope['path']}",
        f"root_path={scope['root_path']}",
        f"client={scope['client'][0] if scope.get('client') else None}",
        f"scheme={scope['scheme']}",
        f"request_id={_request_id(scope.get('request_id'))}",
        f"http_version={scope['http_version']}",
    ]
    rec.seen.extend(facts)
    await send(_start())
    await send(_body(" ".join(facts).encode()))


def _request_id(value: str | None) -> str | None:
    """The client's id as it is; one the server made up, as "generated"."""
    return value if value is None or value.startswith("contract") else "generated"


ROUTES = {
    "echo": _echo,
    "hold": _hold,
    "stream": _stream,
    "start-read": _start_read,
    "raise-before": _raise_before,
    "raise-held": _raise_held,
    "raise-after": _raise_after,
    "raise-base": _raise_base,
    "late-send": _late_send,
    "trailers": _trailers,
    "hints": _hints,
    "pathsend": _pathsend,
    "scope": _scope,
}

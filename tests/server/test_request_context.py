"""Each request and WebSocket starts from its own context (issue 21 item 3).

A ContextVar one request sets (an auth middleware's current user, a tenant id, a tracing span)
must never be seen by the next request on the same keep-alive connection: behind a proxy that
reuses upstream connections, that next request is another user's. Each request starts from a
copy of the context its connection started with; under ``reset_contextvars`` (Uvicorn's
``--reset-contextvars``) from an empty one.
"""

from __future__ import annotations

import contextvars
import json
import re
from typing import Any

import httpx
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.rawhttp import read_response
from trioserve.testing import open_server

user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")
# Set by the test before the server starts: part of every connection's starting context.
deployment: contextvars.ContextVar[str] = contextvars.ContextVar("deployment", default="unset")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    seen = {"user": user.get(), "deployment": deployment.get()}
    if scope["path"].startswith("/login"):
        user.set("alice")  # and never reset: the app leaks it, as real middleware can
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close", "code": 1000})
        return
    while (await receive()).get("more_body"):
        pass
    body = json.dumps(seen).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def seen_in(response: bytes) -> dict[str, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return dict(json.loads(body))


@pytest.fixture(params=["h11", "httptools"])
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_request_does_not_see_the_previous_request_on_its_connection(http: str) -> None:
    deployment.set("blue")
    async with open_server(app, http=http) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(get("/login"))
            assert seen_in(await read_response(stream)) == {
                "user": "anonymous",
                "deployment": "blue",
            }
            for _ in range(3):
                await stream.send_all(get("/page"))
                assert seen_in(await read_response(stream)) == {
                    "user": "anonymous",
                    "deployment": "blue",
                }


async def test_pipelined_requests_each_start_fresh(http: str) -> None:
    """The second request's bytes are already buffered: no read (and no yield) between the
    two, so the server must switch the context itself."""
    async with open_server(app, http=http) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(get("/login") + get("/page") + get("/login2") + get("/page"))
            data = b""
            with trio.fail_after(5):
                while data.count(b"HTTP/1.1 200") < 4 or not data.endswith(b"}"):
                    data += await stream.receive_some(65536)
    bodies = [json.loads(body) for body in re.findall(rb"\{[^}]*\}", data)]
    assert [b["user"] for b in bodies] == ["anonymous"] * 4


async def test_a_websocket_after_a_request_starts_fresh(http: str) -> None:
    async with open_server(app, http=http) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(get("/login"))
            seen_in(await read_response(stream))
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(Request(host="x", target="/ws")))
            texts: list[str] = []
            with trio.fail_after(5):
                while not texts:
                    ws.receive_data(await stream.receive_some(65536))
                    for event in ws.events():
                        if isinstance(event, TextMessage):
                            texts.append(event.data)
                        elif isinstance(event, CloseConnection):
                            break
                        else:
                            assert isinstance(event, AcceptConnection), event
    assert json.loads(texts[0])["user"] == "anonymous"


async def test_reset_contextvars_starts_every_request_empty(http: str) -> None:
    deployment.set("blue")
    async with open_server(app, http=http, reset_contextvars=True) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            for path in ("/login", "/page", "/page"):
                await stream.send_all(get(path))
                assert seen_in(await read_response(stream)) == {
                    "user": "anonymous",
                    "deployment": "unset",
                }


@pytest.mark.parametrize("reset", [False, True])
async def test_http2_streams_on_one_connection_start_fresh(reset: bool) -> None:
    deployment.set("blue")
    async with (
        open_server(app, reset_contextvars=reset) as server,
        httpx.AsyncClient(http1=False, http2=True, base_url=server.url) as client,
    ):
        responses = [(await client.get(path)).json() for path in ("/login", "/page", "/page")]
        assert all(r.http_version == "HTTP/2" for r in [await client.get("/page")])
    expected = {"user": "anonymous", "deployment": "unset" if reset else "blue"}
    assert responses == [expected] * 3

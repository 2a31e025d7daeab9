"""HTTP/2 streams follow the same request rules and outcomes as HTTP/1.1 (issues 22 and 23):
malformed pseudo-headers get a 400 on their stream alone, a stalled body gets 408, bodies
reach the app coalesced, and 100-continue works. Raw h2 frames over h2c on loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from tests.h2raw import RawH2, close_all, get, post
from trioserve.testing import open_server


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await close_all()


class Recorder:
    """Answers 200 with the body it read; records each scope and each body message."""

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


def fields(method: bytes, path: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"localhost"),
    ]


MALFORMED = [
    pytest.param(b"GET", b"admin", id="path-without-slash"),
    pytest.param(b"G\xc3\x89T", b"/", id="non-ascii-method"),
    pytest.param(b"GET", b"/a b", id="space-in-path"),
    pytest.param(b"GET", b"/a\x01b", id="control-in-path"),
    pytest.param(b"GET", b"/a\x7fb", id="del-in-path"),
    pytest.param(b"GET /admin HTTP/1.1", b"/", id="request-line-as-method"),
    pytest.param(b"GET", b"*", id="asterisk-not-options"),
    pytest.param(b"GET", b"http://example.com/", id="absolute-form-path"),
]


@pytest.mark.parametrize(("method", "path"), MALFORMED)
async def test_malformed_pseudo_headers_get_400_on_their_stream_only(
    method: bytes, path: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    app = Recorder()
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, fields(method, path)), client.headers(3, get("/ok")))
        bad = await client.response(1)
        good = await client.response(3)
    assert bad["headers"][b":status"] == b"400"
    assert good["headers"][b":status"] == b"200" and good["body"] == b"ok "
    assert app.paths == ["/ok"]  # the malformed request never reached the app
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_options_asterisk_is_served() -> None:
    app = Recorder()
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, fields(b"OPTIONS", b"*")))
        response = await client.response(1)
    assert response["headers"][b":status"] == b"200"
    assert app.paths == ["*"]


async def test_stalled_body_gets_408_as_on_http11(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    app = Recorder()
    async with open_server(app, request_body_timeout=0.5) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/up"), end_stream=False), client.data(1, b"x"))
        response = await client.response(1, timeout=10)
        # The connection still serves another stream.
        await client.send(client.headers(3, get("/after")))
        after = await client.response(3)
    assert response["headers"][b":status"] == b"408"
    assert "reset" not in response
    assert after["headers"][b":status"] == b"200"
    access = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert any('"POST /up' in line and " 408 " in line for line in access), access
    assert not any(" 499 " in line for line in access), access
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_body_frames_reach_the_app_coalesced() -> None:
    app = Recorder(pause=0.5)  # the frames all arrive while the app is not reading
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        frames = [client.data(1, b"%d" % i) for i in range(10)]
        await client.send(client.headers(1, post("/up"), end_stream=False), *frames)
        await client.send(client.data(1, b"", end_stream=True))
        response = await client.response(1)
    assert response["body"] == b"ok 0123456789"
    assert app.bodies == [b"0123456789"]


async def test_expect_100_continue_over_http2() -> None:
    app = Recorder()
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        head = [*post("/up"), (b"expect", b"100-continue")]
        await client.send(client.headers(1, head, end_stream=False))
        first = await client.frame()
        assert client.decode(first)[b":status"] == b"100"
        await client.send(client.data(1, b"body", end_stream=True))
        response = await client.response(1)
    assert response["headers"][b":status"] == b"200" and response["body"] == b"ok body"


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


async def test_stalled_body_after_the_response_started_resets_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    async with open_server(started_then_reads, request_body_timeout=0.5) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/up"), end_stream=False), client.data(1, b"x"))
        response = await client.response(1, timeout=10)
        await client.send(client.headers(3, get("/after")))
        after = await client.response(3)
    assert response["headers"][b":status"] == b"200" and response["body"] == b"partial"
    assert response["reset"] == 2  # INTERNAL_ERROR: the response cannot be completed
    assert after["headers"][b":status"] == b"200"
    assert any("request body timed out" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]

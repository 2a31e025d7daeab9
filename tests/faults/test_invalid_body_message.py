"""Item 7: an invalid body message while the response head is still held back gets a 500.

Before, the held head was released before the body was checked, so the server believed it
on the wire and closed the connection without a byte.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from trioserve.testing import open_server

from ..rawhttp import read_until_close

CASES: dict[str, tuple[list[tuple[bytes, bytes]], dict[str, Any]]] = {
    "str body": ([], {"type": "http.response.body", "body": "text"}),
    "int body": ([], {"type": "http.response.body", "body": 5}),
    "over content-length": (
        [(b"content-length", b"2")],
        {"type": "http.response.body", "body": b"too long"},
    ),
    "under content-length": (
        [(b"content-length", b"20")],
        {"type": "http.response.body", "body": b"short"},
    ),
    "second start": ([], {"type": "http.response.start", "status": 200}),
    "unknown type": ([], {"type": "http.response.trailers"}),
    "no type": ([], {"body": b"x"}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("parser", ["h11", "httptools"])
async def test_invalid_first_body_message_gets_500(
    case: str, parser: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers, message = CASES[case]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(message)

    async with open_server(app, raise_app_exceptions=False, http=parser) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await read_until_close(stream)
    assert data.startswith(b"HTTP/1.1 500 "), data
    assert b"HTTP/1.1 200" not in data
    assert data.endswith(b"Internal Server Error\n")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "ASGI protocol error" in errors[0].getMessage()


async def test_return_after_start_with_the_head_held_gets_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})

    async with open_server(app, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await read_until_close(stream)
    assert data.startswith(b"HTTP/1.1 500 "), data
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "without finishing" in errors[0].getMessage()

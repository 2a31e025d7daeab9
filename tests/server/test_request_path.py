"""Request-path behaviour a Uvicorn user relies on (issue 11, items 3-6), over real sockets
and with both HTTP/1.1 parsers."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import trio

from trioserve.testing import open_server

from ..rawhttp import read_response, read_until_close

PARSERS = pytest.mark.parametrize("kind", ["h11", "httptools"])


@pytest.fixture(autouse=True)
def _force_http_parser() -> None:
    """Each test here names its parser itself (overrides the conftest fixture)."""


async def _request_twice(server: Any, raw: bytes) -> tuple[bytes, bytes]:
    """Two requests on one connection; the second answer (b"" if the server closed)."""
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        await stream.send_all(raw)
        first = await read_response(stream)
        try:
            await stream.send_all(raw)
            second = await read_response(stream)
        except trio.BrokenResourceError:
            second = b""
    return first, second


async def starlette_error_app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    return Starlette(routes=[Route("/boom", boom)])


@PARSERS
async def test_app_raising_after_a_complete_response_keeps_the_connection(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette's ServerErrorMiddleware sends its 500, then re-raises (item 3)."""
    app = await starlette_error_app()
    raw = b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n"
    async with open_server(app, http=kind, raise_app_exceptions=False) as server:
        first, second = await _request_twice(server, raw)
    assert first.startswith(b"HTTP/1.1 500 ")
    assert second.startswith(b"HTTP/1.1 500 ")  # the same connection answered again
    assert b"connection: close" not in first.lower()
    errors = [r for r in caplog.records if r.name == "trioserve.error" and r.levelno >= 40]
    assert len(errors) == 2  # one line per request
    assert all("Exception in ASGI application" in r.getMessage() for r in errors)


def _no_body_app(status: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"not allowed here"})

    return app


@PARSERS
@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_drop_the_body(
    kind: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The head is sent, the body dropped, the connection kept (item 4)."""
    raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    async with open_server(_no_body_app(status), http=kind) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(raw + raw.replace(b"GET", b"HEAD"))
            await stream.send_eof()
            answer = await read_until_close(stream)
    heads = answer.split(b"\r\n\r\n")
    assert len(heads) == 3 and heads[2] == b""  # two heads, no body bytes at all
    assert heads[0].startswith(b"HTTP/1.1 %d " % status)
    assert heads[1].startswith(b"HTTP/1.1 %d " % status)
    assert b"not allowed" not in answer
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _framing_app(scope: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        headers = [(b"content-length", b"10")] if path == "/short" else []
        if path == "/ows":
            headers = [(b"x-padded", b"  value \t"), (b"content-length", b"3")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if path == "/returns":
            return
        await send({"type": "http.response.body", "body": b"abc"})

    return app


@PARSERS
@pytest.mark.parametrize("path", ["/short", "/returns"])
async def test_framing_errors_before_a_write_get_500_and_close(kind: str, path: str) -> None:
    """Content-Length disagreeing with the body, or start then return (item 5)."""
    raw = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    async with open_server(_framing_app({}), http=kind, raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(raw)
            answer = await read_until_close(stream)
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert re.search(rb"(?i)\r\nconnection: close\r\n", answer)
    assert b"abc" not in answer


@PARSERS
async def test_header_value_ows_is_stripped(kind: str) -> None:
    raw = b"GET /ows HTTP/1.1\r\nHost: x\r\n\r\n"
    async with open_server(_framing_app({}), http=kind) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(raw)
            answer = await read_response(stream)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nx-padded: value\r\n" in answer


async def no_read_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"9")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"no thanks"})


@PARSERS
async def test_unanswered_continue_announces_close(kind: str) -> None:
    """The body was never asked for and may still come: say the connection ends (item 6)."""
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    async with open_server(no_read_app, http=kind) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(raw)
            answer = await read_until_close(stream)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"100 Continue" not in answer
    assert re.search(rb"(?i)\r\nconnection: close\r\n", answer)


@PARSERS
@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: 400
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",  # 505
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",  # 413 (limit 10)
    ],
)
async def test_server_errors_carry_date_and_server(kind: str, raw: bytes) -> None:
    async with open_server(no_read_app, http=kind, max_request_body_size=10) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(raw)
            answer = await read_until_close(stream)
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert re.match(rb"http/1.1 (400|413|505) ", head)
    assert b"\r\ndate: " in head
    assert b"\r\nserver: trioserve" in head


async def test_server_errors_leave_out_what_is_disabled() -> None:
    async with open_server(
        no_read_app, include_server_header=False, include_date_header=False
    ) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
            answer = await read_until_close(stream)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"date:" not in answer.lower() and b"server:" not in answer.lower()


async def test_access_log_request_line_is_as_received(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve.access")
    async with open_server(no_read_app, root_path="/api", access_log=True) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET /api/x?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            await read_response(stream)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1
    assert '"GET /api/x?q=1 HTTP/1.1" 200' in lines[0]

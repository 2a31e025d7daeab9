"""The app failure policy over loopback, and the access/error logs."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import open_server

from ..rawhttp import read_response, read_until_close

Scope = MutableMapping[str, Any]
GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "trioserve.error" and r.levelno >= logging.ERROR
    ]


async def ok(send: Any, body: bytes = b"ok") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def app_with(failure: Any) -> Any:
    """An app whose /fail path runs ``failure``; every other path answers 200 'ok'."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/fail":
            await failure(receive, send)
        else:
            await ok(send)

    return app


async def test_exception_before_start_gives_500_and_keeps_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failure(receive: Any, send: Any) -> None:
        raise ValueError("boom before start")

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            first = await read_response(stream)
            assert first.startswith(b"HTTP/1.1 500 ")
            assert b"connection: close" not in first.lower()
            await stream.send_all(GET % b"next")
            second = await read_response(stream)
            assert second.startswith(b"HTTP/1.1 200 ")
            assert second.endswith(b"ok")
    [record] = error_records(caplog)
    assert record.exc_info is not None
    assert "boom before start" in str(record.exc_info[1])


async def test_exception_after_start_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failure(receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom mid-body")

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            data = await read_until_close(stream)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")  # not a complete chunked body
    [record] = error_records(caplog)
    assert record.exc_info is not None


async def test_exception_after_start_held_head_still_gets_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A head not yet on the wire (no body sent) can still be replaced by a 500."""

    async def failure(receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom after start, before body")

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            first = await read_response(stream)
            # The held-back 200 never reached the wire: a clean 500 replaces it, and the
            # connection stays usable.
            assert first.startswith(b"HTTP/1.1 500 ")
            assert b"HTTP/1.1 200" not in first
            await stream.send_all(GET % b"next")
            second = await read_response(stream)
            assert second.startswith(b"HTTP/1.1 200 ")
    assert len(error_records(caplog)) == 1


async def test_app_returns_without_responding_gives_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failure(receive: Any, send: Any) -> None:
        return

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            assert (await read_response(stream)).startswith(b"HTTP/1.1 500 ")
            await stream.send_all(GET % b"next")
            assert (await read_response(stream)).startswith(b"HTTP/1.1 200 ")
    [record] = error_records(caplog)
    assert "without sending a response" in record.getMessage()


async def test_app_returns_mid_body_closes(caplog: pytest.LogCaptureFixture) -> None:
    async def failure(receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            data = await read_until_close(stream)
    assert b"half" in data
    assert not data.endswith(b"0\r\n\r\n")
    assert len(error_records(caplog)) == 1


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "http.response.body", "body": b"no start"}],
        [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.start", "status": 200, "headers": []},
        ],
        [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": b"done"},
            {"type": "http.response.body", "body": b"again"},
        ],
        [{"type": "http.response.start", "status": "200", "headers": []}],
        [{"type": "websocket.accept"}],
        [{"no": "type"}],
    ],
    ids=["body-first", "double-start", "body-after-end", "bad-status", "wrong-type", "no-type"],
)
async def test_invalid_message_order_logged_and_closed(
    caplog: pytest.LogCaptureFixture, messages: list[dict[str, Any]]
) -> None:
    async def failure(receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            data = await read_until_close(stream)
    # A 500 if nothing was sent yet, then a close; never a second response on the wire.
    assert data.count(b"HTTP/1.1 ") <= 1
    if messages[0].get("type") != "http.response.start":
        assert data.startswith(b"HTTP/1.1 500 ")
        assert b"connection: close" in data.lower()
    assert b"again" not in data
    [record] = error_records(caplog)
    assert record.exc_info is not None  # the traceback points at the bad send()


@pytest.mark.parametrize(
    "header",
    [
        (b"x-bad", b"value\r\nInjected: yes"),
        (b"x-bad", b"value\nInjected: yes"),
        (b"x-bad", b"value\rInjected: yes"),
        (b"bad name", b"v"),
        (b"bad:name", b"v"),
        (b"", b"v"),
        (b"x-nul", b"a\x00b"),
        ("x-str", "not bytes"),
    ],
)
async def test_bad_response_header_gives_500_never_on_the_wire(
    caplog: pytest.LogCaptureFixture, header: tuple[Any, Any]
) -> None:
    async def failure(receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [header]})
        await send({"type": "http.response.body", "body": b"secret"})

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            data = await read_until_close(stream)
            assert data.startswith(b"HTTP/1.1 500 ")
            assert b"connection: close" in data.lower()
            assert b"Injected" not in data
            assert b"secret" not in data
        # The server carries on for the next client.
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/next")).status_code == 200
    [record] = error_records(caplog)
    assert record.exc_info is not None


async def test_app_failure_does_not_disturb_other_connections() -> None:
    async def failure(receive: Any, send: Any) -> None:
        raise RuntimeError("only this one")

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        a = await trio.open_tcp_stream(server.host, server.port)
        b = await trio.open_tcp_stream(server.host, server.port)
        async with a, b:
            await a.send_all(GET % b"fail")
            await b.send_all(GET % b"fine")
            assert (await read_response(a)).startswith(b"HTTP/1.1 500 ")
            assert (await read_response(b)).startswith(b"HTTP/1.1 200 ")


async def test_head_request_500_has_no_body() -> None:
    async def failure(receive: Any, send: Any) -> None:
        raise RuntimeError("head failure")

    async with open_server(app_with(failure), raise_app_exceptions=False) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"HEAD /fail HTTP/1.1\r\nHost: x\r\n\r\n" + GET % b"next")
            data = b""
            with trio.move_on_after(1):
                while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"ok"):
                    data += await stream.receive_some(65536)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 500 ")
    assert rest.startswith(b"HTTP/1.1 200 ")


# -- access log --------------------------------------------------------------------------


async def test_access_log_atoms(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    fmt = "|".join(
        f"{atom}=%({atom})s"
        for atom in ["h", "r", "s", "b", "t", "T", "D", "a", "f", "m", "U", "q", "H"]
    )

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await trio.sleep(0.01)
        await ok(send, b"hello")

    async with open_server(app, access_log_format=fmt) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(
                b"GET /some/path?x=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: agent/1\r\n"
                b"Referer: http://ref/\r\n\r\n"
            )
            await read_response(stream)
    [line] = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    fields = dict(part.split("=", 1) for part in line.split("|"))
    assert fields["h"] == "127.0.0.1"
    assert fields["r"] == "GET /some/path?x=1 HTTP/1.1"
    assert fields["s"] == "200"
    assert fields["b"] == "5"
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", fields["t"])
    assert fields["T"] == "0"
    assert 10_000 <= int(fields["D"]) < 5_000_000
    assert fields["a"] == "agent/1"
    assert fields["f"] == "http://ref/"
    assert fields["m"] == "GET"
    assert fields["U"] == "/some/path"
    assert fields["q"] == "x=1"
    assert fields["H"] == "HTTP/1.1"


async def test_access_log_records_500_of_a_failed_app(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")

    async def failure(receive: Any, send: Any) -> None:
        raise RuntimeError("x")

    async with open_server(
        app_with(failure), raise_app_exceptions=False, access_log_format="%(U)s %(s)s"
    ) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(GET % b"fail")
            await read_response(stream)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert lines == ["/fail 500"]

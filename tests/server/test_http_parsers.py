"""``http = "h11"`` and ``http = "httptools"`` put the same bytes on the wire.

Each exchange is a burst of raw requests (pipelined, chunked, HEAD, HTTP/1.0, refused ones)
sent over a real socket; the answers, minus the Date header, must match byte for byte.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import pytest
import trio

from trioserve.sansio import http11_choice
from trioserve.testing import open_server

from ..rawhttp import read_response, read_until_close

Scope = MutableMapping[str, Any]


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # a refused body: the server answers
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    reply = b"%s %s %s %d" % (
        scope["method"].encode(),
        scope["raw_path"],
        scope["http_version"].encode(),
        len(body),
    )
    headers = [(b"content-type", b"text/plain")]
    if scope["path"] == "/stream":  # no length: chunked for HTTP/1.1, until close for 1.0
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply, "more_body": True})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["path"] == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        return
    headers.append((b"content-length", b"%d" % len(reply)))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


EXCHANGES = {
    "pipelined": b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nT: 1\r\n\r\n"
    b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"
    b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "http10": b"GET /stream HTTP/1.0\r\n\r\n",
    "http10-length": b"POST /e HTTP/1.0\r\nContent-Length: 2\r\n\r\nok",
    "unknown-method-and-fold": b"PURGEX /f HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n"
    b"Connection: close\r\n\r\n",
    "cl-and-te": b"POST /g HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-chunk": b"POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1 \r\nz\r\n0\r\n\r\n",
    "http2-line": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "te-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "head-too-large": b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n",
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    # CONNECT with an origin-form target: h11 alone took it (and then failed on the
    # response), llhttp answered 200. One refusal for every form.
    "connect-origin-form": b"CONNECT /path HTTP/1.1\r\nHost: a\r\n\r\n",
    # RFC 9112 2.2: one empty line before a request line is ignored (an old client's CRLF
    # after a POST body); a second one is an empty request line.
    "leading-empty-lines": b"\r\nPOST /i HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
    b"\r\nGET /j HTTP/1.1\r\nHost: x\r\n\r\n\nGET /k HTTP/1.1\r\nHost: x\r\n\r\n"
    b"\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n",
}


async def exchange(kind: str, raw: bytes) -> bytes:
    async with open_server(app, http=kind, h11_max_incomplete_size=1024) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(raw)
            answer = await read_until_close(stream)
    return re.sub(rb"(?i)\r\ndate: [^\r]*", b"", answer)


@pytest.fixture(autouse=True)
def _force_http_parser() -> None:
    """Overrides the conftest fixture that forces one parser (TRIOSERVE_TEST_HTTP): this
    module compares the two, so it must never end up comparing h11 with h11."""


def test_the_two_parsers_are_different_classes() -> None:
    assert http11_choice.protocol_class("h11") is not http11_choice.protocol_class("httptools")


@pytest.mark.parametrize("name", list(EXCHANGES))
async def test_both_parsers_answer_alike(name: str) -> None:
    raw = EXCHANGES[name]
    h11_answer = await exchange("h11", raw)
    assert h11_answer.startswith(b"HTTP/1.1 ")
    if (
        name == "bad-chunk"
    ):  # seen by the app's receive(): the app gets a disconnect, the client a 400
        assert h11_answer.startswith(b"HTTP/1.1 400 ")
    assert await exchange("httptools", raw) == h11_answer


@pytest.mark.parametrize("kind", ["h11", "httptools"])
@pytest.mark.parametrize("target", [b"/path", b"a:443", b"http://a/x"])
async def test_connect_is_refused_quietly(
    kind: str, target: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """One clean 405 and close, never the app, never a log line above debug."""
    caplog.set_level(logging.DEBUG)
    answer = await exchange(kind, b"CONNECT " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"connection: close" in answer.lower()
    assert b"CONNECT" not in answer  # the app (which echoes the method) never ran
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("trioserve")
        and r.levelno > logging.DEBUG
        and "CONNECT" in r.getMessage()
    ]
    assert not noisy
    assert any("CONNECT is not supported" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["h11", "httptools"])
async def test_an_empty_line_before_a_request_line_is_ignored(kind: str) -> None:
    """Pipelined, then each piece in its own read (the CRLF after a POST body arriving on
    its own, a CR apart from its LF): both parsers serve the request after one empty line,
    and answer 400 to two."""
    answer = await exchange(kind, EXCHANGES["leading-empty-lines"])
    replies = re.findall(rb"\r\n\r\n([A-Z]+ /[a-z]+ 1.1 \d+)", answer)
    assert replies == [b"POST /i 1.1 2", b"GET /j 1.1 0", b"GET /k 1.1 0"]
    assert answer.count(b"HTTP/1.1 400 ") == 1 and b"/never" not in answer
    async with open_server(app, http=kind) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
            assert b"POST /a 1.1 2" in await read_response(stream)
            for piece in (b"\r", b"\n", b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"):
                await stream.send_all(piece)
                await trio.sleep(0.05)
            assert b"GET /b 1.1 0" in await read_response(stream)

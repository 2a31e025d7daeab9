"""Malformed request heads and trailers over HTTP/2 cost one stream, never the connection.

h2's own inbound validation is off (it answers every one of these with GOAWAY
PROTOCOL_ERROR, killing the other streams in flight); trioserve's shared rules answer a
malformed head 400 and reset a stream whose trailers are malformed (PROTOCOL_ERROR).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from h2.errors import ErrorCodes

from tests.h2raw import RawH2, close_all, get, post
from tests.malformed_heads import BAD_TRAILERS, cases, good
from trioserve.testing import open_server

from .test_http2 import Probe

BAD = cases(b"http")
GOOD = good(b"http")


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await close_all()


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("fields", BAD.values(), ids=BAD.keys())
async def test_malformed_head_gets_400_and_the_connection_lives(
    fields: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        # A stream in flight before the bad one, and one opened after it.
        await client.send(client.headers(1, post("/echo"), end_stream=False))
        await client.send(client.headers(3, fields))
        await client.send(client.headers(5, get("/")))
        await client.send(client.data(1, b"still here", end_stream=True))
        bad = await client.response(3)
        assert bad["headers"][b":status"] == b"400", bad
        assert "goaway" not in bad
        assert (await client.response(1))["body"] == b"still here"
        assert (await client.response(5))["body"] == b"ok"
        # And the connection takes new streams afterwards.
        await client.send(client.headers(7, get("/")))
        assert (await client.response(7))["body"] == b"ok"
    _no_errors(caplog)


@pytest.mark.parametrize("fields", GOOD.values(), ids=GOOD.keys())
async def test_heads_at_the_edge_are_served(fields: Any) -> None:
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, fields))
        assert (await client.response(1))["body"] == b"ok"


@pytest.mark.parametrize("trailers", BAD_TRAILERS.values(), ids=BAD_TRAILERS.keys())
async def test_malformed_trailers_reset_their_stream_only(
    trailers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = Probe()
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/wait-disconnect"), end_stream=False))
        await client.send(client.data(1, b"body"))
        await client.send(client.headers(1, trailers, end_stream=True))
        result = await client.response(1)
        assert result.get("reset") == ErrorCodes.PROTOCOL_ERROR, result
        await client.send(client.headers(3, get("/")))
        assert (await client.response(3))["body"] == b"ok"
        # The app saw the body, then the client gone (not a complete request).
        assert [m["type"] for m in app.messages][-1] == "http.disconnect"
    _no_errors(caplog)

"""Malformed request heads and trailers over HTTP/3 cost one stream, never the connection.

aioquic validates a request head itself and answers a malformed one with a connection
error (H3_MESSAGE_ERROR); trioserve keeps heads from that check and applies the rules it
shares with HTTP/2: a malformed head gets 400, malformed trailers reset their stream with
H3_MESSAGE_ERROR, and the connection's other streams carry on.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from tests.malformed_heads import BAD_TRAILERS, cases, good

from .conftest import Certs, h3_session
from .test_streams import hello_app

H3_MESSAGE_ERROR = 0x10E
# (pylsqpack, the client's encoder, cannot encode an empty field name.)
BAD = {name: fields for name, fields in cases(b"https").items() if name != "empty-name"}
GOOD = good(b"https")


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("fields", BAD.values(), ids=BAD.keys())
async def test_malformed_head_gets_400_and_the_connection_lives(
    certs: Certs, fields: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with h3_session(hello_app(), certs) as (_, client):
        # A stream opened before the bad one (its body still open), and one after it.
        in_flight = client.open(b"/first", body=b"x", end=False)
        bad = await client.wait(client.open(fields=fields))
        assert client.terminated is None
        assert bad.status == 400, bad
        assert (await client.wait(in_flight)).status == 200
        assert (await client.request(b"/after")).status == 200
    _no_errors(caplog)


@pytest.mark.parametrize("fields", GOOD.values(), ids=GOOD.keys())
async def test_heads_at_the_edge_are_served(certs: Certs, fields: Any) -> None:
    async with h3_session(hello_app(), certs) as (_, client):
        assert (await client.wait(client.open(fields=fields))).status == 200


@pytest.mark.parametrize("trailers", BAD_TRAILERS.values(), ids=BAD_TRAILERS.keys())
async def test_malformed_trailers_reset_their_stream_only(
    certs: Certs, trailers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    held = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            held.set()
            while (message := await receive())["type"] != "http.disconnect":
                seen.append(message["type"])
            seen.append(message["type"])
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    async with h3_session(app, certs) as (_, client):
        stream_id = client.open(b"/hold", method=b"POST", body=b"body", end=False)
        with trio.fail_after(5):
            await held.wait()
        client.h3.send_headers(stream_id, trailers, end_stream=True)
        client.wake()
        result = await client.wait(stream_id)
        assert client.terminated is None
        assert result.reset == H3_MESSAGE_ERROR, result
        assert (await client.request(b"/after")).status == 200
        assert seen[-1] == "http.disconnect"
    _no_errors(caplog)

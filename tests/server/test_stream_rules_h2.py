"""HTTP/2 streams follow the same request rules and outcomes as HTTP/1.1 (issues 22 and 23):
malformed pseudo-headers get a 400 on their stream alone, a stalled body gets 408, bodies
reach the app coalesced, and 100-continue works. Raw h2 frames over h2c on loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from tests.h2raw import RawH2, close_all, get, post
from tests.malformed_heads import Fields, request_line_cases
from tests.stream_apps import Recorder, started_then_reads
from trioserve.testing import open_server


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await close_all()


def fields(method: bytes, path: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"localhost"),
    ]


MALFORMED = request_line_cases(b"http")


@pytest.mark.parametrize("head", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_pseudo_headers_get_400_on_their_stream_only(
    head: Fields, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    app = Recorder()
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, head), client.headers(3, get("/ok")))
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

"""HTTP/3 streams follow the same request rules and outcomes as HTTP/1.1 and HTTP/2
(issues 22 and 23): malformed pseudo-headers get a 400 on their stream alone, a stalled
body gets 408, bodies reach the app coalesced, and the metrics say "3". Through aioquic's
client over loopback UDP."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.malformed_heads import request_line_cases
from tests.stream_apps import Recorder, started_then_reads

from ..metrics.helpers import admin_url, parse, total, value
from .conftest import Certs, h3_session


def fields(method: bytes, path: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", path),
        *extra,
    ]


MALFORMED = request_line_cases(b"https")


@pytest.mark.parametrize("head", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_pseudo_headers_get_400_on_their_stream_only(
    certs: Certs, head: list[tuple[bytes, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    app = Recorder()
    async with h3_session(app, certs) as (_, client):
        bad = await client.wait(client.open(fields=head))
        good = await client.request(b"/ok")
    assert dict(bad.headers)[b":status"] == b"400"
    assert dict(good.headers)[b":status"] == b"200" and good.body == b"ok "
    assert app.paths == ["/ok"]  # the malformed request never reached the app
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_host_equal_to_authority_is_one_host(certs: Certs) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["headers"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async with h3_session(app, certs) as (_, client):
        result = await client.wait(
            client.open(fields=fields(b"GET", b"/", (b"host", b"localhost")))
        )
    assert dict(result.headers)[b":status"] == b"204"
    assert [v for n, v in seen[0] if n == b"host"] == [b"localhost"]


async def test_stalled_body_gets_408_as_on_http11(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    app = Recorder()
    async with h3_session(app, certs, request_body_timeout=0.5) as (_, client):
        stalled = client.open(b"/up", method=b"POST", body=b"x", end=False)
        response = await client.wait(stalled, timeout=10)
        after = await client.request(b"/after")
    assert dict(response.headers)[b":status"] == b"408"
    assert dict(after.headers)[b":status"] == b"200"
    access = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert any('"POST /up' in line and " 408 " in line for line in access), access
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_body_frames_reach_the_app_coalesced(certs: Certs) -> None:
    app = Recorder(pause=0.5)  # the frames all arrive while the app is not reading
    async with h3_session(app, certs) as (_, client):
        stream_id = client.open(b"/up", method=b"POST", end=False)
        for i in range(10):
            client.send_body(stream_id, b"%d" % i)
            await client.flush()
        client.send_body(stream_id, b"", end=True)
        response = await client.wait(stream_id)
    assert response.body == b"ok 0123456789"
    assert app.bodies == [b"0123456789"]


async def test_metrics_count_http3_and_quic_connections(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    app = Recorder()
    async with h3_session(app, certs, metrics_bind="127.0.0.1:0") as (_, client):
        for _ in range(3):
            assert dict((await client.request(b"/")).headers)[b":status"] == b"200"
        async with httpx.AsyncClient() as http:
            scrape = await http.get(admin_url(caplog.records) + "/metrics")
    samples = parse(scrape.text)
    requests = "trioserve_requests_total"
    assert value(samples, requests, method="GET", status_class="2xx", http_version="3") == 3
    assert total(samples, requests, http_version="1.1") == 0
    assert value(samples, "trioserve_connections_open") == 1  # the QUIC connection


async def test_stalled_body_after_the_response_started_resets_the_stream(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    options = {"request_body_timeout": 0.5}
    async with h3_session(started_then_reads, certs, **options) as (_, client):
        stalled = client.open(b"/up", method=b"POST", body=b"x", end=False)
        response = await client.wait(stalled, timeout=10)
        after = await client.request(b"/after")
    assert dict(response.headers)[b":status"] == b"200"
    assert response.reset == 0x102  # H3_INTERNAL_ERROR: the response cannot be completed
    assert dict(after.headers)[b":status"] == b"200"
    assert any("request body timed out" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]

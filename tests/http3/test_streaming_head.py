"""A streaming response's head goes out over HTTP/3 when the app starts waiting (issue 21,
item 10; HTTP/1.1 and HTTP/2 are in tests/server/test_streaming_head.py)."""

from __future__ import annotations

import trio

from tests.server.test_streaming_head import SOON, WAIT, sse_app

from .conftest import Certs, h3_session


async def test_http3_head_arrives_before_the_first_event(certs: Certs) -> None:
    async with h3_session(sse_app, certs) as (_, client):
        start = trio.current_time()
        stream_id = client.open(b"/events")
        result = await client.wait(stream_id, until=lambda r: r.headers, timeout=WAIT + 5)
        elapsed = trio.current_time() - start
        assert elapsed < SOON, f"headers after {elapsed:.2f}s"
        assert result.status == 200
        assert result.header(b"content-type") == b"text/event-stream"
        assert not result.body
        result = await client.wait(stream_id, timeout=WAIT + 5)
    assert bytes(result.body) == b"data: tick\n\n"

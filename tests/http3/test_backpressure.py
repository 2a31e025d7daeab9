"""Backpressure both ways on an HTTP/3 stream, bounded by h3_stream_buffer_size."""

from __future__ import annotations

from typing import Any

import trio

from .conftest import Certs, h3_session

BUFFER = 128 * 1024
CHUNK = 32 * 1024


async def test_send_waits_for_a_stalled_client(certs: Certs) -> None:
    """A client that stops reading: send() stops once BUFFER bytes wait unsent (beyond
    the first congestion window in flight), and the whole body arrives once it reads."""
    sent = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(64):  # 2 MiB
            await send({"type": "http.response.body", "body": b"z" * CHUNK, "more_body": True})
            sent += CHUNK
        await send({"type": "http.response.body", "body": b""})

    async with h3_session(app, certs, h3_stream_buffer_size=BUFFER) as (_, client):
        client.pause()
        stream_id = client.open(b"/")
        await trio.sleep(1.0)
        initial_cwnd = 16 * 1024  # aioquic: 10 datagrams
        assert 0 < sent <= BUFFER + CHUNK + initial_cwnd, sent
        client.resume()
        result = await client.wait(stream_id, timeout=20)
        assert len(result.body) == 64 * CHUNK
        assert sent == 64 * CHUNK


async def test_unread_upload_is_bounded(certs: Certs) -> None:
    """An app that does not read its body: the client may only send one window ahead;
    once the app reads, the rest of the upload flows."""
    go = trio.Event()
    got = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal got
        if scope["type"] != "http":
            return
        await go.wait()
        while True:
            message = await receive()
            got += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % got})

    total = 4 * 1024 * 1024
    async with h3_session(app, certs, h3_stream_buffer_size=BUFFER) as (_, client):
        stream_id = client.open(b"/up", method=b"POST", end=False)
        client.send_body(stream_id, b"u" * total, end=True)
        await trio.sleep(1.0)
        # What the client could put on the wire: the server's credit for the stream.
        sent = client.quic._streams[stream_id].sender.highest_offset
        assert sent <= BUFFER + 1024, sent
        go.set()
        result = await client.wait(stream_id, timeout=30)
        assert bytes(result.body) == b"%d" % total

"""The checks every way of serving ``svc_app`` must pass (in process, as workers)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import trio

from trioserve.testing import ws_connect


async def check_queries(client: httpx.AsyncClient) -> None:
    """asyncpg through the lifespan pool, SQLAlchemy's engine, Redis GET/SET, aiohttp."""
    for _ in range(4):  # several requests: the pool made at startup serves each of them
        response = await client.get("/pg")
        assert response.status_code == 200, response.text
        assert response.json()["value"] == 42
    response = await client.get("/sqlalchemy")
    assert response.status_code == 200, response.text
    assert response.json() == {"value": 42, "server": response.json()["server"]}
    assert response.json()["server"] >= 12
    key = f"k-{uuid.uuid4().hex}"
    assert (await client.put(f"/redis/{key}", content=b"stored")).status_code == 200
    assert (await client.get(f"/redis/{key}")).json() == {"value": "stored"}
    response = await client.get("/upstream")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": 200, "body": "upstream says hi"}


async def check_rollback_on_disconnect(client: httpx.AsyncClient, port: int) -> None:
    """A client that leaves mid-upload rolls the request's transaction back."""
    tag = f"tx-{uuid.uuid4().hex[:8]}"
    # A complete upload commits (the route works at all).
    done = await client.post(f"/pg/tx/{tag}-ok", content=_chunks(b"a", b"b"))
    assert done.status_code == 200, done.text
    assert (await client.get(f"/pg/state/{tag}-ok")).json()["committed"] >= 1
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = f"POST /pg/tx/{tag} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head.encode() + b"5\r\nfirst\r\n")
        with trio.fail_after(10):
            while "row 1" not in (await client.get(f"/pg/state/{tag}")).json()["steps"]:
                await trio.sleep(0.02)
    # The client is gone: the app hears http.disconnect and its transaction unwinds.
    with trio.fail_after(10):
        while len((state := (await client.get(f"/pg/state/{tag}")).json())["steps"]) < 2:
            await trio.sleep(0.02)
    assert state["committed"] == 0
    assert sorted(state["steps"]) == ["ClientDisconnect", "row 1"]


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def check_pubsub_fanout(ws_url: str, client: httpx.AsyncClient) -> None:
    """One Redis PUBLISH reaches every subscribed WebSocket (whatever worker holds it)."""
    channel = f"ch-{uuid.uuid4().hex[:8]}"
    async with (
        ws_connect(f"{ws_url}/subscribe/{channel}") as first,
        ws_connect(f"{ws_url}/subscribe/{channel}") as second,
    ):
        assert await first.receive_text() == "subscribed"
        assert await second.receive_text() == "subscribed"
        published = await client.post(f"/publish/{channel}", content=b"hello all")
        assert published.json() == {"receivers": 2}
        with trio.fail_after(10):
            assert await first.receive_text() == "hello all"
            assert await second.receive_text() == "hello all"
    # Both forwarders unsubscribed when their clients left.
    with trio.fail_after(10):
        while (await client.post(f"/publish/{channel}", content=b"x")).json()["receivers"]:
            await trio.sleep(0.02)


async def upstream_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """The second local server the aiohttp client calls (plain trio)."""
    if scope["type"] != "http":
        return
    body = b"upstream says hi"
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

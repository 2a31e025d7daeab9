"""trioserve.testing speaks HTTP/2: the live server (httpx http2=True, prior knowledge) and
the in-memory transport (``http2=True``); the app sees HTTP/2's scope and extensions
(trailers, early hints) and uses them."""

from __future__ import annotations

from typing import Any

import httpx
import trio
import trio.testing

from trioserve.testing import InMemoryTransport, open_memory_client, open_server


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await trio.sleep(30)
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    extensions = sorted(name for name in scope["extensions"] if name.startswith("http."))
    if "http.response.early_hint" in extensions:
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    text = f"{scope['http_version']} {len(body)} {' '.join(extensions)}".encode()
    await send({"type": "http.response.body", "body": text})
    await send({"type": "http.response.trailers", "headers": [(b"x-done", b"1")]})


async def test_live_server_over_http2() -> None:
    async with (
        open_server(app) as server,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):
        response = await client.post(server.url + "/", content=b"abc")
    assert response.http_version == "HTTP/2"
    assert response.text.startswith("2 3 http.response.early_hint")
    assert "http.response.trailers" in response.text


async def test_in_memory_transport_over_http2_multiplexes() -> None:
    transport = InMemoryTransport(app, http2=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        results: list[httpx.Response] = []

        async def one(i: int) -> None:
            results.append(await client.post("/", content=b"x" * i))

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
    assert {r.http_version for r in results} == {"HTTP/2"}
    assert sorted(int(r.text.split()[1]) for r in results) == list(range(10))
    assert transport.connections_opened == 1


async def test_in_memory_http2_app_errors_are_raised() -> None:
    async with open_memory_client(app, http2=True) as client:
        try:
            await client.get("/boom")
        except RuntimeError as exc:
            assert str(exc) == "boom"
        else:
            raise AssertionError("the app's exception was not raised")


async def test_in_memory_http2_under_a_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    """No sockets, no threads: a 30 s app costs no wall-clock time under autojump."""
    async with open_memory_client(app, http2=True) as client:
        with trio.move_on_after(5) as scope:
            await client.get("/slow")
        assert scope.cancelled_caught
        response = await client.get("/")
    assert response.text.startswith("2 0")

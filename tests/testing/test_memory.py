"""The in-memory transport: trioserve's HTTP/1.1 code over a stream pair, no sockets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trioserve.errors import LifespanFailure
from trioserve.testing import InMemoryTransport, open_memory_client, open_server

from .apps import Probe


async def test_lifespan_runs_once_around_the_client() -> None:
    app = Probe()
    async with open_memory_client(app) as client:
        assert (app.startups, app.shutdowns) == (1, 0)
        for _ in range(3):
            response = await client.get("/state")
            assert response.status_code == 200
            assert response.json()["state"] == {"greeting": "hello"}
        assert (app.startups, app.shutdowns) == (1, 0)
    assert (app.startups, app.shutdowns) == (1, 1)


async def test_sse_first_event_arrives_while_the_app_is_blocked() -> None:
    app = Probe()
    async with open_memory_client(app) as client:
        with trio.fail_after(5):
            async with client.stream("GET", "/sse") as response:
                assert response.headers["content-type"] == "text/event-stream"
                chunks = response.aiter_bytes()
                first = await chunks.__anext__()
                # The app is still parked before its second event: nothing buffered it.
                assert first == b"data: one\n\n"
                assert not app.release.is_set()
                app.release.set()
                rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"data: two\n\n"


async def test_request_body_streams_to_the_app() -> None:
    app = Probe()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        # The app must have the first chunk before the client produces the second.
        with trio.fail_after(5):
            await app.chunk_seen.wait()
        yield b"b" * 500

    async with open_memory_client(app) as client:
        response = await client.post("/upload", content=body())
    assert response.json()["bytes"] == 1500
    bodies = [m["body"] for m in app.received if m["body"]]
    assert bodies == [b"a" * 1000, b"b" * 500]
    assert app.received[0]["more_body"] is True


async def test_closing_a_response_early_is_a_disconnect_for_the_app() -> None:
    app = Probe()
    async with open_memory_client(app) as client:
        async with client.stream("GET", "/forever") as response:
            # Stop reading by cancelling, not `break`: that ends httpx's nested async
            # generators cleanly under trio (a `break` leaves them to the garbage collector).
            with trio.CancelScope() as reading:
                async for chunk in response.aiter_bytes():
                    assert chunk.startswith(b"tick")
                    reading.cancel()
        with trio.fail_after(5):
            await app.disconnected.wait()


async def test_scope_is_what_the_real_server_builds() -> None:
    live_app, memory_app = Probe(), Probe()
    async with open_server(live_app) as server, httpx.AsyncClient() as client:
        await client.get(server.url + "/caf%C3%A9?x=1&y=%20", headers={"X-Thing": "1"})
        base_url = server.url
    async with open_memory_client(memory_app, base_url=base_url) as client:
        await client.get("/caf%C3%A9?x=1&y=%20", headers={"X-Thing": "1"})
    live, memory = live_app.scopes[0], memory_app.scopes[0]
    # Only the client's ephemeral port and the (per-server, made-up) request id can differ.
    assert live.pop("client")[0] == memory.pop("client")[0] == "127.0.0.1"
    assert len(live.pop("request_id")) == len(memory.pop("request_id")) == 32
    assert live == memory
    assert memory["path"] == "/café"
    assert memory["server"] == ("127.0.0.1", server.port)


async def test_keep_alive_timeout_with_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Probe()
    started = time.monotonic()
    transport = InMemoryTransport(app, keep_alive_timeout=5)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/")
        await trio.sleep(4)  # idle, but under the timeout: the connection is reused
        await client.get("/")
        assert transport.connections_opened == 1
        await trio.sleep(6)  # past it: the server closed it, the next request reconnects
        await client.get("/")
        assert transport.connections_opened == 2
    assert time.monotonic() - started < 2  # ten virtual seconds, no real waiting


async def test_read_timeout_with_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Probe()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b"first"
        await trio.sleep(3600)  # the server gives up long before this ends

    async with open_memory_client(app, read_timeout=30, request_body_timeout=None) as client:
        start = trio.current_time()
        response = await client.post("/upload", content=stalled_body())
    assert response.status_code == 408  # nothing was sent yet: the server says why
    assert app.disconnected_at is not None
    assert app.disconnected_at - start == pytest.approx(30, abs=0.5)


async def test_client_read_timeout_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_client(Probe()) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/sleep?60", timeout=10)
        response = await client.get("/sleep?5", timeout=10)
        assert response.status_code == 200


async def test_app_exception_is_raised_from_the_request() -> None:
    async with open_memory_client(Probe()) as client:
        with pytest.raises(RuntimeError, match="the app broke"):
            await client.get("/boom")
        # The connection and the transport keep working afterwards.
        assert (await client.get("/")).status_code == 200


async def test_app_exception_mid_response_is_raised_from_the_body() -> None:
    async with open_memory_client(Probe()) as client:
        with pytest.raises(RuntimeError, match="mid-response") as info:
            await client.get("/boom-late")
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


async def test_app_exceptions_can_be_left_to_the_server() -> None:
    async with open_memory_client(Probe(), raise_app_exceptions=False) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error\n"


async def test_lifespan_failure_is_raised_on_enter() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailure, match="no database"):
        async with open_memory_client(app):
            pass  # pragma: no cover


async def test_using_it_without_async_with_is_a_clear_error() -> None:
    client = httpx.AsyncClient(transport=InMemoryTransport(Probe()), base_url="http://t")
    with pytest.raises(RuntimeError, match="async with"):
        await client.get("/")
    await client.aclose()


async def test_a_failing_test_body_is_not_wrapped_in_an_exception_group() -> None:
    with pytest.raises(KeyError):
        async with open_memory_client(Probe()) as client:
            await client.get("/")
            raise KeyError("from the test")


async def test_httpx_asgi_transport_cannot_do_this() -> None:
    """The contrast the SSE test relies on: httpx's ASGITransport waits for the whole body."""
    app = Probe()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with trio.move_on_after(0.2) as waited:
            async with client.stream("GET", "/sse") as response:
                await response.aiter_bytes().__anext__()  # pragma: no cover
        assert waited.cancelled_caught  # no first event while the app is blocked
        app.release.set()


async def test_concurrent_requests_use_their_own_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Probe()
    transport = InMemoryTransport(app)
    statuses: list[int] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        start = trio.current_time()

        async def fetch() -> None:
            statuses.append((await client.get("/sleep?1")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(fetch)
        assert trio.current_time() - start == pytest.approx(1)  # in parallel, not in turn
        assert transport.connections_opened == 10
        await client.get("/")  # an idle connection is reused
        assert transport.connections_opened == 10
    assert statuses == [200] * 10
    assert sorted(scope["client"][1] for scope in app.scopes[:10]) == list(range(50000, 50010))


async def test_server_limits_apply_in_memory() -> None:
    app = Probe()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 100

    async with open_memory_client(app, max_request_body_size=500) as client:
        with trio.fail_after(5):
            sized = await client.post("/upload", content=b"x" * 1000)
            streamed = await client.post("/upload", content=chunks())
            small = await client.post("/upload", content=b"x" * 100)
    assert (sized.status_code, streamed.status_code, small.status_code) == (413, 413, 200)


async def test_metrics_alt_svc_and_max_requests_are_the_real_servers() -> None:
    """The in-memory server starts and stops through the real one's sequence
    (server/lifecycle.py): metrics count its requests, configured Alt-Svc fields go out,
    and max_requests drains it (a new connection is refused, as a closed listener would)."""
    from tests.metrics.helpers import parse, value
    from trioserve.metrics.exposition import HostNumbers, render

    app = Probe()
    transport = InMemoryTransport(
        app,
        metrics_bind="127.0.0.1:0",
        alt_svc_headers=['h3=":8443"; ma=60'],
        max_requests=3,
        max_requests_jitter=0,
        limit_concurrency=5,
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        responses = [await client.get("/state") for _ in range(3)]
        state = transport.state
        assert state is not None
        samples = parse(render(HostNumbers(live=[state.metrics.snapshot()])).decode())  # type: ignore[attr-defined]
        with trio.fail_after(5):
            while not state.shutting_down:
                await trio.sleep(0.01)
        with pytest.raises(httpx.ConnectError):
            await transport.open_stream()  # a new connection
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].headers["alt-svc"] == 'h3=":8443"; ma=60'
    requests = "trioserve_requests_total"
    assert value(samples, requests, method="GET", status_class="2xx", http_version="1.1") == 3


async def test_limit_concurrency_and_keep_alive_max_requests_apply_in_memory() -> None:
    release = trio.Event()
    started = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            started.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    options = {"limit_concurrency": 1, "keep_alive_max_requests": 2}
    async with open_memory_client(app, **options) as client, trio.open_nursery() as nursery:
        held: list[httpx.Response] = []

        async def hold() -> None:
            held.append(await client.get("/hold"))

        nursery.start_soon(hold)
        await started.wait()
        refused = await client.get("/")
        release.set()
    async with open_memory_client(app, **options) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert refused.status_code == 503
    assert held[0].status_code == 200
    assert "connection" not in first.headers
    assert second.headers["connection"] == "close"

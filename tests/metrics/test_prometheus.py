"""Prometheus metrics, /healthz and /readyz of one process, over real loopback sockets."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import trio

from trioserve.run import make_config
from trioserve.server.serve import serve
from trioserve.testing import open_server

from ..rawhttp import read_until_close
from .helpers import admin_url, parse, total, value


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/slow":
        await trio.sleep(1.0)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = 404 if path == "/missing" else 200
    answer = f"app {path} {len(body)}".encode()
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": answer})


async def test_requests_are_counted_by_method_status_and_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "trioserve.error")
    async with (
        open_server(app, metrics_bind="127.0.0.1:0", raise_app_exceptions=False) as server,
        httpx.AsyncClient() as client,
    ):
        admin = admin_url(caplog.records)
        for _ in range(20):
            assert (await client.get(server.url + "/")).status_code == 200
        for _ in range(3):
            response = await client.post(server.url + "/missing", content=b"x" * 1000)
            assert response.status_code == 404
        assert (await client.head(server.url + "/")).status_code == 200
        assert (await client.get(server.url + "/boom")).status_code == 500
        # One malformed request: a refusal, not a request the app saw.
        stream = await trio.open_tcp_stream(server.host, server.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert (await read_until_close(stream)).startswith(b"HTTP/1.1 400 ")
        await stream.aclose()
        http10 = await trio.open_tcp_stream(server.host, server.port)
        await http10.send_all(b"GET /old HTTP/1.0\r\n\r\n")
        assert b" 200 " in (await read_until_close(http10))
        await http10.aclose()
        scrape = await client.get(admin + "/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    samples = parse(scrape.text)
    requests = "trioserve_requests_total"
    assert value(samples, requests, method="GET", status_class="2xx", http_version="1.1") == 20
    assert value(samples, requests, method="POST", status_class="4xx", http_version="1.1") == 3
    assert value(samples, requests, method="HEAD", status_class="2xx", http_version="1.1") == 1
    assert value(samples, requests, method="GET", status_class="5xx", http_version="1.1") == 1
    assert value(samples, requests, method="GET", status_class="2xx", http_version="1.0") == 1
    assert total(samples, requests) == 26
    assert value(samples, "trioserve_request_duration_seconds_count") == 26
    assert value(samples, "trioserve_request_duration_seconds_bucket", le="+Inf") == 26
    assert 0 < value(samples, "trioserve_request_duration_seconds_sum") < 26
    assert value(samples, "trioserve_bytes_received_total") == 3000
    sent = 20 * len(b"app / 0") + 3 * len(b"app /missing 1000") + len(b"app /old 0")
    # (Body bytes from the app, as the access log's %(B)s: the server's own 500 is not.)
    assert value(samples, "trioserve_bytes_sent_total") == sent
    assert value(samples, "trioserve_app_exceptions_total") == 1
    assert value(samples, "trioserve_refusals_total", reason="400") == 1
    assert value(samples, "trioserve_lifespan_state", state="serving") == 1
    assert value(samples, "trioserve_shutting_down") == 0
    # The httpx client's keep-alive connection is open while we scrape.
    assert value(samples, "trioserve_connections_open") >= 1


async def test_admin_paths_are_not_on_the_apps_port(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve.error")
    async with (
        open_server(app, metrics_bind="127.0.0.1:0") as server,
        httpx.AsyncClient() as client,
    ):
        admin = admin_url(caplog.records)
        for path in ("/metrics", "/healthz", "/readyz"):
            response = await client.get(server.url + path)
            assert response.text == f"app {path} 0"  # the app's answer, not ours
        assert (await client.get(admin + "/")).status_code == 404
        assert (await client.get(admin + "/healthz")).text == "alive\n"
        metrics = await client.get(admin + "/metrics")
        assert "trioserve_requests_total" in metrics.text
    assert value(parse(metrics.text), "trioserve_requests_total",
                 method="GET", status_class="2xx", http_version="1.1") == 3  # fmt: skip


async def test_readyz_follows_startup_and_the_drain(caplog: pytest.LogCaptureFixture) -> None:
    """503 during lifespan startup, 200 once serving, 503 from the moment the drain starts
    (while a request is still in flight), and /healthz 200 throughout."""
    caplog.set_level(logging.INFO, "trioserve.error")
    started = trio.Event()

    async def slow_start(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await started.wait()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app(scope, receive, send)

    config = make_config(
        environ={}, bind=["127.0.0.1:0"], metrics_bind="127.0.0.1:0", graceful_timeout=5
    )
    trigger = trio.Event()
    slow_status: list[int] = []
    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:

        async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(slow_start, config, shutdown_trigger=trigger, task_status=task_status)

        async def open_later() -> None:
            admin = await _wait_admin(caplog)
            starting = await client.get(admin + "/readyz")
            assert (starting.status_code, starting.text) == (503, "starting\n")
            assert (await client.get(admin + "/healthz")).status_code == 200
            started.set()

        nursery.start_soon(open_later)
        urls = await nursery.start(run_server)
        admin = admin_url(caplog.records)
        ready = await client.get(admin + "/readyz")
        assert (ready.status_code, ready.text) == (200, "serving\n")

        async def slow() -> None:
            async with httpx.AsyncClient() as other:
                slow_status.append((await other.get(urls[0] + "/slow")).status_code)

        nursery.start_soon(slow)
        await trio.sleep(0.3)
        trigger.set()
        await trio.sleep(0.1)
        draining = await client.get(admin + "/readyz")
        assert (draining.status_code, draining.text) == (503, "draining\n")
        assert (await client.get(admin + "/healthz")).status_code == 200
        samples = parse((await client.get(admin + "/metrics")).text)
        assert value(samples, "trioserve_shutting_down") == 1
        assert value(samples, "trioserve_lifespan_state", state="draining") == 1
        assert value(samples, "trioserve_requests_in_flight") == 1
    assert slow_status == [200]
    with pytest.raises(httpx.ConnectError):  # the admin listener is gone with the server
        async with httpx.AsyncClient() as client:
            await client.get(admin + "/readyz")


async def _wait_admin(caplog: pytest.LogCaptureFixture) -> str:
    with trio.fail_after(5):
        while True:
            try:
                return admin_url(caplog.records)
            except AssertionError:
                await trio.sleep(0.01)


async def test_healthz_is_503_while_the_event_loop_is_blocked(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from trioserve.metrics import admin as admin_module

    monkeypatch.setattr(admin_module, "STALE_LOOP_SECONDS", 0.5)
    caplog.set_level(logging.INFO, "trioserve.error")
    answers: list[int] = []

    async def blocking(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/block":
            time.sleep(1.5)  # blocks the event loop; the admin thread still answers
        await app(scope, receive, send)

    async with open_server(blocking, metrics_bind="127.0.0.1:0") as server:
        admin = admin_url(caplog.records)
        assert (await _get_in_thread(admin + "/healthz")) == 200

        def probe() -> None:
            time.sleep(1.0)
            answers.append(httpx.get(admin + "/healthz").status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, probe)
            await trio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                await client.get(server.url + "/block", timeout=10)
        await trio.sleep(0.6)  # a sampler turn
        assert (await _get_in_thread(admin + "/healthz")) == 200
    assert answers == [503]


async def _get_in_thread(url: str) -> int:
    return await trio.to_thread.run_sync(lambda: httpx.get(url).status_code)


async def test_refusals_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve.error")
    async with (
        open_server(
            app,
            metrics_bind="127.0.0.1:0",
            request_head_timeout=0.3,
            max_request_body_size=10,
            server_names=["good.example"],
        ) as server,
        httpx.AsyncClient() as client,
    ):
        admin = admin_url(caplog.records)
        answers = []
        for raw in (
            b"GET / HTTP/1.1\r\nHost: good.example\r\nX: " + b"a" * 70000 + b"\r\n\r\n",  # 431
            b"GET / HTTP/1.1\r\nHost: good.exa",  # never finished: 408
            b"POST / HTTP/1.1\r\nHost: good.example\r\nContent-Length: 11\r\n\r\n",  # 413
            b"GET / HTTP/1.1\r\nHost: bad.example\r\n\r\n",  # 404
        ):
            stream = await trio.open_tcp_stream(server.host, server.port)
            await stream.send_all(raw)
            answers.append((await read_until_close(stream))[:12])
            await stream.aclose()
        samples = parse((await client.get(admin + "/metrics")).text)
    assert answers == [b"HTTP/1.1 431", b"HTTP/1.1 408", b"HTTP/1.1 413", b"HTTP/1.1 404"]
    for reason in ("431", "408", "413", "404"):
        assert value(samples, "trioserve_refusals_total", reason=reason) == 1, reason
    assert value(samples, "trioserve_refusals_total", reason="400") == 0

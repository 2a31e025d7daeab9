"""StatsD/DogStatsD with Hypercorn's names, to a real UDP socket the test listens on."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import trio

from trioserve.testing import open_server


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _collect(sock: socket.socket, wanted: int, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < wanted and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        lines.extend(data.decode().split("\n"))
    return lines


async def test_hypercorn_names_prefix_and_tags() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        async with (
            open_server(
                app,
                statsd_host=f"127.0.0.1:{port}",
                statsd_prefix="web",
                dogstatsd_tags="env:test,team:a",
            ) as server,
            httpx.AsyncClient() as client,
        ):
            for _ in range(3):
                await client.get(server.url + "/")
            await client.get(server.url + "/missing")
            lines = await trio.to_thread.run_sync(_collect, listener, 12, 5.0)
    tags = "|#env:test,team:a"
    assert lines.count(f"web.hypercorn.requests:1|c|@1.0{tags}") == 4
    assert lines.count(f"web.hypercorn.request.status.200:1|c|@1.0{tags}") == 3
    assert lines.count(f"web.hypercorn.request.status.404:1|c|@1.0{tags}") == 1
    durations = [line for line in lines if line.startswith("web.hypercorn.request.duration:")]
    assert len(durations) == 4
    for line in durations:
        value, rest = line[len("web.hypercorn.request.duration:") :].split("|", 1)
        assert float(value) >= 0
        assert rest == f"ms{tags}"


async def test_no_agent_listening_never_fails_a_request() -> None:
    """Nothing on the port (each send is refused) and an unroutable address: requests go on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for target in (f"127.0.0.1:{port}", "192.0.2.1:8125"):
        async with (
            open_server(app, statsd_host=target) as server,
            httpx.AsyncClient() as client,
        ):
            with trio.fail_after(10):
                for _ in range(300):  # more than fills one datagram, many times over
                    assert (await client.get(server.url + "/")).status_code == 200


async def test_error_log_lines_are_counted() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        async def boom(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                raise RuntimeError("boom")

        async with (
            open_server(boom, statsd_host=f"127.0.0.1:{port}", raise_app_exceptions=False) as s,
            httpx.AsyncClient() as client,
        ):
            assert (await client.get(s.url)).status_code == 500
            lines = await trio.to_thread.run_sync(_collect, listener, 4, 5.0)
    assert "hypercorn.log.exception:1|c|@1.0" in lines


async def test_lines_are_hypercorns_own() -> None:
    """The same request through Hypercorn's StatsdLogger and ours: the same datagram lines."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.statsd import StatsdLogger

    from trioserve.metrics.statsd import StatsD

    theirs: list[str] = []

    class Capturing(StatsdLogger):
        async def _socket_send(self, message: bytes) -> None:
            theirs.append(message.decode())

    config = HypercornConfig()
    config.statsd_prefix = "web"
    config.dogstatsd_tags = "env:test"
    config.accesslog = None
    logger = Capturing(config)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": None}
    for status, seconds in ((200, 0.0123), (404, 0.5)):
        await logger.access(scope, {"status": status, "headers": []}, seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        ours = StatsD(f"127.0.0.1:{listener.getsockname()[1]}", "web", "env:test")
        for status, seconds in ((200, 0.0123), (404, 0.5)):
            ours.request_done(status, seconds)
        ours.close()
        lines = listener.recv(65536).decode().split("\n")
    assert lines == theirs

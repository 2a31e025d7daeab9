"""Item 1: a BaseException from an app fails one request, never the server.

On main before this change every case here ended the whole server (and every other
in-flight request with it); with KeyboardInterrupt the process even exited with code 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio

from trioserve.config import Config
from trioserve.errors import LifespanFailure
from trioserve.server.serve import serve
from trioserve.testing import open_server, ws_connect
from trioserve.testing.wsclient import WebSocketClosed, WebSocketDenied

from ..rawhttp import read_response

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup


class Custom(BaseException):
    """A BaseException subclass an app (or a library under it) defines."""


def group() -> BaseException:
    return BaseExceptionGroup("several", [SystemExit(3), Custom("inner")])


FAULTS: dict[str, Callable[[], BaseException]] = {
    "SystemExit": lambda: SystemExit(1),
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "custom": lambda: Custom("custom"),
    "group": group,
}


def error_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "trioserve.error" and r.levelno >= logging.ERROR
    ]


def make_app(fault: Callable[[], BaseException], slow_done: trio.Event) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "websocket":
            await receive()
            if scope["path"] == "/before-accept":
                raise fault()
            await send({"type": "websocket.accept"})
            raise fault()
        if scope["path"] == "/fail":
            raise fault()
        if scope["path"] == "/slow":
            await trio.sleep(0.5)
            slow_done.set()
        body = b"ok"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


async def get(port: int, path: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        return await read_response(stream)


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_http_app_base_exception_is_one_500(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    slow_done = trio.Event()
    app = make_app(FAULTS[kind], slow_done)
    with trio.fail_after(10):
        async with open_server(app, raise_app_exceptions=False) as server:
            slow: list[bytes] = []

            async def slow_request() -> None:
                slow.append(await get(server.port, b"/slow"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_request)
                await trio.sleep(0.1)  # /slow is in flight while /fail blows up
                failed = await get(server.port, b"/fail")
                assert not slow_done.is_set()
            assert failed.startswith(b"HTTP/1.1 500 "), failed
            assert slow[0].startswith(b"HTTP/1.1 200 ")
            again = await get(server.port, b"/after")
            assert again.startswith(b"HTTP/1.1 200 ")
    [record] = error_lines(caplog)
    assert "GET /fail" in record.getMessage()


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_websocket_app_base_exception_closes_that_socket_only(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(FAULTS[kind], trio.Event())
    with trio.fail_after(10):
        async with open_server(app, raise_app_exceptions=False) as server:
            with pytest.raises(WebSocketDenied) as denied:
                async with ws_connect(server.ws_url + "/before-accept"):
                    pass
            assert denied.value.status_code == 500
            with pytest.raises(WebSocketClosed) as closed:
                async with ws_connect(server.ws_url + "/after-accept") as ws:
                    await ws.receive()
            assert closed.value.code == 1011
            assert (await get(server.port, b"/still")).startswith(b"HTTP/1.1 200 ")
    assert len(error_lines(caplog)) == 2


def lifespan_app(phase: str, fault: Callable[[], BaseException]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        if phase == "startup":
            raise fault()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise fault()

    return app


def config(**options: Any) -> Config:
    return Config(bind=["127.0.0.1:0"], **options)


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_lifespan_startup_base_exception_is_a_startup_failure(kind: str) -> None:
    app = lifespan_app("startup", FAULTS[kind])
    with trio.fail_after(5), pytest.raises(LifespanFailure):
        await serve(app, config(lifespan="on"))


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_lifespan_shutdown_base_exception_is_logged_and_serve_returns(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = lifespan_app("shutdown", FAULTS[kind])
    trigger = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config(), shutdown_trigger=trigger))
            trigger.set()
    [record] = error_lines(caplog)
    assert "lifespan" in record.getMessage()


_CTRL_C_SERVER = textwrap.dedent(
    """
    import sys, time, trio
    from trioserve.config import Config
    from trioserve.server.serve import serve

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        print("busy", flush=True)
        end = time.monotonic() + 20
        while time.monotonic() < end:  # pure Python: trio's SIGINT handler raises here
            pass

    async def main():
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(serve, app, Config(bind=["127.0.0.1:0"]))
            print(urls[0], flush=True)

    trio.run(main)
    """
)


def test_real_ctrl_c_inside_an_app_still_stops_an_embedded_server() -> None:
    """A KeyboardInterrupt trio's SIGINT handler raised inside app code is not the app's."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert proc.stdout.readline().strip() == "busy"
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert "Exception in ASGI application" not in stderr

"""Graceful shutdown over loopback: trigger, idle close, drain, deadline, stalled clients,
signals (in-process and to a CLI subprocess), lifespan shutdown order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import MutableMapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from trioserve import Config, serve
from trioserve.run import make_config

from ..rawhttp import read_until_close

Scope = MutableMapping[str, Any]
ROOT = Path(__file__).resolve().parent.parent.parent
TRIOSERVE = [sys.executable, "-m", "trioserve"]


def config(**options: Any) -> Config:
    options.setdefault("bind", ["127.0.0.1:0"])
    return make_config(environ={}, **options)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class SlowApp:
    """GET /slow?s=SECONDS sleeps then answers; /stream streams forever; lifespan logged."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.started = trio.Event()
        self.cancelled = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.events.append("lifespan.shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        self.started.set()
        try:
            if path == "/slow":
                await trio.sleep(float(scope["query_string"].decode().split("=")[1]))
            elif path == "/stream":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                while True:
                    await send(
                        {"type": "http.response.body", "body": b"s" * 65536, "more_body": True}
                    )
        except trio.Cancelled:
            self.cancelled += 1
            raise
        body = path.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self.events.append("response " + path)


async def test_nursery_start_reports_urls_and_cancel_stops_it() -> None:
    app = SlowApp()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(serve, app, config(bind=["127.0.0.1:0", "127.0.0.1:0"]))
            assert len(urls) == 2
            assert all(port_of(url) > 0 for url in urls)
            async with httpx.AsyncClient() as client:
                for url in urls:
                    assert (await client.get(url + "/x")).text == "/x"
            nursery.cancel_scope.cancel()


async def test_trigger_closes_listeners_and_idle_connections_at_once() -> None:
    app = SlowApp()
    trigger = trio.Event()
    cfg = config(keep_alive_timeout=30, graceful_timeout=5)
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(serve, app, cfg, shutdown_trigger=trigger))
        port = port_of(url)
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        await idle.send_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            assert (await idle.receive_some(65536)).startswith(b"HTTP/1.1 200")
        fresh = await trio.open_tcp_stream("127.0.0.1", port)  # never sends anything
        start = trio.current_time()
        trigger.set()
        assert await read_until_close(idle) == b""
        assert await read_until_close(fresh) == b""
        assert trio.current_time() - start < 1.0
    assert trio.current_time() - start < 1.0
    await idle.aclose()
    await fresh.aclose()
    try:
        await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        pass
    else:  # pragma: no cover
        raise AssertionError("listener still accepting after shutdown")
    assert app.events == ["response /first", "lifespan.shutdown"]


async def test_in_flight_request_finishes_within_graceful_timeout() -> None:
    app = SlowApp()
    trigger = trio.Event()
    cfg = config(graceful_timeout=3)
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(serve, app, cfg, shutdown_trigger=trigger))
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        await stream.send_all(b"GET /slow?s=0.4 HTTP/1.1\r\nHost: x\r\n\r\n")
        await app.started.wait()
        start = trio.current_time()
        trigger.set()
        await trio.sleep(0.1)
        # Draining: the listener is already closed while the slow request runs on.
        refused = False
        try:
            late = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        except OSError:
            refused = True
        else:  # pragma: no cover
            await late.aclose()
        data = await read_until_close(stream)
        await stream.aclose()
    elapsed = trio.current_time() - start
    assert refused
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in data.lower()
    assert data.endswith(b"/slow")
    assert 0.3 < elapsed < 2.0
    assert app.cancelled == 0
    # Lifespan shutdown runs after the last response.
    assert app.events == ["response /slow", "lifespan.shutdown"]


async def test_graceful_timeout_cancels_what_remains() -> None:
    app = SlowApp()
    trigger = trio.Event()
    cfg = config(graceful_timeout=0.5)
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(serve, app, cfg, shutdown_trigger=trigger))
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        await stream.send_all(b"GET /slow?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        await app.started.wait()
        start = trio.current_time()
        trigger.set()
    elapsed = trio.current_time() - start
    assert 0.4 < elapsed < 1.5, elapsed
    assert app.cancelled == 1
    assert app.events == ["lifespan.shutdown"]
    assert await read_until_close(stream) in (b"",)
    await stream.aclose()


async def test_deadline_holds_for_a_client_that_stopped_reading() -> None:
    """A big streaming response to a client that never reads: send_all blocks forever,
    and shutdown still completes at graceful_timeout (no shielded send)."""
    app = SlowApp()
    trigger = trio.Event()
    cfg = config(graceful_timeout=0.5)
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(serve, app, cfg, shutdown_trigger=trigger))
        stalled = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        await stalled.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await app.started.wait()
        await trio.sleep(0.3)  # let the socket buffers fill up
        start = trio.current_time()
        trigger.set()
    elapsed = trio.current_time() - start
    assert 0.4 < elapsed < 1.2, elapsed
    assert app.cancelled == 1
    assert app.events == ["lifespan.shutdown"]
    await stalled.aclose()


async def test_signal_in_process_triggers_graceful_shutdown_and_restores_handlers() -> None:
    app = SlowApp()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cfg = config(graceful_timeout=3)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, cfg, handle_signals=True))
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
            await stream.send_all(b"GET /slow?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
            await app.started.wait()
            os.kill(os.getpid(), signal.SIGTERM)
            data = await read_until_close(stream)
            await stream.aclose()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert app.events == ["response /slow", "lifespan.shutdown"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


async def test_second_signal_cancels_at_once_in_process() -> None:
    app = SlowApp()
    cfg = config(graceful_timeout=30)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, cfg, handle_signals=True))
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
            await stream.send_all(b"GET /slow?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
            await app.started.wait()
            os.kill(os.getpid(), signal.SIGINT)
            await trio.sleep(0.2)
            start = trio.current_time()
            os.kill(os.getpid(), signal.SIGINT)
    assert trio.current_time() - start < 1.0
    assert app.cancelled == 1
    assert app.events == ["lifespan.shutdown"]
    await stream.aclose()


# -- a CLI subprocess --------------------------------------------------------------------

SLOW_MODULE = textwrap.dedent(
    """
    import sys
    import trio

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    print("LIFESPAN-SHUTDOWN", file=sys.stderr, flush=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        seconds = float(scope["query_string"].decode() or 0)
        print("REQUEST-STARTED", file=sys.stderr, flush=True)
        await trio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})
    """
)


def start_cli(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    (tmp_path / "slowmod.py").write_text(SLOW_MODULE)
    proc = subprocess.Popen(
        [*TRIOSERVE, "slowmod:app", "--app-dir", str(tmp_path), "--port", "0", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    seen = b""
    while b"Running on " not in seen:
        assert time.monotonic() < deadline, seen
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    url = seen.split(b"Running on ")[1].split()[0].decode()
    return proc, url


def wait_for_line(proc: subprocess.Popen[bytes], marker: bytes) -> bytes:
    assert proc.stderr is not None
    seen = b""
    while marker not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    return seen


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, bytes]:
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.stderr.close()
    return code, rest


async def test_cli_sigterm_drains_then_exits_0(tmp_path: Path) -> None:
    proc, url = start_cli(tmp_path, "--timeout-graceful-shutdown", "5")
    try:
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
            result: list[httpx.Response] = []

            async def request() -> None:
                result.append(await client.get(url + "/?0.5"))

            nursery.start_soon(request)
            await trio.to_thread.run_sync(wait_for_line, proc, b"REQUEST-STARTED")
            proc.send_signal(signal.SIGTERM)
        code, rest = await trio.to_thread.run_sync(finish, proc, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result[0].status_code == 200
    assert result[0].text == "done"
    assert code == 0
    assert b"LIFESPAN-SHUTDOWN" in rest


async def test_cli_second_sigint_cancels_at_once(tmp_path: Path) -> None:
    proc, url = start_cli(tmp_path, "--timeout-graceful-shutdown", "30")
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        await stream.send_all(b"GET /?60 HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.to_thread.run_sync(wait_for_line, proc, b"REQUEST-STARTED")
        proc.send_signal(signal.SIGINT)
        await trio.to_thread.run_sync(wait_for_line, proc, b"shutting down")
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code, rest = await trio.to_thread.run_sync(finish, proc, 10)
        elapsed = time.monotonic() - start
        await stream.aclose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert elapsed < 2.0
    assert b"LIFESPAN-SHUTDOWN" in rest


SLOW_STARTUP = textwrap.dedent(
    """
    import sys
    import trio

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            print("STARTUP-BEGIN", file=sys.stderr, flush=True)
            await trio.sleep(30)
    """
)


async def test_cli_sigint_during_lifespan_startup_exits_quietly(tmp_path: Path) -> None:
    (tmp_path / "slowstart.py").write_text(SLOW_STARTUP)
    proc = subprocess.Popen(
        [*TRIOSERVE, "slowstart:app", "--app-dir", str(tmp_path), "--port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        await trio.to_thread.run_sync(wait_for_line, proc, b"STARTUP-BEGIN")
        proc.send_signal(signal.SIGINT)
        code, rest = await trio.to_thread.run_sync(finish, proc, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert b"Traceback" not in rest

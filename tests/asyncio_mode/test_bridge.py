"""``loop = "asyncio"`` without external services: what runs where, cancellation, disconnects,
leaked tasks, and the hint an asyncio app gets in the default trio mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sniffio
import trio
import trio_asyncio
from fastapi import FastAPI, Request, WebSocket

from trioserve.config import ConfigError
from trioserve.errors import ClientDisconnected, LifespanFailure
from trioserve.run import make_config
from trioserve.server.asyncio_bridge import app_runner, needs_asyncio
from trioserve.testing import open_server, ws_connect

from ..supervisor.procs import Server, wait_until

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

ROOT = Path(__file__).resolve().parents[2]


def hint_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "--loop asyncio" in r.getMessage()]


# -- the option ------------------------------------------------------------------------------
def test_loop_option_values() -> None:
    assert make_config(environ={}).loop == "trio"
    assert make_config(environ={}, loop="auto").loop == "trio"  # Uvicorn's default spelling
    assert make_config(environ={}, loop="asyncio").loop == "asyncio"
    assert make_config(environ={"TRIOSERVE_LOOP": "asyncio"}).loop == "asyncio"
    with pytest.raises(ConfigError, match="expected auto, trio or asyncio"):
        make_config(environ={}, loop="tokio")


def test_uvloop_is_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "trioserve", "main:app", "--loop", "uvloop"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "uvloop" in lines[0] and "trio" in lines[0] and "--loop asyncio" in lines[0]


def test_trio_mode_serves_the_app_itself() -> None:
    """The default costs nothing per request: the app is not wrapped."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    served, context = app_runner(app, "trio")
    assert served is app
    assert isinstance(context, contextlib.nullcontext)


def test_trio_mode_never_imports_trio_asyncio() -> None:
    """trio_asyncio patches asyncio when imported: a default server must leave it alone."""
    import subprocess

    script = """
import sys, httpx, trio
from trioserve.testing import open_server

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

async def main():
    async with open_server(app) as server, httpx.AsyncClient() as client:
        assert (await client.get(server.url)).status_code == 204
    print("trio_asyncio imported:", "trio_asyncio" in sys.modules)

trio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.stdout.strip() == "trio_asyncio imported: False", done.stderr


# -- asyncio, trio and anyio code in one app --------------------------------------------------
def make_mixed_app(events: list[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        app.state.loop = asyncio.get_running_loop()
        app.state.lock = asyncio.Lock()
        events.append("startup")
        yield
        # Shutdown runs in asyncio context, on the same loop: a pool could be closed here.
        assert asyncio.current_task() is not None
        events.append(f"shutdown same-loop={asyncio.get_running_loop() is app.state.loop}")

    app = FastAPI(lifespan=lifespan)

    @app.get("/asyncio")
    async def use_asyncio() -> dict[str, Any]:
        async with asyncio.timeout(5), app.state.lock:  # needs a real asyncio task
            await asyncio.sleep(0.001)
        task = asyncio.create_task(asyncio.sleep(0.001, "created"))
        threaded = asyncio.get_running_loop().run_in_executor(None, sum, [1, 2])
        results = await asyncio.gather(task, threaded)
        return {"results": results, "same_loop": asyncio.get_running_loop() is app.state.loop}

    @app.get("/trio")
    async def use_trio() -> dict[str, Any]:
        async def trio_part() -> str:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0.001)
            return sniffio.current_async_library()

        return {"library": await trio_asyncio.trio_as_aio(trio_part)()}

    @app.get("/anyio")
    async def use_anyio() -> dict[str, Any]:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0.001)
        with anyio.fail_after(5):
            await anyio.sleep(0.001)
        return {"library": sniffio.current_async_library()}

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        text = await ws.receive_text()
        await asyncio.sleep(0.001)
        await ws.send_text(f"{text} from {sniffio.current_async_library()}")
        await ws.close()

    return app


async def test_asyncio_trio_and_anyio_code_in_asyncio_mode() -> None:
    from anyio._backends import _asyncio as anyio_asyncio

    # As in a real worker: anyio bound asyncio's function before trio_asyncio patched it.
    assert anyio_asyncio.get_running_loop is not asyncio.get_running_loop
    events: list[str] = []
    app = make_mixed_app(events)
    async with open_server(app, loop="asyncio") as server:
        assert events == ["startup"]
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(2):  # the loop made at startup serves every request
                response = await client.get("/asyncio")
                assert response.json() == {"results": ["created", 3], "same_loop": True}
            assert (await client.get("/trio")).json() == {"library": "trio"}
            assert (await client.get("/anyio")).json() == {"library": "asyncio"}
        async with ws_connect(server, "/ws") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi from asyncio"
    assert events == ["startup", "shutdown same-loop=True"]


# -- disconnects and cancellation -------------------------------------------------------------
def make_raw_app(events: list[str]) -> Any:
    """Raw ASGI, asyncio inside: reports what receive() and send() did for a gone client."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    events.append(
                        f"lifespan shutdown in task={asyncio.current_task() is not None}"
                    )
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/wait-for-disconnect":
            assert (await receive())["type"] == "http.request"
            events.append("waiting")
            message = await receive()  # the client leaves while we wait here
            events.append(message["type"])
            await asyncio.sleep(0)
            try:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            except OSError as exc:
                events.append(f"send raised {type(exc).__name__}")
            return
        if scope["path"] == "/sleep":
            events.append("sleeping")
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
        if scope["path"] == "/swallow":
            events.append("sleeping")
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                events.append("swallowed")  # and returns as if nothing happened
            return
        if scope["path"] == "/leak":

            async def forgotten() -> None:
                try:
                    await asyncio.sleep(3600)
                finally:
                    events.append("leaked task ended")

            asyncio.create_task(forgotten(), name="forgotten-job")  # noqa: RUF006 - the point
        if scope["path"] == "/self-cancel":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def wait_for(events: list[str], item: str) -> None:
    with trio.fail_after(10):
        while item not in events:
            await trio.sleep(0.01)


async def test_client_that_leaves_is_a_disconnect_in_asyncio() -> None:
    events: list[str] = []
    async with open_server(make_raw_app(events), loop="asyncio") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /wait-for-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_for(events, "waiting")
        await wait_for(events, "send raised ClientDisconnected")
    assert events[:3] == ["waiting", "http.disconnect", "send raised ClientDisconnected"]
    assert issubclass(ClientDisconnected, OSError)


async def test_graceful_deadline_cancels_asyncio_work(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    outcome: list[str] = []

    async def request(url: str) -> None:
        try:
            await httpx.AsyncClient().get(url + "/sleep", timeout=30)
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    async with trio.open_nursery() as nursery:
        async with open_server(make_raw_app(events), loop="asyncio", graceful_timeout=0.3) as s:
            nursery.start_soon(request, s.url)
            await wait_for(events, "sleeping")
            started = time.monotonic()
        took = time.monotonic() - started
    # The deadline held: the asyncio sleep was cancelled, then lifespan shutdown ran.
    assert took < 5, took
    assert events == ["sleeping", "cancelled", "lifespan shutdown in task=True"]
    assert outcome == ["RemoteProtocolError"]
    assert any("Graceful shutdown timed out" in r.getMessage() for r in caplog.records)


async def test_app_swallowing_cancellation_still_ends_at_the_deadline() -> None:
    events: list[str] = []

    async def request(url: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await httpx.AsyncClient().get(url + "/swallow", timeout=30)

    started = time.monotonic()
    async with (
        trio.open_nursery() as nursery,
        open_server(make_raw_app(events), loop="asyncio", graceful_timeout=0.3) as server,
    ):
        nursery.start_soon(request, server.url)
        await wait_for(events, "sleeping")
    assert time.monotonic() - started < 8
    assert events == ["sleeping", "swallowed", "lifespan shutdown in task=True"]


async def test_leaked_asyncio_task_is_named_and_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    async with (
        open_server(make_raw_app(events), loop="asyncio") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert (await client.get("/leak")).text == "ok"
        assert "leaked task ended" not in events
    [warning] = [r for r in caplog.records if "forgotten-job" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "still running at shutdown" in warning.getMessage()
    assert "forgotten" in warning.getMessage()  # the coroutine's name too
    assert "leaked task ended" in events  # cancelled, not left running


async def test_app_cancelling_its_own_task_is_an_app_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    async with (
        open_server(make_raw_app(events), loop="asyncio", raise_app_exceptions=False) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert (await client.get("/self-cancel")).status_code == 500
        assert (await client.get("/")).text == "ok"  # the server carries on
    assert any("asyncio task was cancelled" in repr(r.exc_info) for r in caplog.records)


# -- the hint in trio mode --------------------------------------------------------------------
async def test_asyncio_app_in_trio_mode_gets_one_hint(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(0.001)

    async with (
        open_server(app, raise_app_exceptions=False) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        for _ in range(3):
            assert (await client.get("/")).status_code == 500
    [hint] = hint_records(caplog)
    assert "uses asyncio" in hint.getMessage()
    assert "\n" not in hint.getMessage()
    # Each failure still has its own traceback.
    failures = [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
    assert len(failures) == 3


async def test_asyncio_lifespan_in_trio_mode_gets_the_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        asyncio.get_running_loop()  # as asyncpg.create_pool() would
        yield

    with pytest.raises(LifespanFailure):
        async with open_server(FastAPI(lifespan=lifespan)):
            pass  # pragma: no cover
    assert len(hint_records(caplog)) == 1


def test_django_in_trio_mode_gets_the_hint(tmp_path: Path) -> None:
    """In a fresh process, as a user would meet it (trio_asyncio never imported)."""
    args = ["tests.asyncio_mode.django_asgi:application", "--port", "0", "--no-access-log"]
    server = Server(ROOT, args)
    try:
        port = server.wait_serving(workers=0)
        for _ in range(2):
            assert server.get("/info", timeout=10)[0] == 500
        server.wait_for("Exception in ASGI application", n=2)
        assert server.count("--loop asyncio") == 1, server.output
    finally:
        server.stop()
    assert port


async def test_django_async_view_in_asyncio_mode(caplog: pytest.LogCaptureFixture) -> None:
    from .django_asgi import application

    async with (
        open_server(application, loop="asyncio") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        response = await client.get("/info")
        assert response.status_code == 200
        assert response.json()["task"] is True
        assert response.json()["other_thread"] is True
        assert (await client.get("/stream")).text == "chunk 0\nchunk 1\nchunk 2\n"
    assert hint_records(caplog) == []


def test_needs_asyncio_recognises_the_usual_failures() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError as exc:
        assert needs_asyncio(exc)
    wrapped = ValueError("framework error")
    wrapped.__cause__ = RuntimeError("Timeout should be used inside a task")
    assert needs_asyncio(wrapped)
    assert needs_asyncio(BaseExceptionGroup("tasks", [RuntimeError("no running event loop")]))
    assert needs_asyncio(NotImplementedError("this client supports asyncio, not 'trio'"))
    assert not needs_asyncio(RuntimeError("something else"))
    assert not needs_asyncio(KeyError("no running event loop"))


# -- as a process -----------------------------------------------------------------------------
SLEEPY_APP = """
import asyncio, sys

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    print("request started", file=sys.stderr, flush=True)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        print("asyncio sleep cancelled", file=sys.stderr, flush=True)
        raise
"""


def test_sigterm_deadline_cancels_asyncio_work_in_workers(tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(SLEEPY_APP)
    args = ["sleepy:app", "--loop", "asyncio", "--workers", "2", "--port", "0"]
    args += ["--app-dir", str(tmp_path), "--graceful-timeout", "0.5", "--no-access-log"]
    server = Server(tmp_path, args)
    try:
        port = server.wait_serving(workers=2, timeout=60)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            server.wait_for("request started")
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
        server.wait_for("asyncio sleep cancelled")
        assert wait_until(lambda: server.count("Graceful shutdown timed out") == 1, 5)
        assert "Traceback" not in server.output, server.output
    finally:
        server.stop()


# -- receive()/send() crossings: inline, concurrent, given up by asyncio ---------------------
def make_crossing_app(events: list[str]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        start = {"type": "http.response.start", "status": 200, "headers": []}
        if scope["path"] == "/concurrent":
            # A listener waits in receive() while the response streams: two crossings at once.
            assert (await receive())["type"] == "http.request"
            listener = asyncio.create_task(receive())
            await send(start)
            for i in range(3):
                await send({"type": "http.response.body", "body": b"%d" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            events.append((await listener)["type"])  # the client closes after the response
        elif scope["path"] == "/timeout":
            # asyncio gives up on a receive() (wait_for), then the app carries on normally.
            assert (await receive())["type"] == "http.request"
            try:
                await asyncio.wait_for(receive(), 0.05)
            except asyncio.TimeoutError:
                events.append("receive timed out")
            await send(start)
            await send({"type": "http.response.body", "body": b"after timeout"})

            async def late() -> None:  # a task that outlives the request
                await asyncio.sleep(0.05)
                events.append((await receive())["type"])

            events_task.append(asyncio.create_task(late()))

    events_task: list[Any] = []
    return app


async def test_concurrent_receive_and_send_from_asyncio_tasks() -> None:
    events: list[str] = []
    async with open_server(make_crossing_app(events), loop="asyncio") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get("/concurrent")
            assert response.text == "012"
        await wait_for(events, "http.disconnect")


async def test_receive_given_up_by_asyncio_leaves_the_connection_usable() -> None:
    events: list[str] = []
    async with open_server(make_crossing_app(events), loop="asyncio") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(2):  # the same keep-alive connection serves the next request
                response = await client.get("/timeout")
                assert response.text == "after timeout"
        # A receive() after the request ended says the client is gone.
        await wait_for(events, "http.disconnect")
    assert events.count("receive timed out") == 2


async def test_starlette_is_disconnected_polls_in_asyncio_mode() -> None:
    """Starlette polls receive() inside an already-cancelled anyio scope: the crossing is
    dropped before it runs, and the request goes on."""
    from starlette.responses import StreamingResponse

    app = FastAPI()
    seen: list[bool] = []

    @app.post("/poll")
    async def poll(request: Request) -> StreamingResponse:
        body = await request.body()  # first: a poll would consume a waiting body chunk

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                seen.append(await request.is_disconnected())
                yield b"tick\n"
            yield b"body %d\n" % len(body)

        return StreamingResponse(chunks())

    async with open_server(app, loop="asyncio") as server, httpx.AsyncClient() as client:
        for _ in range(2):
            response = await client.post(server.url + "/poll", content=b"12345")
            assert response.text == "tick\ntick\ntick\nbody 5\n"
    assert seen == [False] * 6


async def test_in_memory_client_runs_asyncio_apps() -> None:
    from trioserve.testing import open_memory_client

    events: list[str] = []
    async with open_memory_client(make_mixed_app(events), loop="asyncio") as client:
        response = await client.get("/asyncio")
        assert response.json() == {"results": ["created", 3], "same_loop": True}
        assert (await client.get("/anyio")).json() == {"library": "asyncio"}
    assert events == ["startup", "shutdown same-loop=True"]


async def test_asyncio_example(caplog: pytest.LogCaptureFixture) -> None:
    from examples import asyncio_app

    async with (
        open_server(asyncio_app.app, loop="asyncio") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        response = await client.post("/upper", params={"text": "trio"})
        assert response.json() == {"result": "TRIO"}
    # The worker task was stopped by lifespan shutdown, so nothing was reported as leaked.
    assert not [r for r in caplog.records if "still running at shutdown" in r.getMessage()]


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # Starlette's un-closed generator
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_fastapi_example_features_in_asyncio_mode() -> None:
    """Thread pool (def endpoints), background tasks, streaming, a client leaving a stream."""
    from examples import fastapi_app

    fastapi_app.events.clear()
    async with (
        open_server(fastapi_app.app, loop="asyncio") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert (await client.get("/items/1")).json() == {"id": 1, "name": "apple"}
        assert (await client.post("/items", json={"name": "pear"})).status_code == 422
        assert (await client.get("/sync")).json()["thread"] != "MainThread"
        assert (await client.post("/notify")).json() == {"status": "queued"}
        await client.get("/items/1")
        assert "notified" in fastapi_app.events
        assert (await client.get("/stream")).text == "chunk 0\nchunk 1\nchunk 2\n"
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
            await trio.to_thread.run_sync(sock.recv, 4096)
        sent = fastapi_app.ticks_sent[0]
        await trio.sleep(0.3)
        settled = fastapi_app.ticks_sent[0]
        await trio.sleep(0.3)
        assert fastapi_app.ticks_sent[0] == settled, (sent, settled)  # the stream ended
    assert fastapi_app.events[-1] == "shutdown"


def test_missing_service_skips_naming_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import services

    monkeypatch.setattr(services.shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setattr(services.glob, "glob", lambda pattern: [])
    monkeypatch.delenv("CI_REQUIRE_SERVICES", raising=False)
    starters = ((services.run_redis, "redis-server"), (services.run_postgres, "postgresql"))
    for start, package in starters:
        with pytest.raises(pytest.skip.Exception, match=f"Debian package {package}$"), start():
            pass  # pragma: no cover
    monkeypatch.setenv("CI_REQUIRE_SERVICES", "1")  # as .ci/run sets it: a failure there
    with pytest.raises(pytest.fail.Exception, match="redis-server"), services.run_redis():
        pass  # pragma: no cover


async def test_bare_trio_call_in_asyncio_mode_gets_the_reverse_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await trio.sleep(0)  # needs trio_as_aio in asyncio mode

    async with (
        open_server(app, loop="asyncio", raise_app_exceptions=False) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        for _ in range(2):
            assert (await client.get("/")).status_code == 500
    [hint] = [r for r in caplog.records if "trio_as_aio" in r.getMessage()]
    assert "Task got bad yield" in hint.getMessage()
    assert hint_records(caplog) == [hint]  # and no advice to use --loop asyncio

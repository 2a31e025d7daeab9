"""``loop = "asyncio"`` without external services: the option, asyncio/trio/anyio code in one
app, the testing helpers, and the hints (trio mode: --loop asyncio; asyncio mode: no trio code)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sniffio
import trio
import trio.testing
from fastapi import FastAPI, Request, WebSocket

from trioserve.config import ConfigError
from trioserve.errors import LifespanFailure
from trioserve.run import make_config
from trioserve.server.asyncio_bridge import app_runner, needs_asyncio
from trioserve.testing import open_server, ws_connect

from ..supervisor.procs import Server

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


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
async def test_loop_that_cannot_start_leaves_no_socket_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop's wake-up socket pairs are made before its thread starts: a loop that fails
    to start (a broken uvloop) closes them all, and ends the trio task that waits on one."""
    from trioserve.server import asyncio_loop

    def broken_loop() -> asyncio.AbstractEventLoop:
        raise RuntimeError("no loop here")

    monkeypatch.setattr(asyncio_loop, "new_event_loop", broken_loop)
    before = sorted(Path("/proc/self/fd").iterdir())
    with pytest.raises(RuntimeError, match="no loop here"):
        async with asyncio_loop.AsyncioLoop().open():
            pass  # pragma: no cover - never reached
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(Path("/proc/self/fd").iterdir()) == before


def test_trio_mode_never_starts_an_asyncio_loop() -> None:
    """A default server makes no asyncio loop or thread: the bridge is not even imported."""
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
    print("bridge imported:", "trioserve.server.asyncio_loop" in sys.modules)

trio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.stdout.strip() == "bridge imported: False", done.stderr


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
        assert asyncio.current_task() is not None
        # asyncio.timeout() (3.11+) needs a real asyncio task; wait_for() before that.
        timeout = asyncio.timeout(5) if sys.version_info >= (3, 11) else contextlib.nullcontext()
        async with timeout, app.state.lock:
            await asyncio.wait_for(asyncio.sleep(0.001), 5)
        task = asyncio.create_task(asyncio.sleep(0.001, "created"))
        threaded = asyncio.get_running_loop().run_in_executor(None, sum, [1, 2])
        results = await asyncio.gather(task, threaded)
        return {"results": results, "same_loop": asyncio.get_running_loop() is app.state.loop}

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
    events: list[str] = []
    app = make_mixed_app(events)
    async with open_server(app, loop="asyncio") as server:
        assert events == ["startup"]
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(2):  # the loop made at startup serves every request
                response = await client.get("/asyncio")
                assert response.json() == {"results": ["created", 3], "same_loop": True}
            assert (await client.get("/anyio")).json() == {"library": "asyncio"}
        async with ws_connect(server, "/ws") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi from asyncio"
    assert events == ["startup", "shutdown same-loop=True"]


# -- the garbage collector ------------------------------------------------------------------
async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_heap_of_startup_is_frozen_while_serving_then_released() -> None:
    """A full collection must not rescan the app's start-up heap under load (its 40-50 ms
    stalls were the asyncpg route's p99), and the process gets its collector back after."""
    gc.unfreeze()  # whatever an earlier test left
    async with open_server(plain_app, loop="asyncio") as server:
        assert gc.get_freeze_count() > 0
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url)).status_code == 204
    assert gc.get_freeze_count() == 0


async def test_heap_frozen_by_the_app_is_left_to_the_app() -> None:
    gc.unfreeze()
    gc.freeze()  # as a pre-forking parent would
    try:
        async with open_server(plain_app, loop="asyncio"):
            pass
        assert gc.get_freeze_count() > 0  # not unfrozen under the app's feet
    finally:
        gc.unfreeze()


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
    """In a fresh process, as a user would meet it."""
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
            await trio.sleep(0)  # trio code cannot run on the asyncio loop

    async with (
        open_server(app, loop="asyncio", raise_app_exceptions=False) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        for _ in range(2):
            assert (await client.get("/")).status_code == 500
    [hint] = [r for r in caplog.records if "use anyio or asyncio" in r.getMessage()]
    assert "Task got bad yield" in hint.getMessage()
    assert hint_records(caplog) == [hint]  # and no advice to use --loop asyncio


async def test_base_http_middleware_in_asyncio_mode() -> None:
    """Starlette's BaseHTTPMiddleware runs the endpoint in its own task: crossings overlap."""
    from starlette.responses import Response, StreamingResponse

    app = FastAPI()

    @app.middleware("http")
    async def mark(request: Request, call_next: Any) -> Response:
        await asyncio.sleep(0)
        response: Response = await call_next(request)
        response.headers["x-middleware"] = "asyncio"
        return response

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(0.001)
                yield b"%d\n" % i

        return StreamingResponse(chunks())

    async with (
        open_server(app, loop="asyncio") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        for _ in range(3):
            echoed = await client.post("/echo", content=b"a" * 200_000)
            assert echoed.json() == {"length": 200_000}
            assert echoed.headers["x-middleware"] == "asyncio"
            streamed = await client.get("/stream")
            assert streamed.text == "0\n1\n2\n"
            assert streamed.headers["x-middleware"] == "asyncio"

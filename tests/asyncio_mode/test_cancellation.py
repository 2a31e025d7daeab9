"""``loop = "asyncio"``: disconnects, cancellation (deadline, asyncio giving up, an app
cancelling itself), leaked tasks and receive()/send() crossings."""

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

import httpx
import pytest
import trio
from fastapi import FastAPI, Request

from trioserve.errors import ClientDisconnected
from trioserve.testing import open_server

from ..supervisor.procs import Server, wait_until

if sys.version_info < (3, 11):  # pragma: no cover
    pass

ROOT = Path(__file__).resolve().parents[2]


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

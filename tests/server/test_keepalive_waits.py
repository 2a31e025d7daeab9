"""Keep-alive waits on plain sockets end by the server's KeepAliveWaits, not a scope each.

Each wait's deadline is its own: a connection that keeps sending requests is never closed
by a deadline of an earlier wait of its own or of another connection, and an idle one is
closed once its own wait runs out.
"""

from __future__ import annotations

import contextvars
import socket
from typing import Any

import trio

from trioserve.testing import open_server

from ..rawhttp import read_until_close

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"hi"})


async def one_response(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while not data.endswith(b"hi"):
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
    return data


async def test_busy_connection_outlives_earlier_deadlines_and_idle_one_closes() -> None:
    async with open_server(hello, keep_alive_timeout=0.4) as server:
        idle = await trio.open_tcp_stream(server.host, server.port)
        busy = await trio.open_tcp_stream(server.host, server.port)
        async with idle, busy:
            start = trio.current_time()
            closed_after = None

            async def watch_idle() -> None:
                nonlocal closed_after
                assert await read_until_close(idle) == b""
                closed_after = trio.current_time() - start

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_idle)
                # Requests every 0.15 s for over three timeouts: each wait is shorter
                # than the timeout, so every one must be answered on the same connection.
                for _ in range(10):
                    await busy.send_all(REQUEST)
                    assert (await one_response(busy)).startswith(b"HTTP/1.1 200 ")
                    await trio.sleep(0.15)
            assert closed_after is not None and 0.3 < closed_after < 1.4
            # And the busy one, idle now, is closed by its own last wait.
            assert await read_until_close(busy) == b""


async def test_waits_of_two_timeouts_end_in_their_own_time() -> None:
    # keep_alive_timeout=0 turns keep-alive off: a new connection then waits for its
    # first request as long as request_head_timeout, another group of waits.
    async with open_server(hello, keep_alive_timeout=0, request_head_timeout=0.3) as server:
        streams = [await trio.open_tcp_stream(server.host, server.port) for _ in range(3)]
        start = trio.current_time()
        for stream in streams:
            assert await read_until_close(stream) == b""
            await stream.aclose()
        assert trio.current_time() - start < 2.0


class ReaperSteps(trio.abc.Instrument):
    """How often the server's keep-alive task ran, and the contexts it ran in."""

    def __init__(self) -> None:
        self.steps = 0
        self.tasks: list[trio.lowlevel.Task] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == "trioserve.keep_alive_waits":
            self.steps += 1
            if task not in self.tasks:
                self.tasks.append(task)


async def test_an_idle_server_does_not_wake_its_keep_alive_task() -> None:
    """Once no connection waits, the task sleeps until a wait is added (it used to look
    again every timeout: with a timeout of 0 it spun at 100 % CPU)."""
    steps = ReaperSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        async with open_server(hello, keep_alive_timeout=0.02) as server:
            stream = await trio.open_tcp_stream(server.host, server.port)
            async with stream:
                await stream.send_all(REQUEST)
                await one_response(stream)
                assert await read_until_close(stream) == b""  # its wait ran out
            before = steps.steps
            await trio.sleep(0.5)  # 25 timeouts
            assert steps.steps - before <= 1
    finally:
        trio.lowlevel.remove_instrument(steps)


MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark")


async def marking(scope: dict[str, Any], receive: Any, send: Any) -> None:
    MARK.set("set by the first request's app")
    await hello(scope, receive, send)


async def test_the_keep_alive_task_keeps_nothing_an_app_set() -> None:
    steps = ReaperSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        async with open_server(marking, keep_alive_timeout=5) as server:
            # Connected and sent before the server runs again: its first request is served
            # before the connection ever waits, so the first wait (which starts the task)
            # comes after the app set its variable in the connection's own context.
            sock = socket.create_connection((server.host, server.port))
            sock.sendall(REQUEST)
            sock.setblocking(False)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            async with stream:
                await one_response(stream)
                with trio.fail_after(5):
                    while not steps.tasks:
                        await trio.sleep(0.01)
                assert MARK not in steps.tasks[0].context
    finally:
        trio.lowlevel.remove_instrument(steps)

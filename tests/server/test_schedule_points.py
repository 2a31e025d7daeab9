"""Where an HTTP/1.1 connection yields to the scheduler around a response (issue 25).

The write that completes a response is not a schedule point inside the app's ``send()``:
the app's stack (FastAPI's twenty-odd coroutine frames) is not suspended and resumed, after
every other connection had its turn, just to return from its last ``send()``. The
connection takes that schedule point once the request is done instead, so a client whose
requests are always there already (pipelined) still cannot keep the others from running.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from trioserve.testing import open_server

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HEADERS = [(b"content-length", b"2")]


@pytest.fixture(params=["h11", "httptools"])
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def read_responses(stream: trio.abc.Stream, count: int) -> bytes:
    data = b""
    while data.count(b"HTTP/1.1 200 ") < count or not data.endswith(b"hi"):
        chunk = await stream.receive_some(65536)
        assert chunk, data
        data += chunk
    return data


class TaskSteps(trio.abc.Instrument):
    """How many times each task was resumed by the scheduler (after a schedule point)."""

    def __init__(self) -> None:
        self.steps: Counter[trio.lowlevel.Task] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] += 1


@pytest.fixture
async def task_steps() -> AsyncIterator[TaskSteps]:
    instrument = TaskSteps()
    trio.lowlevel.add_instrument(instrument)
    yield instrument
    trio.lowlevel.remove_instrument(instrument)


async def test_the_last_send_does_not_suspend_the_app(http: str, task_steps: TaskSteps) -> None:
    suspended: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        task = trio.lowlevel.current_task()
        before = task_steps.steps[task]
        await send({"type": "http.response.body", "body": b"hi"})
        suspended.append(task_steps.steps[task] != before)

    async with open_server(app, http=http) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            for _ in range(3):
                await stream.send_all(GET)
                await read_responses(stream, 1)
    assert suspended == [False, False, False]


async def test_pipelined_requests_still_yield_between_them(
    http: str, task_steps: TaskSteps
) -> None:
    steps: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        steps.append(task_steps.steps[trio.lowlevel.current_task()])
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b"hi"})

    async with open_server(app, http=http) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(GET * 20)  # all there before the first is answered
            await read_responses(stream, 20)
    assert len(steps) == 20
    # The connection's task went through the scheduler between every two requests.
    assert all(later > earlier for earlier, later in itertools.pairwise(steps))

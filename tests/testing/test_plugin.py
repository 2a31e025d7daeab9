"""The pytest plugin, run on generated test files with pytester.

The inner runs are in-process (a subprocess costs seconds each). These tests are sync on
purpose: the inner pytest run starts its own ``trio.run``.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run the inner pytest in-process, leaving garbage collected meanwhile to the outer run.

    Without ``no:unraisableexception`` the inner run would count a ResourceWarning for an
    object some earlier outer test dropped, and report an error that isn't its own.
    """
    return pytester.runpytest("-p", "no:unraisableexception", "-p", "no:cacheprovider", *args)


TRIO_MODE_INI = """
[pytest]
trio_mode = true
filterwarnings = error
"""

APP = """
from contextlib import asynccontextmanager

import trio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from trioserve.testing import ws_connect

@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello"}

async def home(request):
    return JSONResponse({"greeting": request.state.greeting})

async def boom(request):
    raise ValueError("kaboom-from-the-app")

async def events(request):
    async def gen():
        yield "data: 1\\n\\n"
        yield "data: 2\\n\\n"
    return StreamingResponse(gen(), media_type="text/event-stream")

async def ws(websocket):
    await websocket.accept()
    await websocket.send_text((await websocket.receive_text()).upper())
    await websocket.close()

app = Starlette(
    routes=[Route("/", home), Route("/boom", boom), Route("/events", events),
            WebSocketRoute("/ws", ws)],
    lifespan=lifespan,
)
"""


def test_fixtures_pass_in_trio_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE_INI)
    pytester.makepyfile(
        APP
        + """
async def test_live_server(trioserve_server):
    server = await trioserve_server(app)
    async with ws_connect(server, "/ws") as socket:
        await socket.send_text("hi")
        assert await socket.receive_text() == "HI"

async def test_live_client(trioserve_client):
    client = await trioserve_client(app)
    assert (await client.get("/")).json() == {"greeting": "hello"}
    assert (await client.get("/events")).text == "data: 1\\n\\ndata: 2\\n\\n"

async def test_client_for_a_running_server(trioserve_server, trioserve_client):
    server = await trioserve_server(app, include_server_header=False)
    client = await trioserve_client(server)
    response = await client.get("/")
    assert "server" not in response.headers

async def test_memory_client(trioserve_memory_client, autojump_clock):
    client = await trioserve_memory_client(app)
    assert (await client.get("/")).json() == {"greeting": "hello"}
    async with ws_connect(client, "/ws") as socket:
        await socket.send_text("mem")
        assert await socket.receive_text() == "MEM"
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=4)


def test_failing_app_fails_the_test_with_its_exception(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_MODE_INI)
    pytester.makepyfile(
        APP
        + """
async def test_in_memory(trioserve_memory_client):
    client = await trioserve_memory_client(app)
    await client.get("/boom")

async def test_live(trioserve_client):
    client = await trioserve_client(app)
    response = await client.get("/boom")
    assert response.status_code == 500  # passes: the failure comes from the app itself
"""
    )
    result = run(pytester)
    outcomes = result.parseoutcomes()
    # The in-memory test fails in its call; the live one in its teardown.
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) >= 2
    assert outcomes.get("passed", 0) <= 1
    output = result.stdout.str()
    assert output.count("ValueError: kaboom-from-the-app") >= 2
    result.stdout.fnmatch_lines(["*test_in_memory*", "*test_live*"])


def test_clear_error_without_pytest_trio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
async def test_uses_it(trioserve_server):
    pass
"""
    )
    result = run(pytester, "-p", "no:trio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*trioserve fixtures (trioserve_server)*need pytest-trio*"])


def test_clear_error_for_a_test_that_is_not_a_trio_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
def test_sync(trioserve_memory_client):
    pass
"""
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*run in trio*trio_mode = true*pytest.mark.trio*"])


def test_harmless_for_projects_that_do_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = run(pytester, "-p", "no:trio")
    result.assert_outcomes(passed=1)

"""The lifespan protocol around a real server: modes, timeouts, failures, state."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from trioserve import Config, LifespanFailure, serve
from trioserve.run import make_config
from trioserve.testing import open_server
from trioserve.testing.memory import InMemoryTransport

Scope = MutableMapping[str, Any]


def config(**options: Any) -> Config:
    options.setdefault("bind", ["127.0.0.1:0"])
    return make_config(environ={}, **options)


async def answer(send: Any, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LifespanApp:
    """Configurable lifespan behaviour; HTTP requests report what they see in state."""

    def __init__(self, *, startup: str = "complete", shutdown: str = "complete") -> None:
        self.startup = startup
        self.shutdown = shutdown
        self.calls: list[str] = []
        self.seen_states: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.calls.append("lifespan")
            assert scope["asgi"]["version"] == "3.0"
            if self.startup == "return":
                return
            if self.startup == "raise":
                raise RuntimeError("no lifespan here")
            message = await receive()
            assert message["type"] == "lifespan.startup"
            if self.startup == "hang":
                await trio.sleep_forever()
            if self.startup == "failed":
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            scope["state"]["pool"] = {"connections": 1}
            scope["state"]["name"] = "app"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            self.calls.append("shutdown")
            if self.shutdown == "hang":
                await trio.sleep_forever()
            if self.shutdown == "raise":
                raise RuntimeError("shutdown exploded")
            if self.shutdown == "failed":
                await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return
        state = scope.get("state")
        self.seen_states.append(dict(state) if state is not None else {"absent": True})
        if state is not None:
            state["name"] = "changed by request"  # must not leak into the next request
            state["pool"]["connections"] += 1  # shallow copy: shared objects are shared
        await answer(send, b"ok")


async def test_startup_state_copied_shallowly_into_each_request() -> None:
    app = LifespanApp()
    async with open_server(app) as server, httpx.AsyncClient() as client:
        for _ in range(2):
            assert (await client.get(server.url)).status_code == 200
    assert app.calls == ["lifespan", "shutdown"]
    assert [s["name"] for s in app.seen_states] == ["app", "app"]
    assert app.seen_states[1]["pool"]["connections"] == 3


@pytest.mark.parametrize("behaviour", ["return", "raise"])
async def test_auto_mode_serves_an_app_without_lifespan(
    behaviour: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.error")
    app = LifespanApp(startup=behaviour)
    async with open_server(app) as server, httpx.AsyncClient() as client:
        assert (await client.get(server.url)).text == "ok"
    assert app.calls == ["lifespan"]
    assert app.seen_states == [{"absent": True}]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("behaviour", ["return", "raise"])
async def test_on_mode_requires_lifespan(behaviour: str) -> None:
    app = LifespanApp(startup=behaviour)
    with pytest.raises(LifespanFailure):
        await serve(app, config(lifespan="on"))


async def test_off_mode_never_calls_lifespan() -> None:
    app = LifespanApp()
    async with open_server(app, lifespan="off") as server, httpx.AsyncClient() as client:
        assert (await client.get(server.url)).text == "ok"
    assert app.calls == []


async def test_startup_failed_raises_lifespan_failure_from_nursery_start() -> None:
    app = LifespanApp(startup="failed")
    async with trio.open_nursery() as nursery:
        with pytest.raises(LifespanFailure, match="no database"):
            await nursery.start(serve, app, config())


async def test_startup_failed_through_serve_directly() -> None:
    """``await serve(...)`` itself raises LifespanFailure, not an ExceptionGroup."""
    app = LifespanApp(startup="failed")
    with pytest.raises(LifespanFailure, match="no database"):
        await serve(app, config())


async def test_startup_timeout() -> None:
    app = LifespanApp(startup="hang")
    start = trio.current_time()
    with pytest.raises(LifespanFailure, match="timed out"):
        await serve(app, config(startup_timeout=0.3))
    assert 0.25 < trio.current_time() - start < 2


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("hang", "timed out"), ("raise", "shutdown"), ("failed", "flush failed")],
)
async def test_shutdown_problems_are_logged_and_serve_returns(
    behaviour: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = LifespanApp(shutdown=behaviour)
    trigger = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve, app, config(shutdown_timeout=0.3), shutdown_trigger=trigger)
            )
            trigger.set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert expected in errors[0].getMessage() or expected in str(errors[0].exc_info)


async def test_shutdown_runs_when_serve_is_cancelled() -> None:
    app = LifespanApp()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, app, config())
            nursery.cancel_scope.cancel()
    assert app.calls == ["lifespan", "shutdown"]


@pytest.mark.parametrize(("startup", "shutdown"), [("hang", "complete"), ("complete", "hang")])
async def test_lifespan_task_never_outlives_its_owner(startup: str, shutdown: str) -> None:
    """The lifespan task is shielded from outside cancellation, so Lifespan itself must end
    it on a failed startup and after shutdown: here through the in-memory transport, which
    drives Lifespan without serve()."""
    app = LifespanApp(startup=startup, shutdown=shutdown)
    transport = InMemoryTransport(app, startup_timeout=0.2, shutdown_timeout=0.2)
    with trio.fail_after(5):
        if startup == "hang":
            with pytest.raises(LifespanFailure):
                async with transport:
                    pass
        else:
            async with transport:
                pass

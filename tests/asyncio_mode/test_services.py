"""Asyncio-only libraries against a real PostgreSQL and Redis, under ``--loop asyncio``.

The same checks (:mod:`.scenario`) run in process through the testing helpers
(``open_server(..., loop="asyncio")`` and the pytest fixture) and as ``trioserve --loop
asyncio --workers 2`` subprocesses.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import open_server

from ..supervisor.procs import Server
from . import scenario
from .services import Postgres, Redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def svc_env(
    postgres: Postgres, redis_server: Redis, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        "SVC_PG_DSN": postgres.dsn,
        "SVC_SA_URL": postgres.sqlalchemy_url,
        "SVC_REDIS_URL": redis_server.url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


async def test_fastapi_services_in_process(svc_env: dict[str, str]) -> None:
    from . import svc_app

    async with open_server(scenario.upstream_app) as upstream:
        os.environ["SVC_UPSTREAM_URL"] = upstream.url + "/hello"
        async with (
            open_server(svc_app.app, loop="asyncio", graceful_timeout=5) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            await scenario.check_queries(client)
            await scenario.check_rollback_on_disconnect(client, server.port)
            await scenario.check_pubsub_fanout(server.ws_url, client)
            assert svc_app.CLOSED == []
    # Lifespan shutdown closed every client, in asyncio, on the loop that made them.
    assert svc_app.CLOSED == ["aiohttp", "redis", "sqlalchemy", "asyncpg"]


async def test_fastapi_services_through_pytest_fixture(
    svc_env: dict[str, str],
    trioserve_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> None:
    from . import svc_app

    client = await trioserve_client(svc_app.app, loop="asyncio")
    for _ in range(3):
        response = await client.get("/pg")
        assert response.status_code == 200, response.text
        assert response.json()["value"] == 42
    assert (await client.get("/sqlalchemy")).json()["value"] == 42


@pytest.fixture
def workers(svc_env: dict[str, str]) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(app: str, *args: str, env: dict[str, str] | None = None) -> Server:
        argv = [app, "--loop", "asyncio", "--workers", "2", "--port", "0", "--no-access-log"]
        server = Server(ROOT, [*argv, *args], env={**svc_env, **(env or {})})
        servers.append(server)
        server.wait_serving(workers=2, timeout=60)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def _stop_cleanly(server: Server) -> None:
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0, server.output


async def test_fastapi_services_two_workers(workers: Callable[..., Server]) -> None:
    async with open_server(scenario.upstream_app) as upstream:
        server = await trio.to_thread.run_sync(
            lambda: workers(
                "tests.asyncio_mode.svc_app:app",
                env={"SVC_UPSTREAM_URL": upstream.url + "/hello"},
            )
        )
        url = f"http://127.0.0.1:{server.port}"
        pids: set[int] = set()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await scenario.check_queries(client)
            await scenario.check_rollback_on_disconnect(client, server.port)
            await scenario.check_pubsub_fanout("ws" + url[4:], client)
            for _ in range(40):  # fresh connections: both workers answer
                async with httpx.AsyncClient(base_url=url, timeout=10) as fresh:
                    pids.add((await fresh.get("/pg")).json()["pid"])
                if len(pids) == 2:
                    break
        assert len(pids) == 2, pids
        await trio.to_thread.run_sync(_stop_cleanly, server)
    # Each worker closed its own clients at shutdown, and nothing failed on the way.
    assert len(server.wait_for(r"svc_app \d+: clients closed", n=2)) == 2  # matches, not lines
    assert "Traceback" not in server.output, server.output
    assert "still running at shutdown" not in server.output  # a clean app leaks nothing


def test_django_two_workers(workers: Callable[..., Server]) -> None:
    server = workers("tests.asyncio_mode.django_asgi:application")
    pids: set[int] = set()
    for _ in range(40):
        response = httpx.get(f"http://127.0.0.1:{server.port}/info", timeout=10)
        assert response.status_code == 200, server.output
        body: dict[str, Any] = response.json()
        assert body["task"] is True and body["other_thread"] is True
        pids.add(body["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2
    streamed = httpx.get(f"http://127.0.0.1:{server.port}/stream", timeout=10)
    assert streamed.text == "chunk 0\nchunk 1\nchunk 2\n"
    _stop_cleanly(server)
    assert "Traceback" not in server.output, server.output


def test_asyncpg_app_without_the_flag_says_what_to_do(svc_env: dict[str, str]) -> None:
    """The same app, started as a user would before learning about --loop asyncio."""
    args = ["tests.asyncio_mode.svc_app:app", "--port", "0", "--lifespan", "on"]
    server = Server(ROOT, args, env={**svc_env, "SVC_UPSTREAM_URL": "http://127.0.0.1:9/"})
    try:
        assert server.proc.wait(timeout=60) == 3, server.output  # startup failed
        server.wait_for("<EOF>")
        assert server.count("--loop asyncio") == 1, server.output
        assert server.count("Application startup failed") == 1, server.output
    finally:
        server.stop()


async def test_benchmark_app_answers_in_both_modes(
    postgres: Postgres, redis_server: Redis
) -> None:
    """benchmarks/asyncio_mode.py would otherwise silently measure errors."""
    bench_dir = str(ROOT / "benchmarks")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    import asyncio_app  # type: ignore[import-not-found]

    os.environ["BENCH_PG_DSN"] = postgres.dsn
    os.environ["BENCH_REDIS_URL"] = redis_server.url
    try:
        async with open_server(asyncio_app.app) as server, httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/json")).json()["ok"] is True
            assert (await client.get(server.url + "/db")).status_code == 503
            assert (await client.get(server.url + "/redis")).status_code == 503
        async with (
            open_server(asyncio_app.app, loop="asyncio") as server,
            httpx.AsyncClient() as client,
        ):
            assert (await client.get(server.url + "/json")).json()["ok"] is True
            assert (await client.get(server.url + "/db")).json() == {"value": 42}
            assert (await client.get(server.url + "/redis")).json() == {"value": "hello"}
    finally:
        del os.environ["BENCH_PG_DSN"], os.environ["BENCH_REDIS_URL"]

"""Smoke test of the benchmark harness's own parts (no wrk, no peer servers, a few seconds).

The benchmark app must answer every scenario correctly on trioserve, and the Python load
generator must speak wrk's output format, or a benchmark run would silently measure errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import open_server

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bench_apps  # type: ignore[import-not-found]  # noqa: E402
import loads  # type: ignore[import-not-found]  # noqa: E402


async def pyload(url: str, *extra: str) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "pyload.py"), "-t1", "-c2", "-d0.5s", "--latency", *extra]
    result = await trio.run_process([*argv, url], capture_stdout=True, capture_stderr=True)
    parsed: dict[str, Any] = loads.parse_wrk(result.stdout.decode())
    return parsed


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/", ()),
        ("/", ("-H", "Connection: close")),
        ("/echo", ("-s", str(BENCH / "post.lua"))),
        ("/json", ()),
        ("/big", ()),
    ],
)
async def test_scenarios_answer_and_pyload_speaks_wrk(path: str, extra: tuple[str, ...]) -> None:
    async with open_server(bench_apps.app, log_level="warning", access_log=False) as server:
        stats = await pyload(f"http://127.0.0.1:{server.port}{path}", *extra)
    assert stats["rps"] and stats["rps"] > 0
    assert stats["requests"] > 0
    assert stats["p99_ms"] is not None
    assert stats["non2xx"] == 0
    assert not any(stats["socket_errors"].values())


async def test_post_echo_returns_the_body() -> None:
    body = b"0123456789abcdef" * 4096  # 64 KiB, as the post scenario sends
    async with open_server(bench_apps.app) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            data = b""
            while not data.endswith(body):
                chunk = await stream.receive_some(65536)
                assert chunk
                data += chunk
    head, _, echoed = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert echoed == body


@pytest.mark.parametrize(
    "layer", [["h11"], ["sansio"], ["sansio", "--http", "httptools"]], ids=" ".join
)
async def test_layer_servers_answer_hello_and_close(layer: list[str]) -> None:
    """benchmarks/layers.py must serve what the hello and close scenarios send."""
    argv = [sys.executable, "layers.py", "--layer", *layer, "--port", "0"]
    proc = subprocess.Popen(argv, cwd=BENCH, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = await trio.to_thread.run_sync(proc.stderr.readline)
        port = int(line.rsplit(":", 1)[1])
        async with httpx.AsyncClient() as client:
            for _ in range(3):  # keep-alive: the same connection serves them all
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert response.status_code == 200
                assert response.text == "Hello, world!"
            response = await client.get(
                f"http://127.0.0.1:{port}/", headers={"connection": "close"}
            )
            assert response.text == "Hello, world!"
            assert response.headers["connection"] == "close"
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


async def start_script(*argv: str) -> tuple[subprocess.Popen[str], int]:
    """A benchmarks/ server script on a free port; the port from its 'listening on' line."""
    proc = subprocess.Popen(
        [sys.executable, *argv, "--port", "0"], cwd=BENCH, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    line = await trio.to_thread.run_sync(proc.stderr.readline)
    return proc, int(line.rsplit(":", 1)[1])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


async def test_http_ceiling_answers_pipelined_and_close() -> None:
    proc, port = await start_script("ceilings.py", "--kind", "http")
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
        assert data.count(b"Hello, world!") == 3
        assert data.endswith(b"Connection: close\r\n\r\nHello, world!")
    finally:
        stop(proc)


@pytest.mark.parametrize("script", [["ceilings.py", "--kind", "ws"], ["bench_apps"]], ids=str)
async def test_ws_client_measures_echo_round_trips(script: list[str]) -> None:
    """ws_client.py (the WebSocket load generator) against the ws ceiling and the bench app."""
    if script == ["bench_apps"]:
        async with open_server(bench_apps.app, log_level="warning", access_log=False) as server:
            result = await ws_client(server.port)
    else:
        proc, port = await start_script(*script)
        try:
            result = await ws_client(port)
        finally:
            stop(proc)
    assert result["errors"] == 0, result
    assert result["messages"] > 10


async def ws_client(port: int) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "ws_client.py"), f"ws://127.0.0.1:{port}/"]
    done = await trio.run_process([*argv, "-c", "2", "-d", "0.5"], capture_stdout=True)
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.mark.timeout(180)  # several servers started one after another; slow on a busy machine
def test_run_py_end_to_end(tmp_path: Path) -> None:
    """benchmarks/run.py from a plain checkout: starts the servers, drives them, reports."""
    argv = [sys.executable, str(BENCH / "run.py"), "--quick", "--scenario", "hello", "ws"]
    argv += ["--only", "trioserve", "ceiling-trio", "ceiling-ws-trio", "--baseline", "trioserve"]
    argv += ["--quiet-wait", "0", "--ws-conns", "2", "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    runs = {(r["scenario"], r["server"]): r for r in data["runs"]}
    for key in [("hello", "trioserve"), ("hello", "ceiling-trio"), ("ws", "ceiling-ws-trio")]:
        assert not runs[key].get("error"), runs[key]
    assert runs[("hello", "trioserve")]["rps"] > 0
    assert runs[("ws", "trioserve")]["msgs_per_s"] > 0
    assert "### hello" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("scenario", ["multipart", "stream", "stream-4k", "raw"])
async def test_upload_scenarios_answer_with_the_whole_body(scenario: str) -> None:
    """benchmarks/uploads.py: each scenario's request reaches its route whole on trioserve
    (the client checks the size the app reports)."""
    import upload_app  # type: ignore[import-not-found]
    import uploads  # type: ignore[import-not-found]

    request = uploads.build_request(scenario, bytes(uploads.SIZE))
    async with open_server(upload_app.app, log_level="warning", access_log=False) as server:
        elapsed, result = await trio.to_thread.run_sync(uploads.upload_once, server.port, request)
    assert result["size"] == uploads.SIZE
    assert elapsed > 0
    if scenario != "multipart":
        assert result["pieces"] >= 1


def test_fastapi_driver_runs_the_json_route_on_each_loop() -> None:
    """benchmarks/fastapi_driver.py: the json route without a server, on trio and asyncio
    (uvloop where installed), a figure per loop, and run.py's table of them."""
    argv = [sys.executable, str(BENCH / "fastapi_driver.py"), "--json", "-n", "50"]
    done = subprocess.run([*argv, "--rounds", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["unit"] == "us"
    assert {"trio", "asyncio"} <= set(result["per_request"])
    assert all(us > 0 for us in result["per_request"].values())
    import run  # type: ignore[import-not-found]

    table = "\n".join(run.framework_table({"framework": result}))
    assert "| trio |" in table and "| asyncio |" in table


def test_fastapi_driver_counts_the_same_framework_calls_on_trio_and_asyncio() -> None:
    """The route checks its response (a broken route would measure an error page), and
    without a server nothing yields, so FastAPI's calls per request do not depend on the
    loop: a difference under load is the server's."""
    import fastapi_driver  # type: ignore[import-not-found]

    on_trio = fastapi_driver.count_calls("trio", 20)
    on_asyncio = fastapi_driver.count_calls("asyncio", 20)
    assert 50 < on_trio == on_asyncio < 2000


@pytest.mark.parametrize("part", ["parse", "fresh", "cycle"])
def test_parse_cost_runs_each_part_on_each_parser(part: str) -> None:
    """benchmarks/parse_cost.py: its requests parse as one bodiless request each (it checks)."""
    for http in ("httptools", "h11"):
        for request in ("wrk", "browser"):
            argv = [sys.executable, str(BENCH / "parse_cost.py"), "--http", http]
            argv += ["--request", request, "--part", part, "-n", "20", "--time"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr[-2000:]
            assert done.stdout.endswith("us per request\n")

"""Smoke test of the benchmark harness's own parts (no wrk, a few seconds).

The benchmark app must answer every scenario correctly on trioserve, and the Python load
generator must speak wrk's output format, or a benchmark run would silently measure errors.
"""

from __future__ import annotations

import os
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
TOOLS = Path(os.environ.get("TRIOSERVE_BENCH_TOOLS", ROOT.parent / "shared" / "tools" / "bench"))

if not (TOOLS / "harness.py").exists():  # pragma: no cover - the shared folder is beside us
    if os.environ.get("CI"):
        raise RuntimeError(f"shared bench tools missing at {TOOLS}")
    pytest.skip("shared bench tools not found", allow_module_level=True)

for path in (str(BENCH), str(TOOLS)):
    if path not in sys.path:
        sys.path.insert(0, path)

import bench  # type: ignore[import-not-found]  # noqa: E402
import bench_apps  # type: ignore[import-not-found]  # noqa: E402


async def pyload(url: str, *extra: str) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "pyload.py"), "-t1", "-c2", "-d0.5s", "--latency", *extra]
    result = await trio.run_process([*argv, url], capture_stdout=True, capture_stderr=True)
    parsed: dict[str, Any] = bench.parse_wrk(result.stdout.decode())
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

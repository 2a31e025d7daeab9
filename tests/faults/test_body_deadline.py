"""Item 4: bodies that trickle are cut by the body deadline and answered 408.

Before, ``read_timeout`` timed each stalled read (one byte every 2 s was never cut) and,
when it fired, the connection was closed without a 408. Also here: slowhttptest's slow
body (-B) and slow read (-X) attacks, bounded, against a server in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any

import pytest
import trio

from trioserve.testing import open_server

from ..conftest import ROOT
from ..programs import require_program
from ..rawhttp import read_until_close
from ..supervisor.procs import Server

BODY_TIMEOUT = 1.0
MIN_RATE = 100.0


def reading_app(seen: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.append("disconnect")
                return
            total += len(message["body"])
            if not message["more_body"]:
                break
        seen.append(f"body {total}")
        body = b"%d" % total
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


async def trickle(port: int, head: bytes, pieces: list[bytes], interval: float) -> bytes:
    """Send the head, then one piece every ``interval``; return what the server answered."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head)

        async def feed() -> None:
            try:
                for piece in pieces:
                    await trio.sleep(interval)
                    await stream.send_all(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            answer = await read_until_close(stream, timeout=15)
            nursery.cancel_scope.cancel()
    return answer


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_trickled_body_is_cut_with_408(framing: str) -> None:
    seen: list[str] = []
    if framing == "content-length":
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        pieces = [b"a"] * 1000
    else:  # one byte per chunk: the framing trickles too
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        pieces = [b"1\r\na\r\n"] * 1000
    async with open_server(
        reading_app(seen), request_body_timeout=BODY_TIMEOUT, request_body_min_rate=MIN_RATE
    ) as server:
        start = trio.current_time()
        answer = await trickle(server.port, head, pieces, 0.1)
        held = trio.current_time() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert seen == ["disconnect"]
    # 10 bytes/s earn 0.1 s/s at 100 bytes/s: cut at ~1.1 s.
    assert BODY_TIMEOUT <= held < BODY_TIMEOUT + 1.5, held


async def test_steady_upload_above_the_minimum_rate_is_not_cut() -> None:
    """3 s of upload at 2,000 bytes/s: past the 1 s base, earned back by the rate."""
    seen: list[str] = []
    head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 6000\r\n\r\n"
    async with open_server(
        reading_app(seen), request_body_timeout=BODY_TIMEOUT, request_body_min_rate=MIN_RATE
    ) as server:
        answer = await trickle(server.port, head, [b"b" * 200] * 30, 0.1)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.endswith(b"6000")
    assert seen == ["body 6000"]


async def test_read_timeout_stall_is_answered_408() -> None:
    seen: list[str] = []
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
    async with open_server(
        reading_app(seen), read_timeout=0.5, request_body_timeout=None
    ) as server:
        answer = await trickle(server.port, head, [], 0)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert seen == ["disconnect"]


def slowhttptest() -> str:
    return require_program("slowhttptest", package="slowhttptest")


def start_server(*flags: str) -> Server:
    args = ["tests.faults.apps:hello", "--bind", "127.0.0.1:0", "--backlog", "512", *flags]
    server = Server(ROOT, args)
    match = server.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")[0]
    server.port = int(match.group(1))
    return server


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slowhttptest_slow_body_is_cut() -> None:
    """slowhttptest -B, 200 connections: all closed by the body deadline, long before the
    test's own 20 s limit (before: all held until then)."""
    tool = slowhttptest()
    server = start_server("--timeout-request-body", "2", "--request-body-min-rate", "100")
    try:
        url = f"http://127.0.0.1:{server.port}/"
        argv = [tool, "-B", "-c", "200", "-r", "200", "-i", "1", "-s", "65536"]
        argv += ["-x", "10", "-p", "3", "-l", "20", "-u", url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
        ended = re.search(r"Test ended on (\d+)th second", out)
        assert ended is not None, out[-2000:]
        assert "No open connections left" in out, out[-2000:]
        assert int(ended.group(1)) < 12
        assert server.count(r"request body timed out") >= 150
        assert server.count("Traceback") == 0
    finally:
        server.stop()


def test_slowhttptest_slow_read_ends_at_the_send_deadline() -> None:
    """slowhttptest -X (a tiny window, 32 bytes read a second): every connection is reset
    when a write has waited send_timeout, and the server's descriptors come back."""
    tool = slowhttptest()
    server = start_server("--timeout-send", "2")
    try:
        baseline = open_fds(server.proc.pid)
        url = f"http://127.0.0.1:{server.port}/big"
        argv = [tool, "-X", "-c", "20", "-r", "20", "-k", "4", "-w", "1", "-y", "512"]
        argv += ["-n", "1", "-z", "32", "-p", "3", "-l", "12", "-u", url]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server.wait_for(r"send timed out", n=20, timeout=10)
            deadline = time.monotonic() + 5
            while open_fds(server.proc.pid) > baseline and time.monotonic() < deadline:
                time.sleep(0.1)
            assert open_fds(server.proc.pid) <= baseline
        finally:
            proc.kill()
            proc.wait()
        assert server.count("Traceback") == 0
    finally:
        server.stop()

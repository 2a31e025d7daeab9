"""A request cut by a second Ctrl-C is logged with the status the client got.

The real CLI in a subprocess, three real client connections over loopback, SIGINT twice
(sent to the server's PID): the request that had no response yet is logged as 444 (no
response, the connection closed); those whose head had gone out (with a body, or alone
while the app waited) with the status they were sent.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.integration.test_uvicorn_dropin import start

__all__ = ["start"]  # the fixture, shared

APP = """
import logging
import trio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] in ("/streaming", "/head-only"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/streaming":
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
    logging.getLogger("uvicorn.error").info("app is inside %s", scope["path"])
    await trio.sleep_forever()
"""


def request(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_second_ctrl_c_logs_no_response_as_444(start: object, tmp_path: Path, http: str) -> None:
    (tmp_path / "cutapp.py").write_text(APP)
    server = start(  # type: ignore[operator]
        "cutapp:app",
        "--port",
        "0",
        "--http",
        http,
        "--timeout-graceful-shutdown",
        "30",
        cwd=tmp_path,
    )
    [url] = server.wait_ready()
    port = int(url.rsplit(":", 1)[1])
    waiting = request(port, "/waiting")
    streaming = request(port, "/streaming")
    head_only = request(port, "/head-only")  # the head goes out once the app waits
    for path in ("/waiting", "/streaming", "/head-only"):
        server.read_until(f"app is inside {path}")
    server.proc.send_signal(signal.SIGINT)
    server.read_until("Shutting down")
    server.proc.send_signal(signal.SIGINT)  # the second: cancel what is in flight
    assert server.stop(timeout=20) == 0
    assert read_all(waiting) == b""  # the client got no response at all
    assert read_all(streaming).startswith(b"HTTP/1.1 200 ")
    assert read_all(head_only).startswith(b"HTTP/1.1 200 ")
    access = [line for line in server.text.splitlines() if '"GET /' in line]
    assert len(access) == 3, server.text
    [cut] = [line for line in access if "/waiting" in line]
    assert '"GET /waiting HTTP/1.1" 444 ' in cut
    for path in ("/streaming", "/head-only"):
        [sent] = [line for line in access if path in line]
        assert f'"GET {path} HTTP/1.1" 200 ' in sent

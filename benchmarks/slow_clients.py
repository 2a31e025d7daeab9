"""How long each kind of slow client holds a connection, measured against a real server.

Each client connects to a fresh ``python -m trioserve`` and misbehaves in one way; the figure
is the time from its first byte until the server closes the connection (and what it answered):

- ``slow-head``: a request head, one byte a second (slowloris) -> request_head_timeout;
- ``slow-body``: a 1 MB body, one byte a second -> request_body_timeout (+ earned time);
- ``stalled-body``: half a body, then silence -> the same budget (or read_timeout);
- ``no-read``: a 64 MiB download, never read -> send_timeout after the kernel buffers fill;
- ``idle``: a keep-alive connection after one response -> keep_alive_timeout;
- ``gone-behind-pipeline``: 200 KiB pipelined behind a long poll, then FIN -> detection.

    python benchmarks/slow_clients.py                 # the defaults (takes ~2 minutes)
    python benchmarks/slow_clients.py --scale 0.05    # every timeout x0.05: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

APP = """
import trio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    if scope["path"] == "/poll":
        await receive()  # until the client leaves
        return
    body = b"x" * (64 << 20 if scope["path"] == "/big" else 2)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""

DEFAULTS = {
    "request_head_timeout": 10.0,
    "request_body_timeout": 20.0,
    "send_timeout": 60.0,
    "keep_alive_timeout": 5.0,
}


def start_server(tmp: Path, scale: float) -> tuple[subprocess.Popen[str], int]:
    (tmp / "slow_app.py").write_text(APP)
    flags = [
        "--timeout-request-head",
        str(DEFAULTS["request_head_timeout"] * scale),
        "--timeout-request-body",
        str(DEFAULTS["request_body_timeout"] * scale),
        "--timeout-send",
        str(DEFAULTS["send_timeout"] * scale),
        "--timeout-keep-alive",
        str(DEFAULTS["keep_alive_timeout"] * scale),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioserve", "slow_app:app", "--bind", "127.0.0.1:0", *flags],
        cwd=tmp,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp}"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
        if match:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(match.group(1))
    raise SystemExit("server did not start")


def held(port: int, first: bytes, then: bytes, interval: float, limit: float) -> dict[str, object]:
    """Send ``first``, then ``then`` one byte per ``interval`` (0: nothing more); read nothing
    until the server closes; returns seconds held and the status it answered, if any."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    start = time.monotonic()
    sock.sendall(first)
    answer = b""
    sock.settimeout(interval if interval else 0.2)
    sent = 0
    try:
        while time.monotonic() - start < limit:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                if len(answer) < 64:
                    answer += chunk
            except TimeoutError:
                if interval and sent < len(then):
                    try:
                        sock.send(then[sent : sent + 1])
                    except OSError:
                        break
                    sent += 1
            except ConnectionResetError:
                break
    finally:
        sock.close()
    status = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return {
        "held_s": round(time.monotonic() - start, 2),
        "answer": status.group(1).decode() if status else "-",
    }


def no_read(port: int, limit: float) -> dict[str, object]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    start = time.monotonic()
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: s\r\n\r\n")
    time.sleep(0.5)
    head = sock.recv(64)  # the status line, then never read again
    # Watch for the server's reset without reading the rest of the body.
    while time.monotonic() - start < limit and not _peer_gone(sock):
        time.sleep(0.1)
    sock.close()
    status = re.match(rb"HTTP/1\.1 (\d{3})", head)
    return {
        "held_s": round(time.monotonic() - start, 2),
        "answer": status.group(1).decode() if status else "-",
    }


def _peer_gone(sock: socket.socket) -> bool:
    import select

    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


def gone_behind_pipeline(port: int) -> dict[str, object]:
    """Time from the client's FIN until the server closes its side (it answers nothing)."""
    sock = socket.create_connection(("127.0.0.1", port))
    filler = b"GET / HTTP/1.1\r\nHost: s\r\n\r\n"
    sock.settimeout(2)
    try:
        sock.sendall(b"GET /poll HTTP/1.1\r\nHost: s\r\n\r\n" + filler * (200 * 1024 // 30))
    except TimeoutError:
        pass
    time.sleep(0.5)
    sock.shutdown(socket.SHUT_WR)
    start = time.monotonic()
    sock.settimeout(30)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()
    return {"held_s": round(time.monotonic() - start, 2), "answer": "-"}


def measure(scale: float) -> dict[str, dict[str, object]]:
    limit = 200 * scale + 5
    head = b"GET / HTTP/1.1\r\nHost: s\r\nX-Slow: " + b"a" * 1000
    body_head = b"POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 1000000\r\n\r\n"
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp), scale)
        try:
            tick = max(scale, 0.05)
            results["slow-head"] = held(port, head[:10], head[10:], tick, limit)
            results["slow-body"] = held(port, body_head, b"b" * 1000, tick, limit)
            results["stalled-body"] = held(port, body_head + b"b" * 1000, b"", 0, limit)
            results["no-read"] = no_read(port, limit)
            idle = b"GET / HTTP/1.1\r\nHost: s\r\n\r\n"
            results["idle"] = held(port, idle, b"", 0, limit)
            results["gone-behind-pipeline"] = gone_behind_pipeline(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every timeout")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = measure(args.scale)
    if args.json:
        print(json.dumps(results))
        return
    for kind, result in results.items():
        print(f"{kind:22} held {result['held_s']:>7}s  answer {result['answer']}")


if __name__ == "__main__":
    main()

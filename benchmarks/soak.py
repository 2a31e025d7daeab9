"""Soak: N requests through one trioserve process; RSS and open descriptors before and after.

A leak shows as RSS or descriptors that keep growing with N, so the figures are read after a
warm-up (caches, the parser, first-request imports) and again after the N requests have been
served and their connections closed. The mix covers the paths that hold resources: plain
keep-alive GETs, a POST with a body, a client that leaves mid-request, a 500 from an app
exception and a BaseException, an unread body, and connections that close after one request.

    python benchmarks/soak.py -n 1000000            # the figure for the issue (tens of minutes)
    python benchmarks/soak.py -n 2000 --json        # a smoke run

Self-contained (no harness from outside the repository): the load is ``ab`` (apache2-utils)
when installed and ``-n`` is large, otherwise a built-in asyncio keep-alive client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/unread":  # answer without reading the body
        pass
    else:
        while (await receive()).get("more_body"):
            pass
    if path == "/error":
        raise RuntimeError("soak: app error")
    if path == "/exit":
        raise SystemExit(1)
    body = b"x" * (4096 if path == "/body" else 2)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def request_mix(i: int) -> tuple[bytes, bool]:
    """The i-th request of the mix; True if the client leaves before the answer."""
    kind = i % 100
    if kind < 90:
        return b"GET / HTTP/1.1\r\nHost: s\r\n\r\n", False
    if kind < 94:
        return b"POST /body HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\n\r\nhello", False
    if kind < 96:
        return b"GET /error HTTP/1.1\r\nHost: s\r\n\r\n", False
    if kind < 97:
        return b"GET /exit HTTP/1.1\r\nHost: s\r\n\r\n", False
    if kind < 98:
        return b"POST /unread HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc", False
    if kind < 99:
        return b"GET / HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n", False
    return b"POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 100\r\n\r\npartial", True


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length: *(\d+)", head)
    if match:
        await reader.readexactly(int(match.group(1)))
    return head


async def _worker(port: int, count: int, start: int, errors: list[str]) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    for i in range(start, start + count):
        data, leave = request_mix(i)
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(data)
            if leave:
                writer.close()
                writer = None
                continue
            head = await asyncio.wait_for(_read_response(reader), 10)
            if b"connection: close" in head.lower():
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            errors.append(f"{data.split(b' ', 2)[1].decode()}: {exc!r}")
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def python_load(port: int, n: int, concurrency: int) -> list[str]:
    errors: list[str] = []
    share = n // concurrency
    tasks = [
        _worker(port, share + (1 if c < n % concurrency else 0), c * share, errors)
        for c in range(concurrency)
    ]
    await asyncio.gather(*tasks)
    return errors


def ab_load(port: int, n: int, concurrency: int) -> list[str]:
    """Keep-alive GETs with ab (the bulk of a large N): failed requests are errors."""
    out = subprocess.run(
        ["ab", "-q", "-k", "-n", str(n), "-c", str(concurrency), f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if failed is None:
        return [f"ab gave no result: {out[-300:]}"]
    return ["ab failed request"] * int(failed.group(1))


def start_server(app_dir: Path, extra: list[str]) -> tuple[subprocess.Popen[str], int]:
    (app_dir / "soak_app.py").write_text(APP)
    # The server's log goes to a file: a pipe nobody reads would fill up and block it.
    log = (app_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trioserve",
            "soak_app:app",
            "--bind",
            "127.0.0.1:0",
            "--no-access-log",
            "--log-level",
            "warning",
            *extra,
        ],
        cwd=app_dir,
        stderr=log,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{app_dir}"},
    )
    log.close()  # the child has its own copy
    # --log-level warning hides "Running on": find the port from the process's socket.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        port = listening_port(proc.pid)
        if port:
            return proc, port
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(app_dir / 'server.log').read_text()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start listening")


def listening_port(pid: int) -> int:
    """The TCP port ``pid`` listens on (from /proc/net/tcp and its socket inodes)."""
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
    except OSError:
        return 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                return int(fields[1].split(":")[1], 16)
    return 0


def soak(n: int, concurrency: int, use_ab: bool, extra: list[str]) -> dict[str, object]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp), extra)
        try:
            asyncio.run(python_load(port, 2000, concurrency))  # warm-up
            time.sleep(0.5)
            before = {"rss_kib": rss_kib(proc.pid), "fds": open_fds(proc.pid)}
            started = time.monotonic()
            errors: list[str] = []
            mixed = n if not use_ab else max(n // 20, 1000)
            errors += asyncio.run(python_load(port, mixed, concurrency))
            if use_ab and n > mixed:
                errors += ab_load(port, n - mixed, concurrency)
            elapsed = time.monotonic() - started
            time.sleep(1.0)  # let the last connections close
            after = {"rss_kib": rss_kib(proc.pid), "fds": open_fds(proc.pid)}
            alive = proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_text = (Path(tmp) / "server.log").read_text()
        # The mix sends a client away mid-request ~1% of the time: those are not errors.
        return {
            "requests": n,
            "seconds": round(elapsed, 1),
            "before": before,
            "after": after,
            "rss_growth_kib": after["rss_kib"] - before["rss_kib"],
            "fd_growth": after["fds"] - before["fds"],
            "client_errors": len(errors),
            "first_errors": sorted(set(errors))[:5],
            "server_alive": alive,
            # One per app fault in the mix (2% + 1%); anything else would be a server bug.
            "error_lines": log_text.count("[ERROR]"),
            "unexpected_errors": sum(
                1
                for line in log_text.splitlines()
                if "[ERROR]" in line and "Exception in ASGI application" not in line
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="requests (default 1M)")
    parser.add_argument("-c", type=int, default=32, help="concurrent connections")
    parser.add_argument("--python-only", action="store_true", help="no ab, even if installed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("server_args", nargs="*", help="extra trioserve flags (after --)")
    args = parser.parse_args()
    use_ab = not args.python_only and shutil.which("ab") is not None and args.n >= 20_000
    result = soak(args.n, args.c, use_ab, args.server_args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:16} {value}")
    if not result["server_alive"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

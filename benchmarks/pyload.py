#!/usr/bin/env python3
"""A Python stand-in for wrk, used only when wrk is not installed.

It takes the subset of wrk's command line the harness uses (``-t -c -d --latency -H -s
URL``) and prints wrk's summary lines (``Requests/sec:``, the latency distribution, socket
errors), so the harness (``loads.parse_wrk``) reads it unchanged. Each of ``-c`` connections does
sequential requests (keep-alive, or a new connection per request with
``-H "Connection: close"``) on asyncio (uvloop if installed) until the deadline.

It is several times slower than wrk: numbers from it are lower bounds for the fast servers
(its core saturates first); compare servers within one run only. ``-s FILE`` is not run as
Lua: the file's ``-- pyload: method=POST size=N`` line gives the method and body size.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="pyload")
    ap.add_argument("-t", "--threads", default="1")
    ap.add_argument("-c", "--connections", type=int, default=10)
    ap.add_argument("-d", "--duration", default="5s")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("-s", "--script")
    ap.add_argument("url")
    # wrk's "-t1"-style short options are parsed by argparse as "-t 1" already.
    return ap.parse_args(argv)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(ms|s|m|h)?", text)
    if not m:
        raise SystemExit(f"bad duration {text!r}")
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
        self.non2xx = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def _worker(
    host: str, port: int, request: bytes, per_request_conn: bool, deadline: float, stats: Stats
) -> None:
    perf = time.perf_counter
    reader = writer = None
    while perf() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            t0 = perf()
            writer.write(request)
            status, close = await _read_response(reader)  # type: ignore[arg-type]
            stats.latencies.append(perf() - t0)
            if not 200 <= status < 400:
                stats.non2xx += 1
            if close or per_request_conn:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats.errors["read"] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run(args: argparse.Namespace) -> str:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("pyload: loopback only")
    method, body = "GET", b""
    if args.script:
        m = re.search(r"pyload:\s*method=(\w+)\s+size=(\d+)", args.script_text)
        if m:
            method, body = m.group(1), b"x" * int(m.group(2))
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += args.header
    if body:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    per_request_conn = any(h.lower().replace(" ", "") == "connection:close" for h in args.header)
    duration = _seconds(args.duration)
    stats = Stats()
    t0 = time.perf_counter()
    deadline = t0 + duration
    await asyncio.gather(
        *(
            _worker(host, port, request, per_request_conn, deadline, stats)
            for _ in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - t0
    n = len(stats.latencies)
    lat = sorted(stats.latencies)
    out = [
        f"Running {duration:.0f}s test @ {args.url} (pyload, wrk not installed)",
        f"  {args.connections} connections",
    ]
    if args.latency and lat:
        out.append("  Latency Distribution")
        for p in (50, 75, 90, 99):
            out.append(f"     {p}%  {lat[min(n - 1, int(p / 100 * n))] * 1e3:.2f}ms")
    out.append(f"  {n} requests in {elapsed:.2f}s, 0.00MB read")
    e = stats.errors
    if any(e.values()):
        out.append(
            f"  Socket errors: connect {e['connect']}, read {e['read']}, "
            f"write {e['write']}, timeout {e['timeout']}"
        )
    if stats.non2xx:
        out.append(f"  Non-2xx or 3xx responses: {stats.non2xx}")
    out.append(f"Requests/sec: {n / elapsed:.2f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.script_text = Path(args.script).read_text() if args.script else ""
    try:
        import uvloop

        text = uvloop.run(run(args))
    except ImportError:
        text = asyncio.run(run(args))
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What ``--loop asyncio`` costs: FastAPI JSON and an asyncpg query, three ways.

* ``trioserve-trio``: trioserve's default (the JSON route only: asyncpg needs asyncio);
* ``trioserve-asyncio``: ``trioserve --loop asyncio`` (trio-asyncio bridge);
* ``uvicorn``: Uvicorn on its asyncio loop (uvloop when installed), the server these apps
  come from.

All three run ``benchmarks/asyncio_app.py`` with the same HTTP/1.1 parser (``--http``,
httptools by default), one process, no access log. Each measurement starts the server
anew, pinned to core 0 with ``taskset`` (wrk on core 1), warms it up, then runs wrk; rounds
are interleaved. A PostgreSQL is started for the run (the test suite's helper: unix socket,
temporary directory), so nothing is needed but the Debian packages postgresql and wrk
(``benchmarks/pyload.py`` stands in for wrk when it is missing; its numbers are lower
bounds).

    .venv/bin/python benchmarks/asyncio_mode.py                # 3 rounds x 10 s
    .venv/bin/python benchmarks/asyncio_mode.py --quick        # smoke: 1 round x 1 s
    .venv/bin/python benchmarks/asyncio_mode.py --json out.json

The report ends with the bridge's cost per request: (1/rps asyncio-mode - 1/rps trio-mode)
on the JSON route, in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent

ROUTES = ["/json", "/db"]
SERVERS: dict[str, tuple[str, ...]] = {
    "trioserve-trio": ("{bin}/trioserve", "--loop", "trio", "--log-level", "warning"),
    "trioserve-asyncio": ("{bin}/trioserve", "--loop", "asyncio", "--log-level", "warning"),
    "uvicorn": ("{bin}/uvicorn", "--log-level", "warning"),
}
# Routes a server cannot serve: measured as n/a rather than as errors.
UNSUPPORTED = {("trioserve-trio", "/db")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(core: int, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core), *argv] if taskset and os.cpu_count() != 1 else argv


def start_server(name: str, port: int, http: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    program, *flags = (part.format(bin=BIN) for part in SERVERS[name])
    argv = [program, "asyncio_app:app", "--app-dir", str(HERE), "--port", str(port)]
    argv += ["--http", http, "--no-access-log", *flags]
    proc = subprocess.Popen(pinned(0, argv), env={**os.environ, **env})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{name} did not answer within 30 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(url: str, seconds: float, connections: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk:
        argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
    else:
        argv = [sys.executable, str(HERE / "pyload.py"), "-t1", f"-c{connections}"]
        argv += [f"-d{seconds:g}s", url]
    out = subprocess.run(pinned(1, argv), capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else "",
    }


def measure(args: argparse.Namespace, dsn: str) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {s: {r: [] for r in ROUTES} for s in SERVERS}
    for round_no in range(args.rounds):
        for name in args.only or SERVERS:
            port = free_port()
            proc = start_server(name, port, args.http, {"BENCH_PG_DSN": dsn})
            try:
                for route in ROUTES:
                    if (name, route) in UNSUPPORTED:
                        continue
                    url = f"http://127.0.0.1:{port}{route}"
                    load(url, min(1.0, args.duration), args.connections)  # warm-up
                    stats = load(url, args.duration, args.connections)
                    if stats["non_2xx"] or not stats["rps"]:
                        raise SystemExit(f"{name} {route}: errors {stats}")
                    results[name][route].append(stats["rps"])
                    print(f"round {round_no + 1} {name:18} {route:6} {stats['rps']:10.0f} rps")
            finally:
                stop_server(proc)
    return results


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    def median(name: str, route: str) -> float | None:
        runs = results.get(name, {}).get(route) or []
        return statistics.median(runs) if runs else None

    lines = [
        f"FastAPI under three servers ({args.rounds} round(s) x {args.duration} s, "
        f"{args.connections} connections, --http {args.http}); median requests/s",
        "",
        "| server | " + " | ".join(ROUTES) + " |",
        "|---|" + "---:|" * len(ROUTES),
    ]
    for name in SERVERS:
        cells = []
        for route in ROUTES:
            value = median(name, route)
            cells.append("n/a" if value is None else f"{value:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    trio_json, aio_json = median("trioserve-trio", "/json"), median("trioserve-asyncio", "/json")
    if trio_json and aio_json:
        cost = (1 / aio_json - 1 / trio_json) * 1e6
        note = " (negative: noise, the machine is not quiet)" if cost < 0 else ""
        lines += ["", f"Bridge cost per request (JSON route): {cost:.1f} us{note}"]
    for route in ROUTES:
        aio, uv = median("trioserve-asyncio", route), median("uvicorn", route)
        if aio and uv:
            lines.append(f"trioserve --loop asyncio / Uvicorn on {route}: {aio / uv:.2f}x")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--http", default="httptools", choices=("h11", "httptools"))
    ap.add_argument("--only", nargs="+", choices=list(SERVERS))
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s runs (a smoke test)")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    sys.path.insert(0, str(REPO))
    from tests.asyncio_mode.services import run_postgres

    with run_postgres() as postgres:
        results = measure(args, postgres.dsn)
    text = report(results, args)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()

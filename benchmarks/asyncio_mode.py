#!/usr/bin/env python3
"""What ``--loop asyncio`` costs: FastAPI JSON, an asyncpg query and a redis.asyncio GET.

* ``trioserve-trio``: trioserve's default (the JSON route only: the others need asyncio);
* ``trioserve-asyncio``: ``trioserve --loop asyncio`` (the app on an asyncio loop, uvloop's
  when installed, in a thread of its own);
* ``uvicorn``: Uvicorn on its asyncio loop (uvloop when installed), the server these apps
  come from.

All three run ``benchmarks/asyncio_app.py`` with the same HTTP/1.1 parser (``--http``,
httptools by default), one process, no access log. Each measurement starts the server
anew, pinned to core 0 with ``taskset`` (wrk on core 1), warms it up, then runs wrk; rounds
are interleaved. A PostgreSQL and a Redis are started for the run (the test suite's helpers:
temporary directories), so nothing is needed but the Debian packages postgresql,
redis-server and wrk (``benchmarks/pyload.py`` stands in for wrk when it is missing; its
numbers are lower bounds, and it reports no latencies). Each cell gives the median req/s
and wrk's p50/p99 latency of the median run.

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
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent

ROUTES = ["/json", "/db", "/redis"]
SERVERS: dict[str, tuple[str, ...]] = {
    "trioserve-trio": ("{bin}/trioserve", "--loop", "trio", "--log-level", "warning"),
    "trioserve-asyncio": ("{bin}/trioserve", "--loop", "asyncio", "--log-level", "warning"),
    "uvicorn": ("{bin}/uvicorn", "--log-level", "warning"),
}
# Routes a server cannot serve: measured as n/a rather than as errors.
UNSUPPORTED = {("trioserve-trio", "/db"), ("trioserve-trio", "/redis")}
Run = dict[str, Any]  # {"rps": ..., "p50_ms": ..., "p99_ms": ...}


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
        argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    else:
        argv = [sys.executable, str(HERE / "pyload.py"), "-t1", f"-c{connections}"]
        argv += [f"-d{seconds:g}s", url]
    out = subprocess.run(pinned(1, argv), capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(total.group(1)) if total else 0,
        "p50_ms": _latency_ms(out, "50%"),
        "p99_ms": _latency_ms(out, "99%"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else "",
    }


def _latency_ms(out: str, percentile: str) -> float | None:
    """wrk --latency's figure for ``percentile`` ("50%"), in milliseconds."""
    found = re.search(rf"^\s*{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not found:
        return None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
    return float(found.group(1)) * scale


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace, env: dict[str, str]) -> dict[str, dict[str, list[Run]]]:
    results: dict[str, dict[str, list[Run]]] = {s: {r: [] for r in ROUTES} for s in SERVERS}
    for round_no in range(args.rounds):
        for name in args.only or SERVERS:
            port = free_port()
            proc = start_server(name, port, args.http, env)
            try:
                for route in ROUTES:
                    if (name, route) in UNSUPPORTED:
                        continue
                    url = f"http://127.0.0.1:{port}{route}"
                    load(url, min(1.0, args.duration), args.connections)  # warm-up
                    before = cpu_seconds(proc.pid)
                    stats = load(url, args.duration, args.connections)
                    used = cpu_seconds(proc.pid) - before
                    stats["cpu_us"] = used / stats["requests"] * 1e6 if stats["requests"] else 0
                    if stats["non_2xx"] or not stats["rps"]:
                        raise SystemExit(f"{name} {route}: errors {stats}")
                    results[name][route].append(stats)
                    print(
                        f"round {round_no + 1} {name:18} {route:6} {stats['rps']:10.0f} rps"
                        f"  p50 {stats['p50_ms']} ms  p99 {stats['p99_ms']} ms"
                        f"  {stats['cpu_us']:.0f} us CPU/request"
                    )
            finally:
                stop_server(proc)
    return results


def median_run(results: dict[str, dict[str, list[Run]]], name: str, route: str) -> Run | None:
    """The run with the median req/s (its latencies with it)."""
    runs = sorted(results.get(name, {}).get(route) or [], key=lambda run: run["rps"])
    return runs[len(runs) // 2] if runs else None


def _cell(run: Run | None) -> str:
    if run is None:
        return "n/a"
    if run.get("p50_ms") is None:
        return f"{run['rps']:,.0f}"
    return f"{run['rps']:,.0f} ({run['p50_ms']:.2f} / {run['p99_ms']:.2f} ms)"


def report(results: dict[str, dict[str, list[Run]]], args: argparse.Namespace) -> str:
    lines = [
        f"FastAPI under three servers ({args.rounds} round(s) x {args.duration} s, "
        f"{args.connections} connections, --http {args.http}"
        + ("" if args.switch_interval is None else f", switch interval {args.switch_interval} s")
        + "); median requests/s (p50 / p99 latency)",
        "",
        "| server | " + " | ".join(ROUTES) + " |",
        "|---|" + "---:|" * len(ROUTES),
    ]
    for name in SERVERS:
        cells = [_cell(median_run(results, name, route)) for route in ROUTES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Server CPU time per request (user + system, us; median over rounds):", ""]
    lines += ["| server | " + " | ".join(ROUTES) + " |", "|---|" + "---:|" * len(ROUTES)]
    for name in SERVERS:
        cells = []
        for route in ROUTES:
            cpu = [run["cpu_us"] for run in results.get(name, {}).get(route) or []]
            cells.append(f"{statistics.median(cpu):.0f}" if cpu else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    trio_json = median_run(results, "trioserve-trio", "/json")
    aio_json = median_run(results, "trioserve-asyncio", "/json")
    if trio_json and aio_json:
        cost = (1 / aio_json["rps"] - 1 / trio_json["rps"]) * 1e6
        note = " (negative: noise, the machine is not quiet)" if cost < 0 else ""
        lines += ["", f"Bridge cost per request (JSON route): {cost:.1f} us{note}"]
        ratio = aio_json["rps"] / trio_json["rps"]
        lines.append(f"trioserve --loop asyncio / trioserve trio mode on /json: {ratio:.2f}x")
    for route in ROUTES:
        aio, uv = (
            median_run(results, "trioserve-asyncio", route),
            median_run(results, "uvicorn", route),
        )
        if aio and uv:
            text = f"trioserve --loop asyncio / Uvicorn on {route}: {aio['rps'] / uv['rps']:.2f}x"
            if aio.get("p99_ms") and uv.get("p99_ms"):
                text += f", p99 {aio['p99_ms'] / uv['p99_ms']:.2f}x Uvicorn's"
            lines.append(text)
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
    ap.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval() in the servers (seconds; Python's default is 0.005): "
        "how often the GIL passes between trioserve's two threads in asyncio mode",
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    sys.path.insert(0, str(REPO))
    from tests.asyncio_mode.services import run_postgres, run_redis

    with (
        run_postgres() as postgres,
        run_redis() as redis,
        tempfile.TemporaryDirectory() as site,
    ):
        env = {"BENCH_PG_DSN": postgres.dsn, "BENCH_REDIS_URL": redis.url}
        if args.switch_interval is not None:
            # Set before the server's code runs, by a sitecustomize of our own.
            Path(site, "sitecustomize.py").write_text(
                f"import sys\nsys.setswitchinterval({args.switch_interval!r})\n"
            )
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
        results = measure(args, env)
    text = report(results, args)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()

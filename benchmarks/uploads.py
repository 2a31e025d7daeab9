"""Uploads through FastAPI (issue 11 item 17): trioserve (both parsers) and Uvicorn, one run.

Every server serves ``upload_app:app`` (benchmarks/upload_app.py) and is pinned to one CPU,
the client to the other (``taskset``, where it exists). Each round starts every server anew
and sends it the same uploads, rounds interleaved, servers in a rotating order:

* ``multipart``: a 10 MiB file as one ``multipart/form-data`` part (Content-Length) to a
  FastAPI ``UploadFile`` route;
* ``stream``: a 10 MiB chunked body in 64 KiB chunks (what httpx sends for a file) to a
  route reading ``request.stream()``;
* ``stream-4k``: the same in 4 KiB chunks (a generator yielding small pieces);
* ``raw``: the 64 KiB-chunk body to a raw ASGI app, for reference (no framework).

The client is a plain socket: the request is encoded once, then written in 64 KiB writes,
so its own cost is small and the same for every server. Each upload is a new connection
(as curl or a browser form would). Reported per server and scenario: MB/s (10 MiB over the
median upload time), the server's CPU time per upload (from ``/proc``, its whole process
group), the number of pieces the app was handed (``stream``, ``raw``), and both figures as
ratios to Uvicorn taken within each round.

    .venv/bin/python benchmarks/uploads.py --rounds 3 --uploads 20 \
        --out benchmarks/results/2026-11-28-uploads

``--quick`` (1 round, 3 uploads) only proves the scenario works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402

SIZE = 10 * 1024 * 1024
WRITE = 64 * 1024
APP = "upload_app:app"
TRIO = "{bin}/trioserve " + APP + " --port {port} --log-level warning --no-access-log "
UV = "{bin}/uvicorn " + APP + " --port {port} --log-level warning --no-access-log --loop asyncio "
SERVERS = {
    "trioserve-h11": TRIO + "--http h11",
    "trioserve-httptools": TRIO + "--http httptools",
    "uvicorn-httptools": UV + "--http httptools",  # a plain `pip install uvicorn` + httptools
    "uvicorn-h11": UV + "--http h11",
}
BASELINE = "uvicorn-httptools"  # Uvicorn's default wherever httptools is installed


def baseline_for(name: str) -> str:
    """The Uvicorn with the same HTTP/1.1 parser."""
    return "uvicorn-h11" if name.endswith("-h11") else "uvicorn-httptools"


SCENARIOS = ["multipart", "stream", "stream-4k", "raw"]
BOUNDARY = b"----trioserve-bench-boundary"


def _chunked(payload: bytes, size: int) -> bytes:
    pieces = [
        b"%x\r\n%s\r\n" % (len(payload[i : i + size]), payload[i : i + size])
        for i in range(0, len(payload), size)
    ]
    return b"".join(pieces) + b"0\r\n\r\n"


def build_request(scenario: str, payload: bytes) -> bytes:
    """The whole request, encoded once per scenario."""
    if scenario == "multipart":
        body = b"".join(
            [
                b"--" + BOUNDARY + b"\r\n",
                b'Content-Disposition: form-data; name="file"; filename="data.bin"\r\n',
                b"Content-Type: application/octet-stream\r\n\r\n",
                payload,
                b"\r\n--" + BOUNDARY + b"--\r\n",
            ]
        )
        head = (
            b"POST /upload HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        return head + body
    path, chunk = {"stream": (b"/stream", 65536), "stream-4k": (b"/stream", 4096)}.get(
        scenario, (b"/raw", 65536)
    )
    head = (
        b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head + _chunked(payload, chunk)


def upload_once(port: int, request: bytes) -> tuple[float, dict[str, Any]]:
    """One upload on a new connection: (seconds, the app's JSON answer)."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        view = memoryview(request)
        for i in range(0, len(view), WRITE):
            sock.sendall(view[i : i + WRITE])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    elapsed = time.perf_counter() - start
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"bad answer: {answer[:200]!r}")
    if b"chunked" in head.lower():  # not expected (JSON with Content-Length), but be safe
        raise RuntimeError("chunked answer")
    result: dict[str, Any] = json.loads(body)
    if result.get("size") != SIZE:
        raise RuntimeError(f"the app saw {result.get('size')} bytes, not {SIZE}")
    return elapsed, result


def run_one(
    name: str, scenario: str, request: bytes, args: argparse.Namespace, logdir: Path
) -> dict[str, Any]:
    port = harness.free_port()
    command = harness.Placeholders().expand(SERVERS[name], port)
    server = harness.ServerProcess(
        name, command, port, args.server_cpu, str(HERE), logdir / f"{name}-{scenario}.log"
    )
    server.start()
    try:
        server.wait_ready()
        for _ in range(args.warmup):
            upload_once(port, request)
        before = harness.proc_times()
        times, pieces = [], []
        for _ in range(args.uploads):
            elapsed, result = upload_once(port, request)
            times.append(elapsed)
            pieces.append(result.get("pieces", 0))
        after = harness.proc_times()
    finally:
        server.stop()
    cpu = harness.cpu_seconds(before, after, {server.pgid}, inside=True)
    wall = sum(times)
    other = harness.cpu_seconds(before, after, {server.pgid, os.getpgid(0)}, inside=False)
    median = statistics.median(times)
    return {
        "server": name,
        "scenario": scenario,
        "mb_s": SIZE / median / 1e6,
        "median_ms": median * 1000,
        "cpu_ms_per_upload": cpu / args.uploads * 1000,
        "pieces": statistics.median(pieces),
        "other_pct": 100 * other / wall / (os.cpu_count() or 1),
    }


def ratios(
    runs: list[dict[str, Any]], name: str, scenario: str, key: str, baseline: str = BASELINE
) -> str:
    """Median (min-max) over rounds of name / baseline, each within one round."""
    per_round: dict[int, dict[str, float]] = {}
    for run in runs:
        if run["scenario"] == scenario:
            per_round.setdefault(run["round"], {})[run["server"]] = run[key]
    values = [r[name] / r[baseline] for r in per_round.values() if name in r and baseline in r]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(runs: list[dict[str, Any]], settings: dict[str, Any], when: str = "") -> str:
    when = when or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# Uploads through FastAPI, {when}",
        "",
        f"Settings: {settings}. Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. 10 MiB per upload, a new connection each; ratios are "
        "medians (min-max) of per-round ratios, to the Uvicorn with the same parser "
        f"(`x same`) and to {BASELINE} (Uvicorn's default with httptools installed): MB/s "
        "higher is better, CPU per upload lower is better. Pieces: `receive()` messages "
        "the app was handed per upload (stream and raw routes).",
        "",
        "| scenario | server | MB/s | x same | x uvicorn-httptools | server CPU ms/upload "
        "| x same | pieces |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in settings["scenarios"]:
        for name in settings["servers"]:
            mine = [r for r in runs if r["server"] == name and r["scenario"] == scenario]
            if not mine:
                continue
            mb = statistics.median(r["mb_s"] for r in mine)
            cpu = statistics.median(r["cpu_ms_per_upload"] for r in mine)
            pieces = statistics.median(r["pieces"] for r in mine)
            same = baseline_for(name)
            lines.append(
                f"| {scenario} | {name} | {mb:,.0f} "
                f"| {ratios(runs, name, scenario, 'mb_s', same)} "
                f"| {ratios(runs, name, scenario, 'mb_s')} | {cpu:.1f} "
                f"| {ratios(runs, name, scenario, 'cpu_ms_per_upload', same)} "
                f"| {pieces:.0f} |"
            )
    noisy = max((r["other_pct"] for r in runs), default=0.0)
    lines += ["", f"Highest CPU share of other processes during a run: {noisy:.0f}%."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=20, help="timed uploads per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--only", nargs="*", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--scenarios", nargs="*", default=SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--quick", action="store_true", help="1 round, 3 uploads: a smoke run")
    parser.add_argument("--out", help="directory for results.md and results.json")
    parser.add_argument("--report", help="only re-render a results.json as markdown")
    args = parser.parse_args()
    if args.report:
        data = json.loads(Path(args.report).read_text())
        when = data.get("date", "") + f" (commit {data.get('commit')}, re-rendered)"
        print(report(data["runs"], data["settings"], when), end="")
        return
    if args.quick:
        args.rounds, args.uploads, args.warmup = 1, 3, 1
    if args.client_cpu not in (None, "", "none") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(args.client_cpu)})
    payload = os.urandom(SIZE)
    requests = {s: build_request(s, payload) for s in args.scenarios}
    logdir = Path(tempfile.mkdtemp(prefix="trioserve-uploads-"))
    runs = []
    for rnd in range(args.rounds):
        for scenario in args.scenarios:
            order = args.only[rnd % len(args.only) :] + args.only[: rnd % len(args.only)]
            for name in order:
                record = run_one(name, scenario, requests[scenario], args, logdir)
                record["round"] = rnd
                runs.append(record)
                print(
                    f"round {rnd} {scenario:10} {name:20} {record['mb_s']:8.0f} MB/s "
                    f"{record['cpu_ms_per_upload']:6.1f} ms CPU/upload "
                    f"pieces {record['pieces']:.0f}",
                    file=sys.stderr,
                    flush=True,
                )
    settings = {
        "rounds": args.rounds,
        "uploads": args.uploads,
        "warmup": args.warmup,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "servers": args.only,
        "scenarios": args.scenarios,
    }
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = report(runs, settings, when)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text)
        versions = harness.package_versions(sys.executable)
        try:
            commit = subprocess.run(
                ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except OSError:
            commit = ""
        data = {
            "date": when,
            "settings": settings,
            "versions": versions,
            "commit": commit,
            "runs": runs,
        }
        (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()

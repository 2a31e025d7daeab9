#!/usr/bin/env python3
"""HTTP/2: trioserve against Hypercorn's trio worker, side by side in one run (issue 14).

Scenarios, each server started anew and pinned to core 0, h2load pinned to core 1, rounds
interleaved (trioserve, hypercorn-trio, trioserve, ...):

* ``hello``: ``h2load -c 10 -m 10`` GET / (h2c prior knowledge), requests/s;
* ``big``: ``h2load -c 10 -m 10`` GET /big (1 MiB), requests/s and MB/s;
* ``hello-h1``: the same hello over HTTP/1.1 (``h2load --h1 -c 10``), trioserve only by
  default, for its own HTTP/1.1 figure beside the HTTP/2 one;
* ``idle``: memory per idle HTTP/2 connection: N connections each complete the preface,
  SETTINGS and one GET and stay open; (RSS with N - RSS before) / N, in KiB.

    $VENV/bin/python benchmarks/h2bench.py                  # 3 rounds, 10 s per run
    $VENV/bin/python benchmarks/h2bench.py --quick          # smoke: 1 round, 1 s runs
    $VENV/bin/python benchmarks/h2bench.py --scenario idle --connections 1000
    $VENV/bin/python benchmarks/h2bench.py --tls            # h2 over TLS (ALPN), not h2c

``--tls`` serves both with a throwaway certificate (trustme, from the test extra) and points
h2load at ``https://``; the idle scenario stays on h2c (its client is a raw socket).

Self-contained: needs h2load (Debian ``nghttp2-client``) and, for the comparison, Hypercorn
in the same environment. Prints a Markdown table and writes it with the raw figures as JSON
to ``benchmarks/results/DATE-h2/``.
"""

from __future__ import annotations

import argparse
import datetime
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

SERVERS = {
    "trioserve": [
        str(BIN / "trioserve"),
        "h2_app:app",
        "-c",
        str(HERE / "h2bench.toml"),
        "--bind",
        "127.0.0.1:{port}",
        "--log-level",
        "warning",
        "--no-access-log",
        "--keep-alive",
        "600",
    ],
    "hypercorn-trio": [
        str(BIN / "hypercorn"),
        "-k",
        "trio",
        "h2_app:app",
        "-c",
        str(HERE / "h2bench.toml"),
        "--bind",
        "127.0.0.1:{port}",
        "--log-level",
        "warning",
        "--keep-alive",
        "600",
    ],
}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
# HEADERS, END_STREAM|END_HEADERS, stream 1: GET / http localhost (HPACK static indexes
# 2 (:method GET), 6 (:scheme http), 4 (:path /), then :authority literal "localhost").
_BLOCK = b"\x82\x86\x84\x41\x09localhost"
GET = len(_BLOCK).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + _BLOCK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tls_arguments(directory: Path) -> list[str]:
    """A certificate for 127.0.0.1 (trustme), as both servers' command-line options."""
    import trustme

    cert = trustme.CA().issue_cert("127.0.0.1")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return ["--certfile", str(certfile), "--keyfile", str(keyfile)]


class Server:
    def __init__(self, name: str, extra: list[str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        argv = [part.format(port=self.port) for part in SERVERS[name]] + (extra or [])
        taskset = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        self.proc = subprocess.Popen(
            taskset + argv, cwd=HERE, start_new_session=True, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{name} did not start")

    def rss_kib(self) -> int:
        """VmRSS summed over the server's process group (Hypercorn serves in a child)."""
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.proc.pid:
                    continue
                with open(f"/proc/{entry.name}/status") as status:
                    for line in status:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except (OSError, ValueError):
                continue
        return total

    def alive(self) -> bool:
        """Still serving (Hypercorn-trio's worker can die under concurrent 1 MiB streams)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def h2load(
    port: int, path: str, seconds: float, h1: bool = False, tls: bool = False
) -> dict[str, float]:
    """``h1``: the same load over HTTP/1.1 keep-alive (one request at a time per
    connection), for trioserve's own HTTP/1.1 figure beside its HTTP/2 one."""
    taskset = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    argv = [
        *taskset,
        "h2load",
        *(["--h1"] if h1 else []),
        "-c",
        "10",
        "-m",
        "1" if h1 else "10",
        "-D",
        str(max(1, round(seconds))),
        "--warm-up-time",
        "1",
        f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s, ([\d.]+)(\w+)/s", out)
    done = re.search(r"requests: .* (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if rps is None or done is None:
        raise SystemExit(f"h2load output not understood:\n{out}")
    scale = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}.get(rps.group(3), 1.0)
    return {
        "rps": float(rps.group(1)),
        "mb_s": float(rps.group(2)) * scale,
        "failed": float(done.group(2)) + float(done.group(3)),
    }


def idle_memory(server: Server, count: int) -> float:
    """KiB per idle HTTP/2 connection (each did the handshake and one GET)."""
    warm = [open_h2(server.port) for _ in range(5)]
    for sock in warm:
        sock.close()
    time.sleep(0.5)
    before = server.rss_kib()
    conns = [open_h2(server.port) for _ in range(count)]
    time.sleep(1.0)
    after = server.rss_kib()
    for sock in conns:
        sock.close()
    return (after - before) / count


def open_h2(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(PREFACE + SETTINGS + SETTINGS_ACK + GET)
    sock.settimeout(10)
    data = b""
    while b"\x00\x00\x01\x00\x00" not in data and not data.endswith(b"\x01\x00\x00\x00\x01"):
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed an idle connection early")
        data += chunk
        if _ended(data):
            break
    return sock


def _ended(data: bytes) -> bool:
    """Whether a frame with END_STREAM on stream 1 has arrived (HEADERS or DATA)."""
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        stream = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if stream == 1 and kind in (0, 1) and flags & 1:
            return True
        pos += 9 + length
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--scenario", nargs="*", default=["hello", "big", "idle", "hello-h1"])
    parser.add_argument("--only", nargs="*", default=list(SERVERS))
    parser.add_argument("--tls", action="store_true", help="h2 over TLS instead of h2c")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.connections = 1, 1.0, 50
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not installed (Debian package nghttp2-client)")
    results: dict[str, dict[str, list[Any]]] = {name: {} for name in args.only}
    with tempfile.TemporaryDirectory() as directory:
        tls = tls_arguments(Path(directory)) if args.tls else []
        for _ in range(args.rounds):
            run_round(args, results, tls)
    report(results, args)


def run_round(args: argparse.Namespace, results: dict[str, Any], tls: list[str]) -> None:
    for scenario in args.scenario:
        for name in args.only:
            if scenario == "hello-h1" and name != "trioserve":
                continue
            server = Server(name, [] if scenario == "idle" else tls)
            try:
                if scenario == "idle":
                    figure: Any = idle_memory(server, args.connections)
                else:
                    path = "/big" if scenario == "big" else "/"
                    h1 = scenario == "hello-h1"
                    figure = h2load(server.port, path, args.seconds, h1, bool(tls))
                    figure["survived"] = server.alive()
            finally:
                server.stop()
            results[name].setdefault(scenario, []).append(figure)


def _median(figures: dict[str, list[Any]], scenario: str, key: str | None) -> str:
    values = figures.get(scenario)
    if not values:
        return "-"
    return f"{statistics.median(v[key] if key else v for v in values):.1f}"


def report(results: dict[str, dict[str, list[Any]]], args: argparse.Namespace) -> None:
    lines = [
        "| server | hello req/s | 1 MiB req/s | 1 MiB MB/s | idle KiB/conn "
        "| HTTP/1.1 hello req/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        loads = ("hello", "big", "hello-h1")
        died = [s for s in loads for f in figures.get(s, []) if not f["survived"]]
        if died:
            print(f"{name}: the server died during {', '.join(sorted(set(died)))}")
        cells = [
            _median(figures, "hello", "rps"),
            _median(figures, "big", "rps"),
            _median(figures, "big", "mb_s"),
            _median(figures, "idle", None),
            _median(figures, "hello-h1", "rps"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.quick:
        return
    suffix = "-h2-tls" if args.tls else "-h2"
    out = HERE / "results" / f"{datetime.date.today().isoformat()}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()

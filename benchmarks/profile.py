#!/usr/bin/env python3
"""Profile trioserve under load with py-spy and print a flame summary.

Starts trioserve (pinned to the server core) under ``py-spy record`` in collapsed-stack
format, drives it with wrk (pinned to the other core) for one scenario, then prints the
functions with the most samples: "self" (the sample's innermost frame) and "total"
(anywhere on the stack). Writes the collapsed stacks (for flamegraph.pl or speedscope).

    $VENV/bin/python benchmarks/profile.py --scenario hello --duration 10
    $VENV/bin/python benchmarks/profile.py --scenario close --out /tmp/close.folded
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATHS = {
    "hello": ("/", []),
    "close": ("/", ["-H", "Connection: close"]),
    "big": ("/big", []),
    "post": ("/echo", ["-s", str(HERE / "post.lua")]),
    "json": ("/json", []),
}


def _frame_name(frame: str) -> str:
    # py-spy collapsed frames look like "function (path/to/file.py:123)"
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/trioserve/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/trioserve/":
                path = "trioserve/" + path
            break
    return f"{func} ({path})"


# (label, substring of a frame anywhere on the stack): inclusive shares of the steady state.
BUCKETS = [
    ("h11: parse the request (Connection.next_event)", "next_event (h11/_connection.py"),
    ("h11: serialise the response (Connection.send)", "send (h11/_connection.py"),
    (
        "trio: SocketStream.send_all (incl. the send syscall)",
        "send_all (trio/_highlevel_socket.py",
    ),
    ("trio: SocketStream.receive_some (incl. recv)", "receive_some (trio/_highlevel_socket.py"),
    ("trio: closing sockets (aclose_forcefully)", "aclose_forcefully ("),
    ("trio: accept", "accept (trio/_highlevel_socket.py"),
    ("trioserve: validate_response_headers", "validate_response_headers ("),
    ("trioserve: build_http_scope", "build_http_scope ("),
    ("trioserve: prepare_scope (proxy headers, TLS)", "prepare_scope ("),
    ("trioserve: HTTP11Protocol._request (request checks)", "HTTP11Protocol._request ("),
]


def summarize(folded: Path, top: int) -> str:
    """Self and total shares per function, over the samples taken while serving.

    Samples without trio's run loop on the stack (imports, start-up) are left out.
    """
    self_count: collections.Counter[str] = collections.Counter()
    total_count: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    n = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or "unrolled_run" not in stack:
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        n += count
        self_count[frames[-1]] += count
        for name in set(frames):
            total_count[name] += count
        for label, key in BUCKETS:
            if key in stack:
                buckets[label] += count
        if "trio/_core/" in frames[-1]:
            buckets["trio: scheduler, epoll, cancel scopes (self time)"] += count
    if not n:
        return "no samples"
    out = [f"{n} samples while serving", "", "| where (inclusive) | % |", "|---|---:|"]
    labels = [label for label, _ in BUCKETS] + [
        "trio: scheduler, epoll, cancel scopes (self time)"
    ]
    out += [f"| {label} | {100 * buckets[label] / n:.1f} |" for label in labels if buckets[label]]
    out += ["", "| self % | function |", "|---:|---|"]
    out += [f"| {100 * c / n:.1f} | `{name}` |" for name, c in self_count.most_common(top)]
    out += ["", "| total % | function |", "|---:|---|"]
    out += [f"| {100 * c / n:.1f} | `{name}` |" for name, c in total_count.most_common(top)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", choices=list(PATHS), default="hello")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default="/tmp/trioserve-profile.folded")
    ap.add_argument(
        "--summary-only", metavar="FOLDED", help="only summarize an existing collapsed file"
    )
    args = ap.parse_args()
    if args.summary_only:
        print(summarize(Path(args.summary_only), args.top))
        return 0
    if not args.port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.port = sock.getsockname()[1]
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PYTHONPATH=str(HERE))
    server = [
        str(bindir / "trioserve"),
        "bench_apps:app",
        "--port",
        str(args.port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    spy = [
        str(bindir / "py-spy"),
        "record",
        "--format",
        "raw",
        "--rate",
        str(args.rate),
        "-o",
        args.out,
        "--nonblocking",
        "--",
    ]
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *spy, *server], cwd=HERE, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        path, extra = PATHS[args.scenario]
        wrk = [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            *extra,
            f"http://127.0.0.1:{args.port}{path}",
        ]
        print("$", shlex.join(wrk), file=sys.stderr)
        print(subprocess.run(wrk, capture_output=True, text=True).stdout, file=sys.stderr)
    finally:
        # SIGINT to the group: the server shuts down and py-spy writes its file.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    print(summarize(Path(args.out), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""HTTP/3: trioserve against Hypercorn's trio worker, side by side in one run.

Self-contained (no shared harness): certificates come from trustme, the load generator is
ngtcp2's ``gtlsclient`` (Debian ngtcp2-client; Debian's h2load has no HTTP/3), the idle
connections are aioquic clients driven by trio. Each measurement starts the server anew;
rounds are interleaved (A B A B ...).

Scenarios:

* ``hello``: ``--clients`` gtlsclient processes at once, each making ``--requests``
  requests over its own QUIC connection; requests/s = all requests / wall time.
* ``download``: a 10 MiB body, one request at a time, ``--downloads`` times; MiB/s.
* ``download20``: one 20 MiB body; does it arrive complete (size checked)?
* ``idle``: server RSS growth per idle QUIC connection (``--idle`` connections that each
  completed one request), in KiB.

    .venv/bin/python benchmarks/h3.py                     # full run
    .venv/bin/python benchmarks/h3.py --quick             # smoke: 1 round, small counts
    .venv/bin/python benchmarks/h3.py --only trioserve --scenario hello

Results: ``benchmarks/results/DATE-h3/`` (results.md, results.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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
REPO = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

APP = "h3_app:app"
SERVERS = {
    "trioserve": "{bin}/trioserve " + APP + " --bind 127.0.0.1:{tcp} --quic-bind 127.0.0.1:{udp}"
    " --certfile {cert} --keyfile {key} --no-access-log --log-level warning"
    " --timeout-keep-alive 600 --quic-max-connections-per-ip 1000",  # idle: 200 from one IP
    "hypercorn-trio": "{bin}/hypercorn --worker-class trio --workers 1 --bind 127.0.0.1:{tcp}"
    " --quic-bind 127.0.0.1:{udp} --certfile {cert} --keyfile {key} --log-level warning " + APP,
}
MIB = 1024 * 1024


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certs(directory: Path) -> dict[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {k: str(v) for k, v in paths.items()}


class Server:
    """One server process (its own process group), stopped by PID."""

    def __init__(self, name: str, certs: dict[str, str]) -> None:
        self.udp = free_port(socket.SOCK_DGRAM)
        tcp = free_port(socket.SOCK_STREAM)
        command = SERVERS[name].format(bin=BIN, tcp=tcp, udp=self.udp, **certs)
        self.proc = subprocess.Popen(
            command.split(),
            cwd=HERE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if gtlsclient(self.udp, ["/"], timeout=2) == 0:
                return
            time.sleep(0.2)
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        errors = err.decode(errors="replace")[-2000:]
        raise SystemExit(f"{name} did not answer HTTP/3 on UDP port {self.udp}\n{errors}")

    def rss_kib(self) -> int:
        """VmRSS summed over the server's process group (Hypercorn serves from a child)."""
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.proc.pid:
                    continue
                with open(f"/proc/{entry.name}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except (OSError, ValueError):
                continue
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def gtlsclient(
    port: int, paths: list[str], *, count: int = 0, download: str | None = None, timeout: float
) -> int:
    command = ["gtlsclient", "-q", "--exit-on-all-streams-close", "--timeout=30s"]
    if count:
        command += ["-n", str(count)]
    if download:
        command += ["--download", download]
    command += ["127.0.0.1", str(port), *[f"https://localhost:{port}{p}" for p in paths]]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1
    return done.returncode or failed(done.stderr)


def failed(stderr: bytes) -> int:
    """gtlsclient exits 0 even when the connection died (idle close): read its errors."""
    return 1 if b"ERR_" in stderr or b"rror" in stderr else 0


def hello(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        "gtlsclient", "-q", "--exit-on-all-streams-close", "--timeout=30s",
        "-n", str(args.requests), "127.0.0.1", str(server.udp),
        f"https://localhost:{server.udp}/",
    ]  # fmt: skip
    start = time.perf_counter()
    procs = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(args.clients)
    ]
    codes = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        codes.append(proc.returncode or failed(err))
    elapsed = time.perf_counter() - start
    ok = sum(1 for c in codes if c == 0)
    return {"rps": ok * args.requests / elapsed, "failed_clients": len(codes) - ok}


def download(server: Server, args: argparse.Namespace, size: int, times: int) -> dict[str, Any]:
    rates = []
    complete = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(times):
            target = Path(tmp) / str(size)
            target.unlink(missing_ok=True)
            start = time.perf_counter()
            code = gtlsclient(server.udp, [f"/{size}"], download=tmp, timeout=120)
            elapsed = time.perf_counter() - start
            if code == 0 and target.exists() and target.stat().st_size == size:
                complete += 1
                rates.append(size / MIB / elapsed)
    return {
        "mib_per_s": statistics.median(rates) if rates else 0.0,
        "complete": complete,
        "tried": times,
    }


def idle(server: Server, args: argparse.Namespace, certs: dict[str, str]) -> dict[str, Any]:
    """RSS growth per idle QUIC connection, each having completed one request."""
    import trio

    from tests.h3client import H3Client

    async def main() -> dict[str, Any]:
        before = server.rss_kib()
        clients = []
        async with trio.open_nursery() as nursery:
            for _ in range(args.idle):
                client = H3Client(server.udp, certs["ca"])
                nursery.start_soon(client.run)
                with trio.fail_after(10):
                    await client.connected.wait()
                    await client.request(b"/")
                clients.append(client)
            await trio.sleep(2)
            after = server.rss_kib()
            nursery.cancel_scope.cancel()
        for client in clients:
            client.sock.close()
        return {"kib_per_conn": (after - before) / args.idle, "connections": args.idle}

    return trio.run(main)


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, dict[str, list[Any]]] = {name: {} for name in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp))
        for round_no in range(args.rounds):
            for name in args.only:
                for scenario in args.scenario:
                    server = Server(name, certs)
                    try:
                        if scenario == "hello":
                            value = hello(server, args)
                        elif scenario == "download":
                            value = download(server, args, 10 * MIB, args.downloads)
                        elif scenario == "download20":
                            value = download(server, args, 20 * MIB, 1)
                        else:
                            value = idle(server, args, certs)
                    finally:
                        server.stop()
                    results[name].setdefault(scenario, []).append(value)
                    print(f"round {round_no + 1} {name} {scenario}: {value}", flush=True)
    return results


def report(results: dict[str, Any], out: Path, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=2)
    )
    keys = {
        "hello": "rps",
        "download": "mib_per_s",
        "download20": "complete",
        "idle": "kib_per_conn",
    }
    lines = [
        "# HTTP/3: trioserve vs Hypercorn-trio",
        "",
        "| scenario | " + " | ".join(results) + " |",
    ]
    lines.append("|---" * (len(results) + 1) + "|")
    for scenario in args.scenario:
        cells = []
        for name in results:
            values = [r[keys[scenario]] for r in results[name].get(scenario, [])]
            cells.append(f"{statistics.median(values):.1f}" if values else "-")
        lines.append(f"| {scenario} ({keys[scenario]}) | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument(
        "--scenario", nargs="+", default=["hello", "download", "download20", "idle"],
        choices=["hello", "download", "download20", "idle"],
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--downloads", type=int, default=5)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="1 round, small counts")
    parser.add_argument("--label", default="h3")
    parser.add_argument("--out", default=None, help="results directory (default: dated)")
    args = parser.parse_args()
    if args.quick:  # explicit counts still win
        defaults = {"requests": 5000, "downloads": 5, "idle": 200}
        quick = {"requests": 300, "downloads": 1, "idle": 20}
        args.rounds = 1
        for key, value in quick.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    results = run(args)
    day = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else HERE / "results" / f"{day}-{args.label}"
    report(results, out, args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

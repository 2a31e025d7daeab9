"""A rolling deploy that loses nothing: three hosts behind a real HAProxy, each drained.

Three "hosts" are network namespaces (names unique to this run), each joined to a
balancer namespace by a veth pair with addresses from 198.18.0.0/15 (the range set aside
for network testing), each running ``trioserve --workers 2``. HAProxy in the balancer
namespace health-checks ``/readyz`` on each host's metrics listener. A load generator in
the balancer namespace (keep-alive and fresh connections, a streaming response,
WebSockets) runs while each host in turn is drained with SIGTERM and started again, and
then one worker is SIGKILLed.

Pass: no failed HTTP request in the drains, WebSockets closed only with 1001 (and
reconnected), and the request counts scraped from each host (its final scrape before each
restart - the metrics listener lingers for it - plus the last one) add up to the requests
the load generator counted. Needs root and ``ip netns`` (CI runs it as root); everything
is bounded in time, and the namespaces are deleted in a ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..metrics.helpers import parse, total, value

HERE = Path(__file__).resolve().parent
IP = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
CURL = shutil.which("curl")
APP_PORT = 8000
ADMIN_PORT = 9100
HOSTS = 3


def _netns_usable() -> str:
    if os.geteuid() != 0:
        return "needs root for network namespaces (CI runs it as root)"
    if IP is None:
        return "needs ip (Debian package iproute2)"
    if HAPROXY is None:
        return "needs haproxy (Debian package haproxy)"
    if CURL is None:
        return "needs curl (Debian package curl)"
    probe = f"tsprobe{os.getpid()}"
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"ip netns unavailable: {made.stderr.decode().strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return ""


SKIP = _netns_usable()
pytestmark = [pytest.mark.skipif(bool(SKIP), reason=SKIP), pytest.mark.timeout(240)]

HAPROXY_CFG = HERE.parents[1] / "examples" / "haproxy-readyz.cfg"  # used as it is


def ip(*args: str) -> None:
    assert IP is not None
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=10)


class Topology:
    """The namespaces and veth pairs; ``close()`` removes them all."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.lb = f"ts16-{tag}-lb"
        self.hosts = [f"ts16-{tag}-h{n}" for n in range(1, HOSTS + 1)]
        self.addresses = [f"198.18.{n}.2" for n in range(1, HOSTS + 1)]
        self.made: list[str] = []
        try:
            for ns in [self.lb, *self.hosts]:
                ip("netns", "add", ns)
                self.made.append(ns)
                ip("-n", ns, "link", "set", "lo", "up")
            for n, ns in enumerate(self.hosts, 1):
                lb_end, host_end = f"t{tag}l{n}", f"t{tag}h{n}"
                ip("link", "add", lb_end, "netns", self.lb, "type", "veth", "peer", host_end,
                   "netns", ns)  # fmt: skip
                ip("-n", self.lb, "addr", "add", f"198.18.{n}.1/24", "dev", lb_end)
                ip("-n", ns, "addr", "add", f"198.18.{n}.2/24", "dev", host_end)
                ip("-n", self.lb, "link", "set", lb_end, "up")
                ip("-n", ns, "link", "set", host_end, "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ns in self.made:  # deleting a namespace removes its veth ends too
            subprocess.run([IP or "ip", "netns", "del", ns], capture_output=True, timeout=10)


def in_ns(ns: str, *cmd: str) -> list[str]:
    assert IP is not None
    return [IP, "netns", "exec", ns, *cmd]


class Host:
    """One trioserve supervisor in a namespace; ``ip netns exec`` execs, so its PID is ours."""

    def __init__(self, ns: str, name: str, logdir: Path) -> None:
        self.ns = ns
        self.name = name
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.lifetimes = 0
        self.final_counts: list[float] = []

    def start(self) -> None:
        self.lifetimes += 1
        cmd = [
            sys.executable, "-m", "trioserve", "rolling_app:app", "--app-dir", str(HERE),
            "--bind", f"0.0.0.0:{APP_PORT}", "--workers", "2",
            "--metrics-bind", f"0.0.0.0:{ADMIN_PORT}", "--metrics-linger", "2",
            "--graceful-timeout", "10", "--no-access-log",
        ]  # fmt: skip
        env = {**os.environ, "ROLLING_HOST": self.name, "PYTHONUNBUFFERED": "1"}
        with open(self.logdir / f"{self.name}-{self.lifetimes}.log", "wb") as log:
            self.proc = subprocess.Popen(in_ns(self.ns, *cmd), stdout=log, stderr=log, env=env)
        assert wait(lambda: self.admin("/readyz")[0] == 200, 20), self.log()

    def admin(self, path: str) -> tuple[int, str]:
        """GET on the host's metrics listener, from inside its namespace."""
        assert CURL is not None
        done = subprocess.run(
            in_ns(self.ns, CURL, "-s", "-m", "2", "-w", "\n%{http_code}",
                  f"http://127.0.0.1:{ADMIN_PORT}{path}"),
            capture_output=True, timeout=10,
        )  # fmt: skip
        text, _, code = done.stdout.decode().rpartition("\n")
        return (int(code) if code.isdigit() else 0), text

    def drain(self) -> None:
        """SIGTERM, then keep scraping until the listener closes: the last scrape taken
        after every worker exited holds this lifetime's final count."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        final: float | None = None
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            code, text = self.admin("/metrics")
            if code == 200:
                samples = parse(text)
                if value(samples, "trioserve_workers") == 0:
                    final = total(samples, "trioserve_requests_total")
            time.sleep(0.05)
        assert self.proc.wait(10) == 0, self.log()
        assert final is not None, "no scrape after the workers exited:\n" + self.log()
        self.final_counts.append(final)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def log(self) -> str:
        return (self.logdir / f"{self.name}-{self.lifetimes}.log").read_text()[-4000:]

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in self.worker_pids():
            os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(10)


def wait(check: object, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


@pytest.fixture
def topology() -> Iterator[Topology]:
    topo = Topology()
    try:
        yield topo
    finally:
        topo.close()


def test_rolling_deploy_loses_nothing(topology: Topology, tmp_path: Path) -> None:
    hosts = [Host(ns, f"h{n}", tmp_path) for n, ns in enumerate(topology.hosts, 1)]
    haproxy: subprocess.Popen[bytes] | None = None
    loadgen: subprocess.Popen[bytes] | None = None
    try:
        for host in hosts:
            host.start()
        config = HAPROXY_CFG.read_text()
        for host, address in zip(hosts, topology.addresses, strict=True):
            assert f"server {host.name} {address}:{APP_PORT}" in config
        assert f"check port {ADMIN_PORT}" in config
        assert HAPROXY is not None
        with open(tmp_path / "haproxy.log", "wb") as log:
            haproxy = subprocess.Popen(
                in_ns(topology.lb, HAPROXY, "-db", "-f", str(HAPROXY_CFG)),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        time.sleep(1.0)  # health checks mark the hosts up (rise 2, inter 100ms)
        stopfile = tmp_path / "stop"
        with open(tmp_path / "loadgen.log", "wb") as log:
            loadgen = subprocess.Popen(
                in_ns(topology.lb, sys.executable, str(HERE / "rolling_loadgen.py"),
                      "http://127.0.0.1:8080", str(stopfile), "120"),
                stdout=subprocess.PIPE,
                stderr=log,
            )  # fmt: skip
        time.sleep(2.0)
        drains: list[tuple[float, float]] = []
        for host in hosts:
            began = time.time()
            host.drain()
            host.start()
            drains.append((began, time.time()))
            time.sleep(1.5)  # HAProxy sees it ready again; traffic returns
        # One worker killed outright (its in-flight work is lost: expected, reported apart).
        kill_at = time.time()
        os.kill(hosts[0].worker_pids()[0], signal.SIGKILL)
        time.sleep(2.0)
        kill_end = time.time()
        stopfile.touch()
        out, _ = loadgen.communicate(timeout=60)
        result = json.loads(out)
        for host in hosts:  # the last lifetimes' final counts, the same way
            host.drain()
    finally:
        for proc in (loadgen, haproxy):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for host in hosts:
            host.kill()

    ok = result["ok"]
    failures = result["failures"]
    in_kill = [f for f in failures if kill_at <= f["at"] <= kill_end]
    elsewhere = [f for f in failures if f not in in_kill]
    report = json.dumps(result, indent=1)[:6000]
    assert ok.get("keep-alive", 0) > 100 and ok.get("fresh", 0) > 100, report
    assert ok.get("stream", 0) > 10 and ok.get("ws-message", 0) > 100, report
    assert elsewhere == [], report
    # The SIGKILL may cut what that worker had in flight (a stream or a WebSocket at most).
    assert len(in_kill) <= 2, report
    closes = result["ws_closes"]
    for close in closes:
        if not kill_at <= close["at"] <= kill_end:
            assert close["code"] == 1001, report
    assert sum(1 for c in closes if c["code"] == 1001) >= 3, report  # every drain closed some
    # Requests the hosts counted (every lifetime's final scrape) == requests answered. The
    # one exception is the SIGKILL: it can land after a response's last write and before
    # the worker counts it (the write ends in a checkpoint, so other tasks may run in
    # between), so the killed worker's count may be one short: seen in 3 of 7 runs with
    # the kill, never in runs without it. Never more, and never over.
    answered = ok.get("keep-alive", 0) + ok.get("fresh", 0) + ok.get("stream", 0)
    counted = sum(sum(h.final_counts) for h in hosts)
    detail = (counted, answered, [h.final_counts for h in hosts], report)
    print(f"rolling deploy: answered {ok}, WebSocket closes {[c['code'] for c in closes]}, "
          f"failures in the SIGKILL window {in_kill}, counted {counted}")  # fmt: skip
    assert answered - 1 <= counted <= answered, detail

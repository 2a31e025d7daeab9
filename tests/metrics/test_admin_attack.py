"""Attack: slow clients on the metrics listener (issue 22, row 6).

Before: the standard library's threading HTTP server, one OS thread per connection and a
10 s timeout per read, so 600 clients sending a byte every 5 s held 600 threads for as
long as they liked. Now one thread serves all connections, at most MAX_CONNECTIONS are
open (a new one closes the oldest), and each has REQUEST_DEADLINE seconds for the whole
exchange; a scrape is answered meanwhile.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from ..conftest import ROOT
from ..faults.procstat import rss_bytes, threads
from ..supervisor.procs import Server

REQUEST_DEADLINE = 5.0  # trioserve.metrics.admin.REQUEST_DEADLINE (a test checks they agree)
ATTACKERS = 600
TRICKLE = 5.0  # seconds between the attackers' bytes


@pytest.fixture
def server() -> Iterator[tuple[Server, str]]:
    args = ["tests.faults.apps:hello", "--bind", "127.0.0.1:0", "--no-access-log"]
    proc = Server(ROOT, [*args, "--metrics-bind", "127.0.0.1:0"])
    try:
        admin = proc.wait_for(r"Metrics and health on (http://\S+)")[0].group(1)
        proc.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")
        yield proc, admin
    finally:
        proc.stop()


def _open_attackers(port: int) -> list[socket.socket]:
    socks = []
    for _ in range(ATTACKERS):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


def _trickle(socks: list[socket.socket], alive: set[socket.socket]) -> None:
    """One byte from each attacker still connected; the ones the server cut are dropped."""
    for sock in list(alive):
        try:
            if sock.recv(1024) == b"":
                alive.discard(sock)
                continue
        except BlockingIOError:
            pass
        except OSError:
            alive.discard(sock)
            continue
        try:
            sock.send(b"G")
        except BlockingIOError:
            pass
        except OSError:
            alive.discard(sock)


def test_trickling_clients_are_cut_and_scrapes_still_answered(
    server: tuple[Server, str],
) -> None:
    proc, admin = server
    pid = proc.proc.pid
    port = int(admin.rsplit(":", 1)[1])
    assert httpx.get(admin + "/healthz", timeout=5).status_code == 200
    threads_before = threads(pid)
    rss_before = rss_bytes(pid)
    socks = _open_attackers(port)
    alive = set(socks)
    most_threads = threads_before
    slowest_scrape = 0.0
    start = time.monotonic()
    next_byte = start
    try:
        # Two trickle rounds past the deadline: every attacker must be cut by then.
        while time.monotonic() - start < REQUEST_DEADLINE + 2 * TRICKLE:
            if time.monotonic() >= next_byte:
                _trickle(socks, alive)
                next_byte += TRICKLE
            most_threads = max(most_threads, threads(pid))
            began = time.monotonic()
            scrape = httpx.get(admin + "/metrics", timeout=10)
            assert scrape.status_code == 200 and b"trioserve_" in scrape.content
            slowest_scrape = max(slowest_scrape, time.monotonic() - began)
            time.sleep(0.5)
        _trickle(socks, alive)
    finally:
        for sock in socks:
            sock.close()
    growth = rss_bytes(pid) - rss_before
    print(f"threads {threads_before} -> {most_threads}; slowest scrape {slowest_scrape:.3f} s")
    assert most_threads <= threads_before + 2, f"{most_threads} threads (was {threads_before})"
    assert not alive, f"{len(alive)} trickling clients still connected"
    assert slowest_scrape < 2.0
    assert growth < 10 * 2**20


def test_the_deadline_here_is_the_servers() -> None:
    from trioserve.metrics import admin

    assert admin.REQUEST_DEADLINE == REQUEST_DEADLINE

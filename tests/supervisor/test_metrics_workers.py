"""Metrics with --workers 2: one scrape totals every worker, through restarts and kills."""

from __future__ import annotations

import http.client
import os
import signal
import threading
from pathlib import Path

import httpx

from ..metrics.helpers import Samples, parse, total, value
from .conftest import StartServer
from .procs import Server, alive, wait_until


def _scrape(admin: str) -> Samples:
    response = httpx.get(admin + "/metrics", timeout=5)
    assert response.status_code == 200
    return parse(response.text)


def _load(server: Server, threads: int, each: int, keep_alive: bool) -> tuple[int, set[str]]:
    """``threads`` x ``each`` GETs; returns (answered with 200, worker pids seen)."""
    ok = 0
    pids: set[str] = set()
    lock = threading.Lock()

    def run() -> None:
        nonlocal ok
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(each):
            if not keep_alive:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read().decode()
            with lock:
                ok += response.status == 200
                pids.add(body.split()[0])
        conn.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    return ok, pids


def _ready(admin: str) -> int:
    return httpx.get(admin + "/readyz", timeout=5).status_code


def test_one_scrape_totals_all_workers_through_restarts(start: StartServer) -> None:
    server = start("--workers", "2", "--metrics-bind", "127.0.0.1:0")
    server.wait_serving(workers=2)
    admin = server.wait_for(r"Metrics and health on (http://\S+)")[0].group(1)
    directory = Path(server.wait_for(r"Workers count into (\S+)")[0].group(1))
    assert directory.is_dir()
    assert wait_until(lambda: _ready(admin) == 200, 5)

    fresh, fresh_pids = _load(server, threads=4, each=60, keep_alive=False)
    kept, kept_pids = _load(server, threads=2, each=80, keep_alive=True)
    sent = fresh + kept
    assert sent == 400
    assert len(fresh_pids | kept_pids) == 2  # both workers served
    samples = _scrape(admin)
    assert total(samples, "trioserve_requests_total") == sent
    assert value(samples, "trioserve_request_duration_seconds_count") == sent
    assert value(samples, "trioserve_workers") == 2
    assert value(samples, "trioserve_lifespan_state", state="serving") == 2
    assert value(samples, "trioserve_worker_starts_total") == 2

    # Rolling restart: not ready from the signal until the old workers are gone.
    server.signal(signal.SIGHUP)
    assert wait_until(lambda: _ready(admin) == 503, 5, step=0.01)
    assert wait_until(lambda: _ready(admin) == 200, 20)
    server.wait_for(r"Worker \d+ stopped", n=2, timeout=20)
    samples = _scrape(admin)
    assert total(samples, "trioserve_requests_total") == sent  # the old workers' counts stay
    assert value(samples, "trioserve_worker_restarts_total", cause="sighup") == 2
    assert value(samples, "trioserve_worker_exits_total", cause="stopped") == 2
    assert value(samples, "trioserve_worker_starts_total") == 4
    assert len(list(directory.iterdir())) == 2  # exited workers' files were folded in

    # A worker killed outright: what it had counted is still in its file.
    more, _ = _load(server, threads=2, each=25, keep_alive=False)
    sent += more
    victim = int(server.wait_for(r"Worker (\d+) ready", n=4)[-1].group(1))
    # A worker counts a request just after its last write; let it get there before the kill
    # (a kill inside that window loses that one count, which the rolling-deploy test allows).
    assert wait_until(lambda: total(_scrape(admin), "trioserve_requests_total") == sent, 5)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: not alive(victim), 5)
    server.wait_for(r"Worker \d+ ready", n=5, timeout=20)
    samples = _scrape(admin)
    assert total(samples, "trioserve_requests_total") == sent
    assert value(samples, "trioserve_worker_exits_total", cause="signal") == 1
    assert value(samples, "trioserve_worker_restarts_total", cause="died") == 1
    assert value(samples, "trioserve_workers") == 2

    server.stop()
    assert server.proc.returncode == 0
    assert not directory.exists()


def test_max_requests_recycling_is_not_ready_until_the_old_worker_left(
    start: StartServer,
) -> None:
    server = start("--workers", "2", "--max-requests", "20", "--metrics-bind", "127.0.0.1:0")
    server.wait_serving(workers=2)
    admin = server.wait_for(r"Metrics and health on (http://\S+)")[0].group(1)
    assert wait_until(lambda: _ready(admin) == 200, 5)
    sent = 0
    while not server.count(r"reached max_requests") and sent < 100:
        assert server.get("/")[0] == 200
        sent += 1
    assert sent < 100
    # The worker asked for its replacement: 503 until it has drained and exited.
    assert _ready(admin) == 503  # (its successor is still starting Python)
    server.wait_for(r"Worker \d+ stopped", timeout=20)
    assert wait_until(lambda: _ready(admin) == 200, 10)
    samples = _scrape(admin)
    assert value(samples, "trioserve_worker_restarts_total", cause="max_requests") >= 1
    assert total(samples, "trioserve_requests_total") == sent


def test_a_bad_metrics_bind_is_a_usage_error(start: StartServer) -> None:
    for workers in ("1", "2"):
        server = start("--workers", workers, "--metrics-bind", "127.0.0.1:notaport")
        assert server.proc.wait(20) == 2
        server.wait_for(r"port 'notaport' is not a number")

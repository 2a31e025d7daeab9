"""A real Prometheus (Debian package ``prometheus``) scrapes a running trioserve.

Prometheus gets its own config and storage in a temp dir and a free port, is started and
stopped by its PID, and is asked through its HTTP query API for what it scraped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from ..supervisor.conftest import StartServer
from ..supervisor.procs import wait_until

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs prometheus (Debian package prometheus)"
)

CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: trioserve
    static_configs:
      - targets: ["{target}"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def query(base: str, promql: str) -> float | None:
    try:
        response = httpx.get(base + "/api/v1/query", params={"query": promql}, timeout=5)
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):  # not up yet: "Service Unavailable"
        return None
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_requests_sent(start: StartServer, tmp_path: Path) -> None:
    server = start("--workers", "2", "--metrics-bind", "127.0.0.1:0")
    server.wait_serving(workers=2)
    admin = server.wait_for(r"Metrics and health on http://(\S+)")[0].group(1)
    sent = 0
    with httpx.Client() as client:
        for i in range(120):
            # Fresh connections and keep-alive, so both workers serve.
            if i % 2:
                response = httpx.get(f"http://127.0.0.1:{server.port}/")
            else:
                response = client.get(f"http://127.0.0.1:{server.port}/")
            sent += response.status_code == 200
    assert sent == 120
    with open(tmp_path / "prometheus.log", "wb") as log:
        _scrape_with_prometheus(tmp_path, admin, sent, log)


def _scrape_with_prometheus(tmp_path: Path, admin: str, sent: int, log: BinaryIO) -> None:
    (tmp_path / "prometheus.yml").write_text(CONFIG.format(target=admin))
    port = free_port()
    assert PROMETHEUS is not None
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        promql = 'sum(trioserve_requests_total{job="trioserve"})'
        assert wait_until(lambda: query(base, promql) == sent, 45, step=0.5), (
            f"Prometheus query {promql} gave {query(base, promql)}, expected {sent}; log:\n"
            + (tmp_path / "prometheus.log").read_text()[-3000:]
        )
        assert query(base, 'up{job="trioserve"}') == 1
        assert query(base, "sum(trioserve_workers)") == 2
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

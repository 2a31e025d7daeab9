"""Smoke run of the HTTP/2 benchmark (benchmarks/h2bench.py): it must start trioserve, drive
h2load and measure idle-connection memory, or a real run would measure nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "h2bench.py"


def test_h2bench_quick_run() -> None:
    if shutil.which("h2load") is None:
        pytest.skip("h2load not installed (Debian package nghttp2-client)")
    argv = [sys.executable, str(BENCH), "--quick", "--only", "trioserve", "--connections", "20"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| trioserve"))
    hello, big_rps, big_mb, idle, h1 = (cell.strip() for cell in row.split("|")[2:7])
    assert float(hello) > 0 and float(big_rps) > 0 and float(big_mb) > 0 and float(h1) > 0
    assert 0 < float(idle) < 1024


def test_h2bench_tls_run() -> None:
    """--tls: both servers get the certificate, h2load speaks h2 over TLS."""
    if shutil.which("h2load") is None:
        pytest.skip("h2load not installed (Debian package nghttp2-client)")
    argv = [sys.executable, str(BENCH), "--quick", "--tls", "--only", "trioserve"]
    argv += ["--scenario", "hello"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| trioserve"))
    assert float(row.split("|")[2]) > 0


def test_h2calls_counts_only_the_server() -> None:
    """benchmarks/h2calls.py: a few hundred server calls per GET, far more per 1 MiB."""
    argv = [sys.executable, str(BENCH.parent / "h2calls.py"), "-n", "40"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    calls = {line.split()[1]: float(line.split()[2]) for line in result.stdout.splitlines()}
    assert 100 < calls["hello:"] < 2000 and 100 < calls["m10:"] < 2000
    assert calls["big:"] > calls["hello:"]

"""benchmarks/h3.py runs end to end on trioserve (tiny counts), so a benchmark run cannot
silently measure errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.programs import requires_program

ROOT = Path(__file__).resolve().parents[2]


@requires_program("gtlsclient", package="ngtcp2-client")
def test_h3_benchmark_smoke(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "h3.py"),
        "--quick",
        "--only",
        "trioserve",
        "--scenario",
        "hello",
        "download20",
        "idle",
        "--requests",
        "50",
        "--clients",
        "2",
        "--idle",
        "5",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results.json").read_text())["results"]["trioserve"]
    assert results["hello"][0]["failed_clients"] == 0
    assert results["hello"][0]["rps"] > 0
    assert results["download20"][0]["complete"] == 1
    assert results["idle"][0]["connections"] == 5
    assert "| hello (rps) |" in (tmp_path / "results.md").read_text()

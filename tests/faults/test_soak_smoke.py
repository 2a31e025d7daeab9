"""The soak benchmark script works (a small N): no client errors, no descriptor left open."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import ROOT


def test_soak_script_smoke_run() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "-n", "1500", "-c", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["server_alive"] is True
    assert result["client_errors"] == 0
    assert result["fd_growth"] == 0
    assert result["requests"] == 1500
    assert result["unexpected_errors"] == 0
    assert result["error_lines"] > 0  # the mix's app faults were logged, one line each

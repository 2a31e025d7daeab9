"""The slow-clients benchmark script works (every timeout scaled down): each kind of slow
client is held about as long as its setting says, and answered as documented."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import ROOT


def test_slow_clients_script_smoke_run() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "slow_clients.py"), "--scale", "0.1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    r = json.loads(out)
    assert r["slow-head"]["answer"] == "408" and 0.9 <= r["slow-head"]["held_s"] < 2.5
    assert r["slow-body"]["answer"] == "408" and 1.9 <= r["slow-body"]["held_s"] < 3.5
    assert r["stalled-body"]["answer"] == "408" and 3.9 <= r["stalled-body"]["held_s"] < 5.5
    assert 5.9 <= r["no-read"]["held_s"] < 9
    assert 0.4 <= r["idle"]["held_s"] < 1.5
    assert r["gone-behind-pipeline"]["held_s"] < 1.0

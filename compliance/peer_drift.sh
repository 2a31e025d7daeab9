#!/usr/bin/env bash
# Opt-in: do the newest Uvicorn and Hypercorn still differ where tests/differential says so?
#
# The test suite runs against the peers pinned in pyproject.toml's test extra, so it never turns
# red because someone else released something. This report installs the newest releases in a
# separate venv (.venv-drift, or $DRIFT_VENV) and runs the differential module in report mode:
# every case whose answer moved is listed as an XFAIL with what changed, and the script exits 0.
# Read the list, then update DIFFERENCES and the pins (and docs/uvicorn.md) in one commit.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DRIFT_VENV:-.venv-drift}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[test]'
# Over the pins on purpose: pip warns that the test extra wanted other versions.
"$venv/bin/python" -m pip install -q --upgrade uvicorn hypercorn 2>&1 | grep -v "requires\|dependency conflicts" || true
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print("peers under test:", {name: version(name) for name in ("uvicorn", "hypercorn")})
PY
TRIOSERVE_PEER_DRIFT=report "$venv/bin/python" -m pytest -q -p no:cacheprovider -rx \
    tests/differential/test_vs_uvicorn_hypercorn.py || {
    echo "peer_drift: the differential module failed outright (not a drift report)" >&2
    exit 1
}

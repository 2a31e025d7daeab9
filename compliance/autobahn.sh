#!/usr/bin/env bash
# Autobahn|Testsuite (WebSocket conformance) against trioserve (see compliance/autobahn.py).
#
# usage: compliance/autobahn.sh [--fast|--full|--quick] [--cases A,B] [--exclude A,B] [--outdir DIR]
# Installs the fuzzing client from PyPI into a Python 2.7 virtualenv on first use, starts
# trioserve with compliance/echo_app.py on a free port, runs the cases, stops the server by its
# PID. Ends with "autobahn: N passed, N failed"; exit 1 on a FAILED case, 2 on a setup problem.
# Env: PYTHON (default .venv/bin/python), PY27 (a Python 2.7), AUTOBAHN_VENV.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
exec "$python" "$root/compliance/autobahn.py" "$@"

#!/usr/bin/env bash
# Run gunicorn's raw HTTP/1.1 request corpus (../shared) against trioserve on a free port.
# Exit 1 on any FAILED file. Starts its own server and stops it by PID.
# The server reads TRIOSERVE_* settings: TRIOSERVE_HTTP=h11 (or httptools) runs it with that parser.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$root/../shared}
python=${PYTHON:-$root/.venv/bin/python}
log=$(mktemp)
"$python" -m trioserve echo_app:app --app-dir "$shared/tools/conformance" --port 0 \
    --no-access-log --log-level info >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*Running on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 2; }
    sleep 0.1
done
[ -n "$port" ] || { echo "trioserve did not start"; cat "$log"; exit 2; }
python3 "$shared/tools/conformance/http_corpus.py" 127.0.0.1 "$port" --quiet "$@"

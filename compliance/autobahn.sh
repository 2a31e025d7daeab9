#!/usr/bin/env bash
# Autobahn|Testsuite (WebSocket conformance) against trioserve serving the shared echo app.
#
# usage: compliance/autobahn.sh [--fast|--full|--quick] [extra autobahn.sh args...]
#
# Starts trioserve with ../shared/tools/conformance/echo_app.py on a free 127.0.0.1 port,
# runs ../shared/tools/conformance/autobahn.sh against it (default --fast: 301 cases, ~20 s;
# --full: 517 cases incl. permessage-deflate, ~14 min), stops the server by its PID.
# Exit: 0 no FAILED case, 1 some FAILED, 2 setup/run problem.
# Env: SHARED (default ../shared beside the repo), PYTHON (default .venv/bin/python),
#      AUTOBAHN_OUTDIR (report directory; default a temp dir).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CONF="$SHARED/tools/conformance"
MODE="--fast"
ARGS=()
for arg in "$@"; do
  case "$arg" in
    --fast|--full|--quick) MODE="$arg" ;;
    *) ARGS+=("$arg") ;;
  esac
done
[ -f "$CONF/echo_app.py" ] || { echo "compliance/autobahn.sh: $CONF/echo_app.py not found (set SHARED)" >&2; exit 2; }
bash "$CONF/setup-autobahn.sh" >/dev/null || { echo "compliance/autobahn.sh: setup-autobahn.sh failed" >&2; exit 2; }

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
LOG="$(mktemp -t trioserve-autobahn.XXXXXX.log)"
"$PYTHON" -m trioserve --app-dir "$CONF" echo_app:app --host 127.0.0.1 --port "$PORT" \
  --log-level warning --no-access-log >"$LOG" 2>&1 &
SERVER=$!
stop_server() {
  if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER" 2>/dev/null
  fi
  wait "$SERVER" 2>/dev/null
}
trap stop_server EXIT

# Wait (bounded) until the server accepts connections.
if ! "$PYTHON" - "$PORT" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
then
  echo "compliance/autobahn.sh: trioserve did not start; its log:" >&2
  cat "$LOG" >&2
  exit 2
fi

outdir_args=()
[ -n "${AUTOBAHN_OUTDIR:-}" ] && outdir_args=(--outdir "$AUTOBAHN_OUTDIR")
bash "$CONF/autobahn.sh" "$MODE" "${outdir_args[@]}" "${ARGS[@]}" "ws://127.0.0.1:$PORT/"
RC=$?
if grep -q -E "Traceback|Unexpected error" "$LOG"; then
  echo "compliance/autobahn.sh: the server logged errors:" >&2
  grep -E -A5 "Traceback|Unexpected error" "$LOG" | head -40 >&2
  [ "$RC" -eq 0 ] && RC=1
fi
exit "$RC"

#!/usr/bin/env bash
# gunicorn's raw HTTP/1.1 request corpus against trioserve (see compliance/http_corpus.py).
#
# usage: compliance/http_corpus.sh [http_corpus.py options]
# Fetches the corpus from gunicorn's sdist on PyPI on first use (cached in
# ~/.cache/trioserve-compliance), starts trioserve with compliance/echo_app.py on a free port,
# sends every file, stops the server by its PID. TRIOSERVE_HTTP=h11 (or httptools) picks the
# parser. Ends with "http_corpus: N passed, N failed, N skipped"; exit 1 on a failure.
# Env: PYTHON (default .venv/bin/python: the interpreter that has trioserve installed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
exec "$python" "$root/compliance/http_corpus.py" --quiet "$@"

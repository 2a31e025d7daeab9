#!/usr/bin/env bash
# The benchmark virtualenv: trioserve from this checkout (with httptools, and prometheus-client
# for the trioserve-httptools-metrics server) and the servers it is
# compared with (Hypercorn with trio, Uvicorn with httptools and uvloop, Granian), FastAPI for the
# json scenario, matplotlib for the chart. All from PyPI. wrk (Debian package) is installed when
# run as root and missing; without it benchmarks/run.py uses benchmarks/pyload.py.
#
# usage: bash benchmarks/setup.sh            (venv at $VENV, default benchmarks/.benchvenv)
# then:  benchmarks/.benchvenv/bin/python benchmarks/run.py --quick
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$here/.benchvenv}
python=${PYTHON:-python3}
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e "$here/..[speed,metrics]" 'hypercorn[trio]' uvicorn httptools \
    uvloop granian wsproto websockets fastapi python-multipart matplotlib py-spy
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
        echo "wrk not installed (Debian package: wrk); run.py will use pyload.py instead" >&2
    fi
fi
"$venv/bin/python" - <<'PY'
import importlib.metadata as m
names = ["trioserve", "hypercorn", "uvicorn", "granian", "httptools", "uvloop", "trio", "fastapi"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))
PY
echo "benchmark venv ready: $venv/bin/python $here/run.py --quick"

#!/usr/bin/env bash
# The release artifacts work on their own: build the sdist and the wheel, let twine check them,
# install the wheel into a fresh virtualenv OUTSIDE the checkout (so nothing is imported from
# the source tree) and use it as a user would: `trioserve --version`, the example app answering
# a real request, and the pytest plugin's fixtures in a test of its own. A package file, an
# entry point or the py.typed marker missing from the wheel fails here.
#
# usage: bash .ci/check_wheel.sh [PYTHON]     (PYTHON: an interpreter with build and twine;
#                                              default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
version=$("$python" -c 'import re; print(re.search(r"__version__ = \"(.+)\"", open("trioserve/__init__.py").read())[1])')
rm -rf dist
"$python" -m build --outdir dist . >/dev/null
"$python" -m twine check --strict dist/*
wheel=$(ls dist/trioserve-"$version"-py3-none-any.whl)
ls dist/trioserve-"$version".tar.gz >/dev/null

work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel" httpx pytest pytest-trio
cp examples/hello.py "$work/hello.py"
cd "$work"

echo "-- trioserve --version"
out=$(venv/bin/trioserve --version)
echo "$out"
[[ $out == "trioserve $version "* ]] || { echo "expected version $version"; exit 1; }

echo "-- the wheel holds py.typed and CHANGELOG.md"
venv/bin/python - "$version" <<'PY'
import importlib.resources, sys
import trioserve
pkg = importlib.resources.files("trioserve")
assert trioserve.__file__.startswith(sys.prefix), trioserve.__file__  # the wheel, not the tree
assert pkg.joinpath("py.typed").is_file(), "py.typed missing"
changes = pkg.joinpath("CHANGELOG.md").read_text()
assert changes.startswith("# Changelog"), "CHANGELOG.md missing"
from importlib.metadata import version
assert version("trioserve") == trioserve.__version__ == sys.argv[1]
PY

echo "-- the example app answers a real request"
: >server.log  # exists before the server starts: the loop below reads it at once
venv/bin/trioserve hello:app --port 0 --no-access-log >server.log 2>&1 &
server=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*Running on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' server.log | head -n 1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat server.log; exit 1; }
venv/bin/python -c "
import sys, urllib.request
r = urllib.request.urlopen('http://127.0.0.1:$port/', timeout=10)
body = r.read()
assert r.status == 200 and body == b'Hello, world!\n', (r.status, body)
print(r.status, body)"
kill "$server"; wait "$server" || true; server=""

echo "-- the pytest plugin (entry point pytest11) from the wheel"
cat >test_plugin.py <<'PY'
from hello import app


async def test_hello(trioserve_client):
    client = await trioserve_client(app)
    response = await client.get("/")
    assert response.status_code == 200
    assert response.text == "Hello, world!\n"
PY
printf '[pytest]\ntrio_mode = true\n' >pytest.ini
venv/bin/python -m pytest -q -p no:cacheprovider test_plugin.py
echo "wheel check: trioserve $version passed"

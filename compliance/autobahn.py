#!/usr/bin/env python3
"""Autobahn|Testsuite (WebSocket conformance) against trioserve serving echo_app.py.

usage: autobahn.py [--fast | --full | --quick] [--cases A,B] [--exclude A,B] [--outdir DIR]

  --fast   (default) every case except 12.* and 13.* (permessage-deflate): 301 cases, ~20 s
  --full   all 517 cases, ~15 min
  --quick  --fast without 9.* (large messages): 247 cases

The fuzzing client, ``wstest`` from the PyPI package autobahntestsuite, is Python 2.7 code.
The first run makes a Python 2.7 virtualenv for it ($AUTOBAHN_VENV, default
~/.cache/trioserve-compliance/autobahn-venv) from PyPI, with the versions pinned below (the
newest that still run on 2.7). Python 2.7 is found as $PY27, in pyenv, or as python2.7 on PATH;
without one the run stops and says how to get it.

Only FAILED counts as a failure: NON-STRICT and INFORMATIONAL are allowed outcomes, and their
numbers vary from run to run. An error the server logged also fails the run. The last line is
``autobahn: N passed, N failed``; exit 1 on a failure, 2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gunicorn_corpus import CACHE  # noqa: E402
from serve_echo import logged_errors, serve_echo  # noqa: E402

VENV = Path(os.environ.get("AUTOBAHN_VENV") or CACHE / "autobahn-venv")
# autobahntestsuite's own requirements, held at the last releases that support Python 2.7.
PINNED = [
    "autobahntestsuite==25.10.1",
    "autobahn[accelerate,twisted]==0.10.9",
    "Twisted==19.10.0",
    "txaio==2.1.0",
    "zope.interface==4.6.0",
    "incremental==16.10.1",
    "pyOpenSSL==19.1.0",
    "cryptography==3.3.2",
    "service_identity==18.1.0",
    "klein==17.10.0",
    "Werkzeug==1.0.1",
    "jinja2==2.11.3",
    "markupsafe==1.1.1",
    "unittest2==1.1.0",
    "six==1.16.0",
    "setuptools==44.0.0",
]
MODES = {
    "full": ([], 517),
    "fast": (["12.*", "13.*"], 301),
    "quick": (["9.*", "12.*", "13.*"], 247),
}
HOW_TO_GET_PY27 = """\
autobahn: no Python 2.7 found (the Autobahn|Testsuite client needs it).
  Get one with pyenv (https://github.com/pyenv/pyenv):  pyenv install 2.7.18
  (Debian's build dependencies for it: apt-get install build-essential libssl-dev zlib1g-dev
   libbz2-dev libreadline-dev libsqlite3-dev libffi-dev), or point PY27 at any python2.7."""


def find_python27() -> str | None:
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates = [os.environ.get("PY27", "")]
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/2.7*/bin/python"), reverse=True)
    candidates.append(shutil.which("python2.7") or "")
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; assert sys.version_info[:2] == (2, 7)"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return candidate
    return None


def ensure_wstest() -> Path | None:
    wstest = VENV / "bin" / "wstest"
    if wstest.exists():
        return wstest
    python27 = find_python27()
    if python27 is None:
        print(HOW_TO_GET_PY27, file=sys.stderr)
        return None
    print(f"autobahn: installing autobahntestsuite into {VENV} with {python27}", flush=True)
    with tempfile.TemporaryDirectory() as tools:
        # The last virtualenv that makes Python 2.7 environments, kept out of the real one.
        pip27 = [python27, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip27, "--target", tools, "virtualenv<20.22"], check=True)
        env = {**os.environ, "PYTHONPATH": tools}
        subprocess.run([python27, "-m", "virtualenv", "-q", str(VENV)], check=True, env=env)
    pip = [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *PINNED], check=True)
    return wstest


def run_wstest(wstest: Path, url: str, args: argparse.Namespace, outdir: Path) -> int:
    excluded, _ = MODES[args.mode]
    spec: dict[str, object] = {
        "outdir": str(outdir),
        "servers": [{"agent": "trioserve", "url": url}],
        "cases": args.cases.split(",") if args.cases else ["*"],
        "exclude-cases": excluded + (args.exclude.split(",") if args.exclude else []),
        "exclude-agent-cases": {},
    }
    (outdir / "fuzzingclient.json").write_text(json.dumps(spec, indent=1))
    timeout = 1800 if args.mode == "full" else 900
    with open(outdir / "wstest.log", "wb") as log:
        cmd = [str(wstest), "-m", "fuzzingclient", "-s", "fuzzingclient.json"]
        try:
            return subprocess.run(
                cmd, cwd=outdir, stdout=log, stderr=log, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            print(f"autobahn: wstest did not finish in {timeout} s", file=sys.stderr)
            return 2


def summarize(outdir: Path, expected: int | None) -> tuple[int, int, bool]:
    """Print the outcome counts and every FAILED case; (passed, failed, report complete)."""
    index = outdir / "index.json"
    if not index.exists():
        print(f"autobahn: no report in {outdir} (see wstest.log there)", file=sys.stderr)
        return 0, 0, False
    results: dict[str, dict[str, str]] = next(iter(json.loads(index.read_text()).values()), {})
    behavior = Counter(r["behavior"] for r in results.values())
    closing = Counter(r["behaviorClose"] for r in results.values())
    print("autobahn: cases", len(results), " behavior:", dict(sorted(behavior.items())))
    print("autobahn: closing behavior:", dict(sorted(closing.items())))
    failed = sorted(case for case, r in results.items() if r["behavior"] == "FAILED")
    for case in failed:
        print(f"  FAILED {case}  (report: {outdir / results[case]['reportfile']})")
    complete = expected is None or len(results) == expected
    if not complete:
        print(f"autobahn: expected {expected} cases, the report has {len(results)}")
    return len(results) - len(failed), len(failed), complete


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for mode in MODES:
        parser.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    parser.add_argument("--cases", help="comma-separated case patterns instead of all ('1.*')")
    parser.add_argument("--exclude", help="comma-separated case patterns to leave out")
    parser.add_argument("--outdir", type=Path, help="report directory (default: a temp dir)")
    args = parser.parse_args()
    args.mode = args.mode or "fast"
    return args


def setup_failed(why: str) -> int:
    """A run that could not be made still ends with the closing line, as one failure."""
    print(f"autobahn: {why}", file=sys.stderr)
    print("autobahn: 0 passed, 1 failed")
    return 2


def main() -> int:
    args = parse_args()
    wstest = ensure_wstest()
    if wstest is None:
        return setup_failed("the fuzzing client is not installed")
    outdir = (args.outdir or Path(tempfile.mkdtemp(prefix="autobahn-"))).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    logs: list[Path] = []
    started = time.monotonic()
    with serve_echo(log_path=logs) as address:
        if address is None:
            return setup_failed("trioserve did not start")
        url = f"ws://{address[0]}:{address[1]}/"
        print(f"autobahn: mode={args.mode} url={url} report={outdir}/index.html", flush=True)
        code = run_wstest(wstest, url, args, outdir)
        errors = logged_errors(logs[0])
    print(f"autobahn: wstest exit {code} after {time.monotonic() - started:.0f} s")
    custom = args.cases or args.exclude
    passed, failed, complete = summarize(outdir, None if custom else MODES[args.mode][1])
    for line in errors[:20]:
        print("autobahn: the server logged:", line)
    if errors:
        failed += 1  # the run as a whole counts as one more failure
    print(f"autobahn: {passed} passed, {failed} failed")
    if failed:
        return 1
    return 0 if code == 0 and complete else 2


if __name__ == "__main__":
    sys.exit(main())

"""The helper that skips (or, in CI, fails) tests whose system program is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .programs import find_program, require_program

ABSENT = "trioserve-no-such-program"
ROOT = Path(__file__).resolve().parent.parent


def test_finds_a_program_on_path() -> None:
    path = require_program("sh", package="dash")
    assert os.path.isabs(path) and os.access(path, os.X_OK)


def test_missing_program_skips_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert find_program(ABSENT) is None
    with pytest.raises(
        pytest.skip.Exception, match=rf"^{ABSENT} not found \(Debian package: pkg\)$"
    ):
        require_program(ABSENT, package="pkg")


@pytest.mark.parametrize("value", ["true", "1"])
def test_missing_program_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"Debian package: pkg.*CI must install it"):
        require_program(ABSENT, package="pkg")


SKIPPING_TESTS = """
import pytest

@pytest.mark.skipif(True, reason="gtlsclient not installed (Debian: ngtcp2-client)")
def test_needs_a_program():
    pass

def test_skips_for_another_reason():
    pytest.skip("only on Windows")

@pytest.mark.parametrize("reason", ["needs kubectl (Debian package kubernetes-client)"])
def test_needs_another(reason):
    pytest.skip(reason)
"""


def run_inner_pytest(tmp_path: Path, source: str, ci: bool, *args: str) -> tuple[int, str]:
    """pytest on a file of its own, with this suite's conftest loaded as a plugin."""
    (tmp_path / "test_inner.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*cmd, "-rs", str(tmp_path / "test_inner.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout


def test_a_skip_for_a_missing_program_fails_in_ci_only(tmp_path: Path) -> None:
    code, out = run_inner_pytest(tmp_path, SKIPPING_TESTS, ci=False)
    assert code == 0 and "3 skipped" in out, out
    code, out = run_inner_pytest(tmp_path, SKIPPING_TESTS, ci=True)
    assert code == 1, out
    assert (
        "skipped in CI for a missing program" in out and "1 failed, 1 skipped, 1 error" in out
    ), out


def test_collecting_no_test_is_a_failure_not_exit_5(tmp_path: Path) -> None:
    code, out = run_inner_pytest(tmp_path, SKIPPING_TESTS, False, "-k", "no_such_test")
    assert code == 1, out
    assert "no test was collected" in out

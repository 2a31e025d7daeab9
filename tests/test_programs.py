"""The helper that skips (or, in CI, fails) tests whose system program is missing."""

from __future__ import annotations

import os

import pytest

from .programs import find_program, require_program

ABSENT = "trioserve-no-such-program"


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

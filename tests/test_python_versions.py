"""pyproject.toml declares the Python versions that .ci/run tests, and no others."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_classifiers_and_requires_python_match_the_versions_ci_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = sorted(
        (int(minor) for c in project["classifiers"] for minor in re.findall(r":: 3\.(\d+)$", c)),
    )
    ci_run = (ROOT / ".ci" / "run").read_text()
    # Each `other_python 3.N` line, plus the interpreter that makes .venv (any supported one).
    tested = {int(m) for m in re.findall(r"^other_python 3\.(\d+)", ci_run, re.MULTILINE)}
    assert tested, "no other_python lines in .ci/run"
    assert tested <= set(declared)
    # Every minor version between the oldest and the newest tested one is declared.
    assert declared == list(range(min(tested), max(tested) + 1))
    assert project["requires-python"] == f">=3.{min(tested)}"

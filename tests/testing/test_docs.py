"""The tutorial in docs/testing.md runs as written (its app and tests, through pytester)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .test_plugin import run

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def tutorial_files() -> dict[str, str]:
    """Python blocks whose first line is ``# NAME.py``, concatenated per file in order."""
    files: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, rest = block.partition("\n")
        match = re.fullmatch(r"# (\w+\.py)", first)
        if match:
            files[match[1]] = files.get(match[1], "") + rest
        elif "async def test_" in block:  # a later part of the test module
            files["test_main.py"] = files.get("test_main.py", "") + "\n\n" + block
    return files


def test_tutorial_runs(pytester: pytest.Pytester) -> None:
    files = tutorial_files()
    assert set(files) == {"main.py", "test_main.py"}
    pytester.makeini("[pytest]\ntrio_mode = true\n")  # as the tutorial says
    for name, source in files.items():
        pytester.makepyfile(**{name[:-3]: source})
    pytester.syspathinsert()
    result = run(pytester)
    result.assert_outcomes(passed=source_tests(files["test_main.py"]))


def source_tests(source: str) -> int:
    return len(re.findall(r"^async def test_", source, flags=re.M))

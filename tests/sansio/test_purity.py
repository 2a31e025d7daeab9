"""The protocol core stays sans-IO: no trio, no asyncio, no clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trioserve.sansio

SANSIO = Path(trioserve.sansio.__file__).parent
FORBIDDEN_MODULES = {"trio", "anyio", "asyncio", "socket", "ssl", "selectors"}
# Functions that read a clock: the time is passed in instead.
CLOCK_READS = {
    "time",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
    "process_time",
    "process_time_ns",
    "thread_time",
    "now",
    "utcnow",
    "today",
}
# time functions that read the clock when called without their time argument.
CLOCK_DEFAULTS = {"localtime": 1, "gmtime": 1, "ctime": 1, "asctime": 1, "strftime": 2}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_sansio_imports_no_io_library() -> None:
    files = sorted(SANSIO.glob("*.py"))
    assert files
    for path in files:
        bad = _imports(path) & FORBIDDEN_MODULES
        assert not bad, f"{path.name} imports {bad}"


def test_sansio_has_no_async_code() -> None:
    for path in SANSIO.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.AsyncFunctionDef, ast.Await)), path.name


def _clock_reads(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            found += [a.name for a in node.names if a.name in CLOCK_READS]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        if owner_name not in ("time", "datetime", "date"):
            continue
        if name in CLOCK_READS:
            found.append(f"{owner_name}.{name}()")
        needed = CLOCK_DEFAULTS.get(name)
        if owner_name == "time" and needed is not None and len(node.args) < needed:
            found.append(f"time.{name}() without a time")
    return found


def test_sansio_reads_no_clock() -> None:
    for path in sorted(SANSIO.glob("*.py")):
        found = _clock_reads(ast.parse(path.read_text()))
        assert not found, f"{path.name} reads the clock: {found}"


@pytest.mark.parametrize(
    "source",
    [
        "import time\nx = time.time()",
        "import time\nx = time.monotonic()",
        "from time import perf_counter",
        "import datetime\nx = datetime.datetime.now()",
        "import time\nx = time.strftime('%Y')",
        "import time\nx = time.localtime()",
    ],
)
def test_clock_reads_are_found(source: str) -> None:
    """The check above can fail: each of these reads the clock."""
    assert _clock_reads(ast.parse(source))


def test_formatting_a_given_time_is_not_a_clock_read() -> None:
    assert not _clock_reads(ast.parse("import time\nx = time.strftime('%Y', time.localtime(0))"))

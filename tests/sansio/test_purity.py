"""The protocol core stays sans-IO: no trio, no asyncio, no clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

import trioserve.sansio

SANSIO = Path(trioserve.sansio.__file__).parent
FORBIDDEN_MODULES = {"trio", "anyio", "asyncio", "socket", "ssl", "selectors"}


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

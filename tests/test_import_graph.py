"""trioserve's modules import each other without cycles (TYPE_CHECKING imports aside).

Imports inside functions count too: deferring one end of a cycle into a function only hides
it. ``run`` <-> ``supervisor`` over the exit codes was one (they now live in
``trioserve.exit_codes``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trioserve"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(path: Path) -> set[str]:
    """trioserve modules ``path`` imports anywhere (outside ``if TYPE_CHECKING:``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("trioserve")}
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = package.split(".")
                    base = base[: len(base) - sub.level + 1]
                    target = ".".join(base + ([sub.module] if sub.module else []))
                else:
                    target = sub.module or ""
                if target.startswith("trioserve"):
                    found.add(target)
    return found


def test_no_import_cycles() -> None:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in top_level_imports(path):
            # "from . import x" names a module or a package attribute; keep real modules.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # A package's own submodules import it first anyway: not a cycle edge.
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_supervisor_does_not_import_the_runner() -> None:
    for path in (PACKAGE / "supervisor").glob("*.py"):
        imports = top_level_imports(path)
        assert "trioserve.run" not in imports, path
        if path.name != "worker.py":  # the worker process runs the server
            assert "trioserve._runner" not in imports, path

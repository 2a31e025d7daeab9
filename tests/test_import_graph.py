"""The house rules, checked: trioserve's modules import each other without cycles, no
module is over 500 lines and no function over 60 (docstrings aside), and only
``server/peer.py`` sets a peer's ``eof``/``broken``.

Every import counts for cycles: inside functions (deferring one end of a cycle into a
function only hides it) and under ``if TYPE_CHECKING:`` (a cycle there is still two modules
that each need the other's shapes; a ``Protocol`` on the using side breaks it, as
``supervisor/observe.py`` does for the manager). ``run`` <-> ``supervisor`` over the exit
codes was one (they now live in ``trioserve.exit_codes``).

The size limits have an allow-list below; each entry says why.
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
    """trioserve modules ``path`` imports anywhere (``if TYPE_CHECKING:`` included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
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
                    # "from . import x": x may be a module (trimmed back if it is not).
                    found |= {f"{target}.{alias.name}" for alias in sub.names}
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


# Modules allowed over MAX_MODULE_LINES, and why.
LONG_MODULES = {
    "config.py": "the options table: one field per option drives the CLI and the docs "
    "(the reason is written at the top of the module)",
}
# Functions allowed over MAX_FUNCTION_LINES (module: function), and why.
LONG_FUNCTIONS: dict[str, str] = {}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_modules_stay_under_500_lines() -> None:
    long = {
        _relative(p): n
        for p in PACKAGE.rglob("*.py")
        if (n := p.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert set(long) <= set(LONG_MODULES), long
    stale = set(LONG_MODULES) - set(long)
    assert not stale, f"allowed but no longer long: {stale}"


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the end, its docstring not counted."""
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if docstring and isinstance(first.value.value, str) and first.end_lineno is not None:
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_functions_stay_under_60_lines() -> None:
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_function and (lines := _function_lines(node)) > MAX_FUNCTION_LINES:
                long[f"{_relative(path)}:{node.name}"] = lines
    assert set(long) <= set(LONG_FUNCTIONS), long
    stale = set(LONG_FUNCTIONS) - set(long)
    assert not stale, f"allowed but no longer long: {stale}"


def test_only_the_peer_stream_sets_its_state() -> None:
    """``eof`` and ``broken`` change through PeerStream's named transitions (``lost()``,
    ``give_up()``, ``answer_after_all()``), never by assignment elsewhere."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if _relative(path) == "server/peer.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in ("eof", "broken")
                    and "peer" in ast.unparse(target.value)
                ):
                    found.append(f"{_relative(path)}:{node.lineno}")
    assert not found, found


def test_capabilities_are_typed_not_probed() -> None:
    """No ``getattr(obj, "method", None)`` probe for what a port, a connection or an
    HTTP side can do in the server layer: those are members of their Protocols."""
    probes = []
    for path in (PACKAGE / "server").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in ("send_file", "send_soon", "switch", "error_response")
            ):
                probes.append(f"{path.name}:{node.lineno}")
    assert not probes, probes

"""System programs the tests start (nginx, HAProxy, curl, ss, Chromium, h2load, ...).

The README promises that the test suite passes on a machine with only ``python3``, so a test
that needs a program the machine lacks is skipped, with a one-line reason naming the Debian
package that provides it. In CI (``CI`` set to ``true``/``1``) the same test fails instead:
``.ci/run`` installs every such package, and a skip there would hide a test that never ran.

Two ways to use it::

    from tests.programs import require_program

    nginx = require_program("nginx", package="nginx")      # -> absolute path, or skip/fail

    @requires_program("curl", package="curl")              # a marker, checked before setup
    async def test_something() -> None: ...
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Iterable

import pytest

__all__ = [
    "find_program",
    "in_ci",
    "is_missing_program_reason",
    "require_program",
    "requires_program",
]

# Daemons live in sbin, which a non-root user's PATH often lacks; PostgreSQL's server binaries
# live in a versioned directory that is never on PATH.
EXTRA_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/lib/postgresql/*/bin")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_program(name: str, extra_dirs: Iterable[str] = ()) -> str | None:
    """The program's absolute path: PATH first, then the usual system directories."""
    found = shutil.which(name)
    if found:
        return found
    dirs: list[str] = []
    for pattern in (*extra_dirs, *EXTRA_DIRS):
        dirs.extend(sorted(glob.glob(pattern), reverse=True) if "*" in pattern else [pattern])
    return shutil.which(name, path=os.pathsep.join(dirs)) if dirs else None


# Skip reasons that say a program is missing, ours ("... not found (Debian package: ...)") and
# the usual hand-written ones ("gtlsclient not installed (Debian: ngtcp2-client)", "needs
# kubectl (Debian package kubernetes-client)").
_MISSING = re.compile(r"not (?:found|installed)|\bDebian\b|is required", re.I)


def is_missing_program_reason(reason: str) -> bool:
    return bool(_MISSING.search(reason))


def missing_reason(name: str, package: str) -> str:
    return f"{name} not found (Debian package: {package})"


def require_program(name: str, *, package: str, extra_dirs: Iterable[str] = ()) -> str:
    """The program's path; skips the calling test when it is missing (fails it in CI)."""
    path = find_program(name, extra_dirs)
    if path is not None:
        return path
    reason = missing_reason(name, package)
    if in_ci():
        pytest.fail(f"{reason}; CI must install it (.ci/run)", pytrace=False)
    pytest.skip(reason)


def requires_program(name: str, *, package: str) -> pytest.MarkDecorator:
    """A marker for tests that run the program by name; tests/conftest.py checks it."""
    return pytest.mark.requires_program(name, package=package)


def check_markers(item: pytest.Item) -> None:
    """Called from conftest's ``pytest_runtest_setup`` for every test."""
    for mark in item.iter_markers(name="requires_program"):
        require_program(mark.args[0], package=mark.kwargs["package"])

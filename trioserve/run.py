"""The old name of :mod:`trioserve._runner`, kept so ``from trioserve.run import ...`` works.

``trioserve.run`` itself stays the *function* even after ``import trioserve.run``: the
package refuses to let this module be bound over it (see ``trioserve/__init__.py``).
"""

from __future__ import annotations

from ._runner import (
    WorkerLink,
    make_config,
    options_to_overrides,
    pid_file,
    run,
    run_worker,
    serve_config,
)
from .exit_codes import EXIT_ERROR, EXIT_OK, EXIT_STARTUP_FAILED, EXIT_USAGE

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_STARTUP_FAILED",
    "EXIT_USAGE",
    "WorkerLink",
    "make_config",
    "options_to_overrides",
    "pid_file",
    "run",
    "run_worker",
    "serve_config",
]

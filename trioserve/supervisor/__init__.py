"""Worker processes and the reloader (plain Python: no trio in the supervisor process).

``run_supervisor(config)`` binds the sockets once, then :class:`~.manager.Supervisor`
keeps ``workers`` processes (``python -m trioserve.supervisor.worker``) serving on them;
with ``use_reloader`` a file watcher triggers rolling restarts. See ``docs/workers.md``.
"""

from __future__ import annotations

import os
import threading

from ..binds import close_sockets, create_sockets
from ..config import Config, ConfigError
from ..exit_codes import EXIT_ERROR, EXIT_USAGE
from ..logs import error_log

__all__ = ["run_supervisor"]


def run_supervisor(config: Config) -> int:
    """Supervise worker processes until SIGINT/SIGTERM; returns the process exit code."""
    from .manager import Supervisor
    from .reload import make_watcher

    if threading.current_thread() is not threading.main_thread():
        error_log.error("workers and reload need the main thread (they handle signals)")
        return EXIT_USAGE
    if not config.application_path:
        error_log.error("workers and reload need the app as an import string (MODULE:ATTRIBUTE)")
        return EXIT_USAGE
    if config.use_reloader:
        missing = [d for d in config.reload_dirs if not os.path.isdir(d)]
        if missing:
            error_log.error("--reload-dir: no such directory: %s", ", ".join(missing))
            return EXIT_USAGE
    try:
        sockets = create_sockets(config)
    except ConfigError as exc:
        error_log.error("%s", exc)
        return EXIT_USAGE
    except OSError as exc:
        error_log.error("Could not bind: %s", exc)
        return EXIT_ERROR
    watcher = make_watcher(config) if config.use_reloader else None
    try:
        try:
            supervisor = Supervisor(config, sockets, watcher)
        except (ConfigError, OSError) as exc:
            error_log.error("%s", exc)
            return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_ERROR
        return supervisor.run()
    finally:
        if watcher is not None:
            watcher.close()
        close_sockets(sockets)

"""Worker processes and the reloader (no trio needed here)."""

from __future__ import annotations

from ..config import Config


def run_supervisor(config: Config) -> int:
    """Placeholder until the supervisor lands: refuses clearly instead of misbehaving."""
    from ..logs import error_log

    error_log.error("--workers > 1 and --reload are not available yet")
    return 1

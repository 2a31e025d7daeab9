"""The two loggers, ``trioserve.error`` and ``trioserve.access``, and their setup."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

error_log = logging.getLogger("trioserve.error")
access_log = logging.getLogger("trioserve.access")

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

DEFAULT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
ACCESS_FORMAT = "%(message)s"


def _handler(target: str | None, fmt: str) -> logging.Handler:
    handler: logging.Handler
    if target in (None, "-", "stderr"):
        handler = logging.StreamHandler(sys.stderr)
    elif target == "stdout":
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%d %H:%M:%S %z"))
    return handler


def configure_logging(config: Config) -> None:
    """Attach handlers for a CLI/``run()`` process (library use leaves logging alone)."""
    level = LEVELS.get(config.loglevel.lower(), logging.INFO)
    if config.debug:
        level = min(level, logging.DEBUG)
    for logger, target, fmt, enabled in (
        (error_log, config.errorlog, DEFAULT_FORMAT, True),
        (access_log, config.accesslog, ACCESS_FORMAT, config.access_log),
    ):
        for old in list(logger.handlers):
            if getattr(old, "_trioserve", False):
                logger.removeHandler(old)
                old.close()
        logger.setLevel(level if enabled else logging.CRITICAL + 1)
        logger.propagate = False
        if enabled and target is not None:
            handler = _handler(target, fmt)
            handler._trioserve = True  # type: ignore[attr-defined]
            logger.addHandler(handler)

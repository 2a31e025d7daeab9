"""The two loggers, ``trioserve.error`` and ``trioserve.access``, and their setup.

``configure_logging`` runs only for the CLI / ``run()`` (library use leaves logging alone):

* ``logconfig_dict`` or ``--log-config FILE`` (``.ini``/``.conf`` via ``fileConfig``,
  ``.json``, ``.toml``, ``.yaml`` if PyYAML is installed, or Hypercorn's ``json:``/``toml:``
  prefixes) hand logging over to the user's configuration (Uvicorn's formatters named in it
  work without Uvicorn: :mod:`trioserve.uvicorn_logging`);
* otherwise one handler per logger, to ``errorlog``/``accesslog`` (``-`` = stderr for
  errors and stdout for the access log, as Uvicorn and Hypercorn; ``stderr``, ``stdout``,
  or a file), formatted as text (level names coloured when the stream is a terminal, or as
  ``--use-colors`` says) or as one JSON object per line (``--log-format json``).

Uvicorn's logger names work both ways: an app logging to ``uvicorn.error`` is shown with
trioserve's errors, and a Uvicorn log config (one that configures ``uvicorn``,
``uvicorn.error`` or ``uvicorn.access`` and not trioserve's loggers) receives trioserve's
error and access records, the access ones in Uvicorn's shape (its ``AccessFormatter`` reads
client address, method, path, HTTP version and status from the record's arguments).
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import logging.config
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import uvicorn_logging
from .sansio.accesslog import AccessLine, json_fields

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
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

_COLORS = {
    TRACE: "\x1b[34m",
    logging.DEBUG: "\x1b[36m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET = "\x1b[0m"


class ColorFormatter(logging.Formatter):
    """The text format with the level name coloured (only the level: lines stay greppable)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        color = _COLORS.get(record.levelno)
        if color is None:
            return super().formatMessage(record)
        saved = record.levelname
        record.levelname = f"{color}{saved}{_RESET}"
        try:
            return super().formatMessage(record)
        finally:
            record.levelname = saved


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with stable field names (docs/observability.md).

    Always: time, level, logger, pid, message; exception/stack when present; request_id
    on lines about one request; the access fields of :func:`json_fields` on access lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if isinstance(record.msg, AccessLine):  # an access line keeps its atoms
            entry.update(json_fields(record.msg.atoms))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _stream_for(target: str | None, dash: TextIO | None = None) -> TextIO | None:
    if target == "-" and dash is not None:
        return dash
    if target in (None, "-", "stderr"):
        return sys.stderr
    if target == "stdout":
        return sys.stdout
    return None


def _use_colors(config: Config, stream: TextIO | None) -> bool:
    if config.use_colors is not None:
        return config.use_colors
    if stream is None or os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_formatter(config: Config, fmt: str, stream: TextIO | None) -> logging.Formatter:
    if config.log_format == "json":
        return JSONFormatter()
    if _use_colors(config, stream):
        return ColorFormatter(fmt, DATE_FORMAT)
    return logging.Formatter(fmt, DATE_FORMAT)


def _handler(
    config: Config, target: str | None, fmt: str, dash: TextIO | None = None
) -> logging.Handler:
    stream = _stream_for(target, dash)
    handler: logging.Handler
    if stream is not None:
        handler = logging.StreamHandler(stream)
    else:
        handler = logging.FileHandler(str(target))
    handler.setFormatter(make_formatter(config, fmt, stream))
    return handler


def load_log_config(spec: str) -> None:
    """Apply a logging configuration file (see the module docstring for the formats)."""
    from .config import ConfigError

    kind = ""
    path = spec
    for prefix in ("json:", "toml:", "yaml:", "ini:"):
        if spec.startswith(prefix):
            kind, path = prefix[:-1], spec[len(prefix) :]
            break
    if not kind:
        suffix = Path(path).suffix.lower()
        kind = {".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}.get(
            suffix, "ini"
        )
    try:
        if kind == "ini":
            if not os.path.exists(path):
                raise FileNotFoundError(path)
            parser = configparser.ConfigParser()
            parser.read(path)
            uvicorn_logging.substitute_ini(parser)
            logging.config.fileConfig(parser, disable_existing_loggers=False)
            return
        data = _read_mapping(Path(path).read_bytes(), kind, path)
    except FileNotFoundError:
        raise ConfigError(f"log config file not found: {path}") from None
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        ImportError,
        RuntimeError,
        configparser.Error,
    ) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"log config {path} is invalid: {_causes(exc)}") from None
    apply_dict_config(data, path)


def _read_mapping(raw: bytes, kind: str, path: str) -> dict[str, Any]:
    from .config import ConfigError

    data: Any
    if kind == "json":
        data = json.loads(raw)
    elif kind == "toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
        data = tomllib.loads(raw.decode())
    else:
        try:
            import yaml  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise ConfigError(
                f"log config {path}: YAML needs PyYAML (pip install pyyaml)"
            ) from None
        data = yaml.safe_load(raw)
    if not isinstance(data, dict):
        raise ConfigError(f"log config {path}: expected a dictConfig mapping")
    return data


def apply_dict_config(data: dict[str, Any], where: str) -> None:
    """``logging.config.dictConfig``, with Uvicorn's formatters when Uvicorn is missing and
    an error that names the real cause (logging's own says only which formatter failed)."""
    from .config import ConfigError

    data = uvicorn_logging.substitute(dict(data))
    data.setdefault("version", 1)
    data.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(data)
    except (ValueError, TypeError, KeyError, AttributeError, ImportError) as exc:
        raise ConfigError(f"log config {where} is invalid: {_causes(exc)}") from None


def _causes(exc: BaseException) -> str:
    """The error and what caused it: "Unable to configure formatter 'default': Cannot
    resolve 'uvicorn.logging.DefaultFormatter': No module named 'uvicorn'"."""
    words: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(words) < 5:
        text = " ".join(str(seen).split())  # one line
        if text and not any(text in earlier for earlier in words):
            words.append(text)
        seen = seen.__cause__ or seen.__context__
    return ": ".join(words) or type(exc).__name__


# Uvicorn's loggers: its own messages go to "uvicorn.error" (which propagates to "uvicorn"),
# one line per request to "uvicorn.access".
UVICORN_ERROR = "uvicorn.error"
UVICORN_ACCESS = "uvicorn.access"


class UvicornForwarder(logging.Handler):
    """Hands trioserve's records to a Uvicorn logger configured by the user's log config."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if not self.target.isEnabledFor(record.levelno):
            return
        copy = logging.makeLogRecord(record.__dict__)
        copy.name = self.target.name
        atoms = getattr(record.msg, "atoms", None)
        if atoms is not None:
            # The exact arguments of Uvicorn's own access-log call.
            scope = atoms.scope
            client = scope.get("client")
            copy.msg = '%s - "%s %s HTTP/%s" %d'
            copy.args = (
                f"{client[0]}:{client[1]}" if client else "-",
                scope.get("method", "GET"),
                atoms["Uq"],
                scope.get("http_version", "1.1"),
                atoms.status or 0,
            )
        self.target.handle(copy)


def _is_configured(name: str) -> bool:
    """Whether the user's log config set up this logger or one of its parents below root."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None and logger.name != "root":
        if logger.handlers or logger.level != logging.NOTSET:
            return True
        logger = logger.parent
    return False


def _forward_to_uvicorn(access_enabled: bool) -> None:
    for ours, theirs in ((error_log, UVICORN_ERROR), (access_log, UVICORN_ACCESS)):
        if ours.handlers or ours.level != logging.NOTSET or not _is_configured(theirs):
            continue
        target = logging.getLogger(theirs)
        handler = UvicornForwarder(target)
        handler._trioserve = True  # type: ignore[attr-defined]
        ours.addHandler(handler)
        ours.propagate = False
        _touched.add(ours)
        enabled = access_enabled or ours is not access_log
        ours.setLevel(target.getEffectiveLevel() if enabled else logging.CRITICAL + 1)


# Loggers whose level/propagation a previous configure_logging set, so a second call (run()
# twice in one process, tests) starts from what the user's own config would see.
_touched: set[logging.Logger] = set()


def _reset() -> None:
    for logger in _touched:
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        for old in list(logger.handlers):
            if getattr(old, "_trioserve", False):
                logger.removeHandler(old)
                old.close()
    _touched.clear()


def configure_logging(config: Config) -> None:
    """Set up logging as the ``trioserve`` command and :func:`trioserve.run` do.

    :func:`trioserve.serve` leaves logging alone, so a program that embeds it (a test
    fixture) keeps its own setup: ``trioserve.error`` and ``trioserve.access`` records
    propagate to the root logger. Call this first to get what the command (and Uvicorn's
    ``Config``) does instead: the config's log config file or dict, or one handler per
    logger (errors to stderr, the access log to stdout, or ``errorlog``/``accesslog``),
    at ``log_level``, not propagated to the root logger. Calling it again replaces
    what an earlier call set up.

    :raises ~trioserve.config.ConfigError: a log config file that cannot be used.
    """
    level = LEVELS.get(config.loglevel.lower(), logging.INFO)
    if config.debug:
        level = min(level, logging.DEBUG)
    _reset()
    if config.logconfig_dict or config.logconfig:
        if config.logconfig_dict:
            apply_dict_config(config.logconfig_dict, "logconfig_dict")
        if config.logconfig:
            load_log_config(config.logconfig)
        _forward_to_uvicorn(config.access_log)
        if not config.access_log:
            access_log.setLevel(logging.CRITICAL + 1)
            _touched.add(access_log)
        return
    for logger, uvicorn_name, target, fmt, dash, enabled in (
        (error_log, "uvicorn", config.errorlog, DEFAULT_FORMAT, sys.stderr, True),
        (
            access_log,
            UVICORN_ACCESS,
            config.accesslog,
            ACCESS_FORMAT,
            sys.stdout,
            config.access_log,
        ),
    ):
        for each in (logger, logging.getLogger(uvicorn_name)):
            # "uvicorn" too: an app that logs to uvicorn.error (it propagates there) is shown.
            each.setLevel(level if enabled else logging.CRITICAL + 1)
            each.propagate = False
            _touched.add(each)
            if enabled and target is not None:
                handler = _handler(config, target, fmt, dash)
                handler._trioserve = True  # type: ignore[attr-defined]
                each.addHandler(handler)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def hold(logger: logging.Logger = error_log) -> Iterator[list[logging.LogRecord]]:
    """Keep what ``logger`` logs meanwhile (at any level) for :func:`replay`.

    The configuration is read before the logging it describes is set up, so its notices
    (an ignored variable, ``worker_class`` meaning asyncio) wait, and then come out once, in
    the chosen format, instead of through Python's last-resort handler or not at all.
    """
    keep = _Keep()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(keep)
    logger.setLevel(1)
    logger.propagate = False
    try:
        yield keep.records
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
        logger.propagate = propagate


def replay(records: Iterable[logging.LogRecord]) -> None:
    """Log held records through their loggers as they are configured now."""
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)

"""Uvicorn's two log formatters, for log configs written for Uvicorn when it is not installed.

A log config copied from Uvicorn (its ``LOGGING_CONFIG``, or an ini file) names
``uvicorn.logging.DefaultFormatter`` and ``uvicorn.logging.AccessFormatter``. With Uvicorn
installed those are used as they are; without it, :func:`substitute` points the config at
the classes here, which format the same fields: ``%(levelprefix)s`` (the level name and a
colon, padded to nine characters, coloured when ``use_colors``), and on access lines
``%(client_addr)s``, ``%(request_line)s`` and ``%(status_code)s`` taken from the record's
arguments, which :class:`trioserve.logs.UvicornForwarder` fills as Uvicorn does.
"""

from __future__ import annotations

import configparser
import copy
import http
import importlib
import logging
import sys
from typing import Any

_OURS = {
    "uvicorn.logging.DefaultFormatter": f"{__name__}.DefaultFormatter",
    "uvicorn.logging.AccessFormatter": f"{__name__}.AccessFormatter",
}

_LEVEL_COLORS = {
    5: "\x1b[34m",  # trace
    logging.DEBUG: "\x1b[36m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET = "\x1b[0m"


class DefaultFormatter(logging.Formatter):
    """Uvicorn's ``DefaultFormatter`` fields, written here: ``%(levelprefix)s``."""

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        use_colors: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fmt, datefmt, style, **kwargs)
        self.use_colors = sys.stdout.isatty() if use_colors is None else use_colors

    def _colored(self, text: str, color: str | None) -> str:
        return f"{color}{text}{_RESET}" if self.use_colors and color else text

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = copy.copy(record)  # the record goes on to other handlers unchanged
        name = fields.levelname
        padding = " " * max(0, 8 - len(name))
        prefix = self._colored(name, _LEVEL_COLORS.get(fields.levelno)) + ":" + padding
        vars(fields)["levelprefix"] = prefix
        self._add_fields(fields)
        return super().formatMessage(fields)

    def _add_fields(self, fields: logging.LogRecord) -> None:
        """Subclasses add their own fields."""


class AccessFormatter(DefaultFormatter):
    """Uvicorn's ``AccessFormatter`` fields, from the five arguments of its access call:
    client address, method, path, HTTP version, status."""

    def _add_fields(self, fields: logging.LogRecord) -> None:
        args = fields.args
        if not isinstance(args, tuple) or len(args) != 5:
            return
        client_addr, method, path, version, status = args
        code = int(status) if isinstance(status, (int, str)) else 0
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = ""  # 499 and other codes of our own
        color = "\x1b[32m" if code < 400 else "\x1b[31m"
        vars(fields).update(
            client_addr=client_addr,
            request_line=f"{method} {path} HTTP/{version}",
            status_code=self._colored(f"{status} {phrase}".rstrip(), color),
        )


def _uvicorn_missing() -> bool:
    try:
        importlib.import_module("uvicorn.logging")
    except ImportError:
        return True
    return False


def substitute(data: dict[str, Any]) -> dict[str, Any]:
    """A dictConfig mapping whose Uvicorn formatters are ours when Uvicorn is missing."""
    formatters = data.get("formatters")
    if not isinstance(formatters, dict):
        return data
    named = [
        (name, key)
        for name, spec in formatters.items()
        if isinstance(spec, dict)
        for key in ("()", "class")
        if spec.get(key) in _OURS
    ]
    if not named or not _uvicorn_missing():
        return data
    data = {**data, "formatters": {**formatters}}
    for name, key in named:
        spec = data["formatters"][name] = {**formatters[name]}
        spec[key] = _OURS[spec[key]]
    return data


def substitute_ini(parser: configparser.RawConfigParser) -> None:
    """The same for a ``fileConfig`` file, read into ``parser``: ``class=`` of formatters."""
    sections = [
        section
        for section in parser.sections()
        if section.startswith("formatter_")
        and parser.get(section, "class", raw=True, fallback="").strip() in _OURS
    ]
    if sections and _uvicorn_missing():
        for section in sections:
            parser.set(section, "class", _OURS[parser.get(section, "class", raw=True).strip()])

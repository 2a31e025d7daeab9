"""Which HTTP/1.1 protocol class serves a connection: the ``http`` setting resolved.

Both classes implement :class:`~.http11_rules.HTTP11Interface` and give the same verdicts;
``auto`` picks httptools' (:mod:`.http11_fast`) when it is installed, for less CPU per request.
"""

from __future__ import annotations

from .http11 import HTTP11Protocol
from .http11_fast import FastHTTP11Protocol
from .http11_head import HAVE_HTTPTOOLS
from .http11_rules import HTTP11Interface


def protocol_class(kind: str) -> type[HTTP11Protocol | FastHTTP11Protocol]:
    """The class for the ``http`` setting: ``auto`` is httptools when it is installed."""
    if kind == "httptools" or (kind == "auto" and HAVE_HTTPTOOLS):
        if not HAVE_HTTPTOOLS:
            raise RuntimeError(
                "http = 'httptools' needs httptools: pip install 'trioserve[speed]'"
            )
        return FastHTTP11Protocol
    return HTTP11Protocol


def parser_name(kind: str) -> str:
    """What the ``http`` setting resolves to ("h11" or "httptools"), for the start-up log."""
    return "httptools" if protocol_class(kind) is FastHTTP11Protocol else "h11"


def make_http11_protocol(kind: str, *, max_head_size: int) -> HTTP11Interface:
    return protocol_class(kind)(max_head_size=max_head_size)

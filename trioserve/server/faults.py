"""Whose exception is it: the app's (one failed request) or the server's (stop everything)?

An app may raise anything while it handles one request, BaseException subclasses included:
``SystemExit`` from a stray ``sys.exit()``, ``KeyboardInterrupt``, ``GeneratorExit``, a
custom ``BaseException``. Letting those through would end the whole process for one
request (with ``KeyboardInterrupt``: exit code 0 and no log line, so a supervisor with
``Restart=on-failure`` would not even restart it). So every exception out of an app is the
app's failure, except two that the app is only passing on:

- ``trio.Cancelled``: a cancel scope around the app was cancelled (shutdown, a deadline,
  the peer's second Ctrl-C). An app's own cancel scopes catch their own cancellations, so
  one that escapes the app belongs to a scope of ours (or of whoever runs ``serve()``).
- a ``KeyboardInterrupt`` raised by trio's SIGINT handler while the app's code happened to
  be running (``serve()`` embedded without ``handle_signals``): a real Ctrl-C. Trio raises
  it from its handler, so the innermost frame of its traceback is trio's own code; an app
  raising ``KeyboardInterrupt`` itself has its own frame there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import TracebackType

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

_TRIO_CORE = os.path.join(os.path.dirname(trio.__file__), "_core") + os.sep


def belongs_to_server(exc: BaseException) -> bool:
    """True if ``exc`` must propagate (a cancellation or a real Ctrl-C, also in a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(belongs_to_server(inner) for inner in exc.exceptions)
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, KeyboardInterrupt):
        return _from_signal(exc)
    return False


def _from_signal(exc: KeyboardInterrupt) -> bool:
    tb: TracebackType | None = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    # Trio's SIGINT handler (or its delivery to the main task) raised it. Python's own
    # handler never runs in a trio thread: trio replaces it, and signals reach only the
    # main thread.
    return tb.tb_frame.f_code.co_filename.startswith(_TRIO_CORE)


def exception_tree(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of any exception group among them,
    each once: where a framework may have wrapped what really happened."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend((current.__cause__, current.__context__))

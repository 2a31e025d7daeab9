"""A real trioserve on 127.0.0.1 inside the test's own nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio

from .._runner import make_config
from ..config import Config
from ..errors import LifespanFailure
from ..server.serve import serve
from .failures import AppErrors

__all__ = ["LiveServer", "open_server"]


@dataclass(frozen=True)
class LiveServer:
    """Where a test server listens, and the config it runs with."""

    url: str
    host: str
    port: int
    config: Config
    errors: AppErrors = field(default_factory=AppErrors, repr=False, compare=False)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]


def make_test_config(config: Config | None, options: dict[str, Any]) -> Config:
    """Config for a test server: a free loopback port and no environment variables."""
    if config is not None:
        return config.replace(**options) if options else config
    options.setdefault("bind", ["127.0.0.1:0"])
    return make_config(environ={}, **options)


@asynccontextmanager
async def open_server(
    app: Any,
    *,
    config: Config | None = None,
    raise_app_exceptions: bool = True,
    **options: Any,
) -> AsyncIterator[LiveServer]:
    """Serve ``app`` on 127.0.0.1 (a free port) for the body of the ``async with``.

    Lifespan startup runs before the block and shutdown after it; a startup failure raises
    :class:`~trioserve.errors.LifespanFailure` here. Leaving the block normally shuts the
    server down gracefully (in-flight requests get ``graceful_timeout``); leaving it with an
    exception cancels in-flight work at once. Options are config keys (``keep_alive_timeout=1``)
    or Uvicorn-style ``host``/``port``.

    With ``raise_app_exceptions`` (the default) an exception the app raised while handling a
    request is re-raised when the block ends, so the test fails with the app's traceback
    rather than only a 500 and a log line. If the block itself failed, the app's exceptions
    are added to that failure as a note instead.
    """
    cfg = make_test_config(config, dict(options))
    errors = AppErrors()
    trigger = trio.Event()
    # Exceptions leave after the nursery, so trio does not wrap them in an ExceptionGroup.
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            urls: list[str] = await nursery.start(
                partial(serve, errors.wrap(app), cfg, shutdown_trigger=trigger)
            )
        except LifespanFailure as exc:
            failure = exc
        else:
            parts = urlsplit(urls[0])
            try:
                yield LiveServer(urls[0], parts.hostname or "", parts.port or 0, cfg, errors)
            except BaseException as exc:
                failure = exc
                nursery.cancel_scope.cancel()
            finally:
                trigger.set()
    if failure is not None:
        if raise_app_exceptions:
            errors.raise_unreported(failure)
        raise failure
    if raise_app_exceptions:
        errors.raise_unreported(None)

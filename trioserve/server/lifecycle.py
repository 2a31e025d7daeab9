"""A server's start-up and shutdown around serving, written once.

:func:`running` is what :func:`~.serve.serve` (over sockets) and the in-memory transport
(:mod:`trioserve.testing.memory`) both run, so an in-memory server has the real one's
metrics, Alt-Svc and request limits:

- the app as the server calls it (ASGI 2 or 3, ``loop = "asyncio"``, trace logging);
- the observer (metrics, StatsD, the admin listener) and its sampler task;
- lifespan startup (a failure raises :class:`~trioserve.errors.LifespanFailure`);
- the :class:`~.state.ServerState` requests see: ``max_requests`` with its jitter, the
  Alt-Svc fields, the metrics;
- on the way out, whatever ended the serving: lifespan shutdown (shielded), the admin
  listener's linger after a clean stop, and everything closed.
"""

from __future__ import annotations

import functools
import random
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..binds import Bind, alt_svc_values
from ..config import Config
from ..errors import LifespanFailure
from ..importer import as_asgi3
from ..logs import error_log
from ..sansio.events import Headers
from .asgitrace import trace_asgi
from .asyncio_bridge import app_runner
from .lifespan import Lifespan
from .observe import Observer
from .state import ServerState


@asynccontextmanager
async def running(
    app: Any,
    config: Config,
    *,
    trigger: trio.Event,
    on_max_requests: Callable[[], None] | None = None,
    metrics_path: str | None = None,
    quic_bound: Sequence[tuple[Bind, socket.socket]] = (),
) -> AsyncIterator[ServerState]:
    """Start up, yield the state to serve with, shut down; see the module docstring.

    ``max_requests`` calls ``on_max_requests``, or else sets ``trigger``. An exception
    from the body leaves after the nurseries, so trio does not wrap it in a group.
    """
    # loop = "asyncio": the app runs as asyncio tasks on one loop, open while we serve.
    asgi_app, app_loop = app_runner(
        as_asgi3(app, config.interface),
        config.loop,
        reset_contextvars=config.reset_contextvars,
    )
    if config.loglevel == "trace":  # only then: the wrapper costs an await per message
        asgi_app = trace_asgi(asgi_app)  # outside the bridge: it sees trio's receive/send
    lifespan = Lifespan(
        asgi_app,
        mode=config.lifespan,
        startup_timeout=config.startup_timeout,
        shutdown_timeout=config.shutdown_timeout,
    )
    failure: BaseException | None = None
    observer = Observer(config, metrics_path)
    async with app_loop, trio.open_nursery() as system:
        system.start_soon(observer.run)
        try:
            try:
                await lifespan.startup(system)
            except LifespanFailure as exc:
                failure = exc
            if failure is None:
                state = observer.state = ServerState(
                    config=config,
                    app=asgi_app,
                    lifespan_state=lifespan.state if lifespan.supported else None,
                    request_limit=_request_limit(config),
                    on_request_limit=on_max_requests or functools.partial(_limit_reached, trigger),
                    alt_svc=_alt_svc(config, quic_bound),
                    metrics=observer.metrics,
                )
                try:
                    yield state
                except BaseException as exc:
                    failure = exc
                finally:
                    with trio.CancelScope(shield=True):
                        await lifespan.shutdown()
                if failure is None:
                    await observer.linger()
        finally:
            lifespan.close()
            observer.close()
            system.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _alt_svc(config: Config, quic_bound: Sequence[tuple[Bind, socket.socket]]) -> Headers:
    """Alt-Svc fields advertising HTTP/3 on HTTP/1.1 and HTTP/2 responses."""
    return [(b"alt-svc", v.encode("latin-1")) for v in alt_svc_values(config, list(quic_bound))]


def _request_limit(config: Config) -> int | None:
    """max_requests plus a random jitter, so workers started together don't retire together."""
    if not config.max_requests:
        return None
    return config.max_requests + random.randint(0, max(0, config.max_requests_jitter))


def _limit_reached(trigger: trio.Event) -> None:
    error_log.info("Maximum request limit reached, shutting down")
    trigger.set()

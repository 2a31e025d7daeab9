"""The blocking entry points: ``trioserve.run()`` and what the CLI calls.

One process serves directly; ``workers > 1`` or ``use_reloader`` hands over to the
supervisor, which starts worker processes that come back here through :func:`run_worker`.

A private module: its old name, ``trioserve.run``, is the public *function* (the package
keeps it so even after ``import trioserve.run``, which still works for compatibility).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import trio

from .binds import Bind
from .config import Config, ConfigError, build_config
from .config_env import fold_binds
from .envfile import load_env_file
from .errors import AppLoadError, LifespanFailure
from .importer import load_app
from .logs import configure_logging, error_log, hold, replay
from .server.serve import serve

if sys.version_info < (3, 11):  # pragma: no cover - exceptiongroup ships with trio there
    from exceptiongroup import BaseExceptionGroup

from .exit_codes import EXIT_ERROR, EXIT_OK, EXIT_STARTUP_FAILED, EXIT_USAGE

# True while run_worker imports the app: a script that calls trioserve.run("main:app") at
# module level (no __main__ guard, as the docs allow) is imported again as "main", and that
# second call must only let the import finish, not start a server inside it.
_loading_app = False


options_to_overrides = fold_binds  # its old name here (trioserve.run exports it)


def make_config(
    app: Any = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Config:
    """The config the CLI and ``run()`` serve: file < environment < ``options``.

    The environment is ``TRIOSERVE_*``, Uvicorn's ``UVICORN_*`` and ``WEB_CONCURRENCY``
    (:mod:`trioserve.config_env`); an address in ``options`` replaces one from there.
    """
    env = os.environ if environ is None else environ
    overrides = fold_binds(options)
    if isinstance(app, str):
        overrides["application_path"] = app
    return build_config(config_file=config_file, environ=env, overrides=overrides)


def run(
    app: Any = None,
    *,
    config: Config | None = None,
    config_file: str | None = None,
    **options: Any,
) -> None:
    """Serve an app until SIGINT/SIGTERM, like ``uvicorn.run``; blocks.

    ``app`` is an import string (``"main:app"``, required for workers and reload) or an
    ASGI app object. Options are config keys (Hypercorn names) or Uvicorn's ``host``,
    ``port``, ``uds``, ``fd``, ``log_level``, ``reload``, ``workers``. Exits the process
    with code 1 if the app can't be loaded and 3 if its lifespan startup fails.

    Called while trioserve itself is importing the app (the script that calls it is the
    app's module), it returns at once.
    """
    if _loading_app:
        return
    with hold() as notices:
        try:
            cfg = (
                config
                if config is not None
                else make_config(app, config_file=config_file, **options)
            )
        except ConfigError as exc:
            cfg = None
            error = exc
    if cfg is None:
        replay(notices)
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    code = serve_config(cfg, app=None if isinstance(app, str) else app, notices=notices)
    if code != EXIT_OK:
        raise SystemExit(code)


def serve_config(
    config: Config, *, app: Any = None, notices: Sequence[logging.LogRecord] = ()
) -> int:
    """Run with a finished config; returns the process exit code.

    ``notices`` are what reading the configuration logged (:func:`trioserve.logs.hold`):
    they are logged once logging is set up.
    """
    try:
        if config.env_file:  # before the app (and any worker) is started: they inherit it
            load_env_file(config.env_file)
        configure_logging(config)
    except ConfigError as exc:
        replay(notices)
        print(f"trioserve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    replay(notices)
    if config.quic_bind and (config.workers > 1 or config.use_reloader):
        error_log.warning(
            "HTTP/3 with %d worker(s) under the supervisor: each worker binds the UDP port "
            "with SO_REUSEPORT and the kernel picks the worker by client address, so a "
            "client whose address changes (NAT rebinding, migration) or whose worker "
            "restarts loses its QUIC connection (browsers then retry, or fall back to TCP). "
            "See docs/http3.md.",
            config.workers,
        )
    if config.use_reloader or config.workers > 1:
        if app is not None:
            error_log.error(
                "workers and reload need the app as an import string, e.g. run('main:app', ...)"
            )
            return EXIT_ERROR
        from .supervisor import run_supervisor

        with pid_file(config.pid_path):
            code: int = run_supervisor(config)
        return code
    with pid_file(config.pid_path):
        return run_worker(config, app=app)


@contextlib.contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's id to ``path`` while serving; remove it after, if still ours."""
    if not path:
        yield
        return
    pid = str(os.getpid())
    with open(path, "w") as f:
        f.write(pid + "\n")
    try:
        yield
    finally:
        try:
            with open(path) as f:
                mine = f.read().strip() == pid
            if mine:
                os.unlink(path)
        except OSError:
            pass


class WorkerLink(Protocol):
    """A supervised worker's line to its supervisor (see ``trioserve.supervisor.worker``)."""

    async def run(self, shutdown_trigger: trio.Event, cancel: Callable[[], None]) -> None:
        """Runs beside the server once it serves; must never raise.

        Signals are the link's to handle: set ``shutdown_trigger`` to drain, call ``cancel``
        to cut requests in flight short.
        """

    def max_requests_reached(self) -> None:
        """Called instead of shutting down, so the supervisor can start a replacement first."""


def run_worker(
    config: Config,
    *,
    app: Any = None,
    sockets: Sequence[tuple[Bind, socket.socket]] | None = None,
    link: WorkerLink | None = None,
    metrics_path: str | None = None,
) -> int:
    """Serve in this process (directly, or as a supervisor's worker); returns an exit code."""
    try:
        target = app if app is not None else config.application_path
        if not target:
            error_log.error(
                "No app given: pass MODULE:ATTRIBUTE (or application_path in the config)."
            )
            return EXIT_ERROR
        asgi_app = _load(target, config)
    except AppLoadError as exc:
        # An exception raised by the app's own code gets its traceback (as Uvicorn);
        # "module not found" and a bad import string are one line.
        error_log.error("%s", exc, exc_info=exc.__cause__)
        return EXIT_ERROR
    try:
        if link is None:
            trio.run(
                functools.partial(serve, asgi_app, config, sockets=sockets, handle_signals=True)
            )
        else:
            trio.run(_serve_linked, asgi_app, config, sockets, link, metrics_path)
    except LifespanFailure as exc:
        error_log.error("Application startup failed: %s. Exiting.", exc)
        return EXIT_STARTUP_FAILED
    except ConfigError as exc:
        error_log.error("%s", exc)
        return EXIT_USAGE
    except OSError as exc:
        error_log.error("Could not start serving: %s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        # Ctrl-C before the signal handlers are up (during lifespan startup) reaches us
        # wrapped by a nursery: the same quiet exit, not a traceback.
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
    return EXIT_OK


def _load(target: Any, config: Config) -> Any:
    global _loading_app
    _loading_app = True
    try:
        return load_app(
            target, factory=config.factory, app_dir=config.app_dir, interface=config.interface
        )
    finally:
        _loading_app = False


class _Started:
    """A task_status that just sets an event: the link starts once the server serves."""

    def __init__(self, event: trio.Event) -> None:
        self.event = event

    def started(self, value: object = None) -> None:
        self.event.set()


async def _serve_linked(
    app: Any,
    config: Config,
    sockets: Sequence[tuple[Bind, socket.socket]] | None,
    link: WorkerLink,
    metrics_path: str | None,
) -> None:
    # A system task rather than a nursery, so serve()'s own errors (LifespanFailure,
    # OSError) reach run_worker unwrapped; trio cancels it when serve() returns.
    trigger = trio.Event()
    serving = trio.Event()

    scope = trio.CancelScope()

    async def run_link() -> None:
        await serving.wait()
        await link.run(trigger, scope.cancel)

    trio.lowlevel.spawn_system_task(run_link)
    with scope:
        await serve(
            app,
            config,
            sockets=sockets,
            shutdown_trigger=trigger,
            on_max_requests=link.max_requests_reached,
            metrics_path=metrics_path,
            task_status=_Started(serving),
        )

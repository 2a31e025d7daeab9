"""The blocking entry points: ``trioserve.run()`` and what the CLI calls.

One process serves directly; ``workers > 1`` or ``use_reloader`` hands over to the
supervisor, which starts worker processes that come back here through :func:`run_worker`.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from .binds import Bind
from .config import Config, ConfigError, build_config
from .errors import AppLoadError, LifespanFailure
from .importer import load_app
from .logs import configure_logging, error_log
from .server.serve import serve

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 3


def options_to_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """Fold Uvicorn-style ``host``/``port``/``uds``/``fd`` into Hypercorn's ``bind`` list."""
    out = dict(options)
    host = out.pop("host", None)
    port = out.pop("port", None)
    uds = out.pop("uds", None)
    fd = out.pop("fd", None)
    binds: list[str] = list(out.pop("bind", None) or [])
    if host is not None or port is not None:
        host = host or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        binds.insert(0, f"{host}:{8000 if port is None else int(port)}")
    if uds is not None:
        binds.append(f"unix:{uds}")
    if fd is not None:
        binds.append(f"fd://{int(fd)}")
    if binds:
        out["bind"] = binds
    return out


def make_config(
    app: Any = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Config:
    overrides = options_to_overrides(options)
    if isinstance(app, str):
        overrides["application_path"] = app
    env = os.environ if environ is None else environ
    config = build_config(config_file=config_file, environ=env, overrides=overrides)
    if "workers" not in overrides and "WEB_CONCURRENCY" in env:
        config = config.replace(workers=int(env["WEB_CONCURRENCY"]))
    return config


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
    """
    try:
        cfg = (
            config if config is not None else make_config(app, config_file=config_file, **options)
        )
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    code = serve_config(cfg, app=None if isinstance(app, str) else app)
    if code != EXIT_OK:
        raise SystemExit(code)


def serve_config(config: Config, *, app: Any = None) -> int:
    """Run with a finished config; returns the process exit code."""
    configure_logging(config)
    if config.use_reloader or config.workers > 1:
        if app is not None:
            error_log.error(
                "workers and reload need the app as an import string, e.g. run('main:app', ...)"
            )
            return EXIT_ERROR
        from .supervisor import run_supervisor

        code: int = run_supervisor(config)
        return code
    return run_worker(config, app=app)


def run_worker(
    config: Config,
    *,
    app: Any = None,
    sockets: Sequence[tuple[Bind, socket.socket]] | None = None,
) -> int:
    """Serve in this process (directly, or as a supervisor's worker); returns an exit code."""
    try:
        target = app if app is not None else config.application_path
        if not target:
            error_log.error(
                "No app given: pass MODULE:ATTRIBUTE (or application_path in the config)."
            )
            return EXIT_ERROR
        asgi_app = load_app(target, factory=config.factory, app_dir=config.app_dir)
    except AppLoadError as exc:
        error_log.error("%s", exc)
        return EXIT_ERROR
    try:
        trio.run(functools.partial(serve, asgi_app, config, sockets=sockets, handle_signals=True))
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
    return EXIT_OK

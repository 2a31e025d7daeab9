"""Settings from the environment: ``TRIOSERVE_<KEY>``, and Uvicorn's ``UVICORN_<NAME>``.

Uvicorn reads every command-line option from ``UVICORN_<NAME>`` (click's
``auto_envvar_prefix``), and container images and Helm charts set ``UVICORN_PORT``,
``UVICORN_HOST``, ``UVICORN_WORKERS`` or ``UVICORN_LOG_LEVEL``. They are read here as click
reads them (a boolean as click spells it, the values of a repeatable flag separated by
whitespace) for every option trioserve shares with Uvicorn; ``TRIOSERVE_<KEY>`` wins over
``UVICORN_<NAME>`` for the same option.

The environment is shared with other programs, so an unknown variable is not an error: every
variable ignored is named in ONE warning line, with the closest key when there is one.
Kubernetes puts ``TRIOSERVE_SERVICE_HOST``, ``TRIOSERVE_PORT=tcp://...`` and
``TRIOSERVE_PORT_8000_TCP_*`` into every pod when a Service is named ``trioserve`` (the same
with ``UVICORN_`` for one named ``uvicorn``): those are named as such, with no suggestion.

Nothing here knows :class:`~trioserve.config.Config`: ``build_config`` passes the key lookup
in (:class:`OptionKeys`), so this module sits below the option table rather than beside it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "TRIOSERVE_"
UVICORN_PREFIX = "UVICORN_"

# Uvicorn's --host/--port/--uds/--fd, folded into ``bind`` (as the command line folds them).
BIND_NAMES = ("host", "port", "uds", "fd")

# Uvicorn's click parameters (its variable is UVICORN_<NAME>) whose name is not the trioserve
# key (the flag's name) they set. tests/integration/test_uvicorn_dropin.py compares UVICORN_PARAMS
# and UVICORN_MULTIPLE with the installed Uvicorn's command.
_UVICORN_RENAMED = {
    "app": "application_path",
    "reload_dirs": "reload_dir",
    "reload_includes": "reload_include",
    "reload_excludes": "reload_exclude",
    "headers": "header",
}
UVICORN_MULTIPLE = frozenset({"reload_dirs", "reload_includes", "reload_excludes", "headers"})
UVICORN_PARAMS = frozenset(
    {
        *_UVICORN_RENAMED,
        *BIND_NAMES,
        "reload",
        "reload_delay",
        "workers",
        "loop",
        "http",
        "http2",
        "ws",
        "ws_max_size",
        "ws_max_queue",
        "ws_ping_interval",
        "ws_ping_timeout",
        "ws_per_message_deflate",
        "lifespan",
        "interface",
        "env_file",
        "log_config",
        "log_level",
        "access_log",
        "use_colors",
        "proxy_headers",
        "server_header",
        "date_header",
        "forwarded_allow_ips",
        "root_path",
        "limit_concurrency",
        "backlog",
        "limit_max_requests",
        "limit_max_requests_jitter",
        "timeout_keep_alive",
        "timeout_graceful_shutdown",
        "timeout_worker_healthcheck",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_keyfile_password",
        "ssl_version",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ciphers",
        "version",
        "app_dir",
        "h11_max_incomplete_event_size",
        "reset_contextvars",
        "factory",
    }
)

# click's boolean words (click.types.BoolParamType), which include t/f/y/n.
_CLICK_TRUE = {"1", "true", "t", "yes", "y", "on"}
_CLICK_FALSE = {"0", "false", "f", "no", "n", "off"}


@dataclass(frozen=True)
class OptionKeys:
    """What the environment loader needs to know about the options, from config.py."""

    resolve: Callable[[str], str | None]  # a key (any spelling) -> option name, or None
    is_bool: Callable[[str], bool]  # an option name -> whether its value is a boolean
    keys: Iterable[str]  # every key, for "did you mean"


@dataclass
class EnvSettings:
    """Raw option values (keyed by option name), binds, and the variables ignored."""

    values: dict[str, Any] = field(default_factory=dict)
    binds: dict[str, str | int] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def warning(self) -> str | None:
        """The one warning line naming every ignored variable, or None."""
        if not self.ignored:
            return None
        return "ignoring environment variables: " + "; ".join(self.ignored)


def read_environ(environ: Mapping[str, str], keys: OptionKeys) -> EnvSettings:
    """Read ``TRIOSERVE_*`` and ``UVICORN_*`` (``TRIOSERVE_`` first) and ``WEB_CONCURRENCY``."""
    out = EnvSettings()
    uvicorn = _uvicorn_values(environ, keys, out)
    ours = _trioserve_values(environ, keys, out)
    out.values = {**uvicorn, **ours}
    if "workers" not in out.values and "WEB_CONCURRENCY" in environ:
        out.values["workers"] = environ["WEB_CONCURRENCY"]  # Uvicorn's default for --workers
    return out


def _trioserve_values(
    environ: Mapping[str, str], keys: OptionKeys, out: EnvSettings
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable == ENV_PREFIX + "CONFIG":
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name in BIND_NAMES:
            _bind(out, variable, name, value)
            continue
        option = keys.resolve(name)
        if option is None:
            out.ignored.append(_unknown(variable, value, ENV_PREFIX, keys.keys))
        else:
            values[option] = value
    return values


def _uvicorn_values(
    environ: Mapping[str, str], keys: OptionKeys, out: EnvSettings
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, value in environ.items():
        if not variable.startswith(UVICORN_PREFIX):
            continue
        name = variable[len(UVICORN_PREFIX) :].lower()
        if name in BIND_NAMES:
            if ENV_PREFIX + name.upper() not in environ:  # TRIOSERVE_PORT wins
                _bind(out, variable, name, value)
            continue
        if name not in UVICORN_PARAMS:
            out.ignored.append(_unknown(variable, value, UVICORN_PREFIX, UVICORN_PARAMS))
            continue
        option = keys.resolve(_UVICORN_RENAMED.get(name, name))
        if option is None:
            out.ignored.append(f"{variable} (a Uvicorn option trioserve does not take)")
        elif name in UVICORN_MULTIPLE:
            values[option] = value.split()  # click splits a repeatable flag's variable so
        elif keys.is_bool(option) and value.strip().lower() in _CLICK_TRUE | _CLICK_FALSE:
            values[option] = value.strip().lower() in _CLICK_TRUE
        else:
            values[option] = value
    return values


def _bind(out: EnvSettings, variable: str, name: str, value: str) -> None:
    """``host``/``port``/``uds``/``fd``: a port or fd that is no number is ignored, as
    Kubernetes sets ``TRIOSERVE_PORT=tcp://10.0.0.1:8000`` for a Service named trioserve."""
    if name in ("port", "fd"):
        if not value.strip().isdigit():
            hint = " (a Kubernetes service variable?)" if "://" in value else ""
            out.ignored.append(f"{variable}={value!r} (not a number){hint}")
            return
        out.binds[name] = int(value)
    elif value.strip():
        out.binds[name] = value.strip()


def _unknown(variable: str, value: str, prefix: str, keys: Iterable[str]) -> str:
    name = variable[len(prefix) :].lower()
    if value.startswith(("tcp://", "udp://")) or name.startswith(("service_", "port_")):
        return f"{variable} (a Kubernetes service variable?)"
    close = difflib.get_close_matches(name, list(keys), n=1, cutoff=0.6)
    return f"{variable} (did you mean {prefix}{close[0].upper()}?)" if close else variable


def fold_binds(options: Mapping[str, Any]) -> dict[str, Any]:
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


def env_bind_list(settings: EnvSettings) -> list[str] | None:
    """The ``bind`` list that ``TRIOSERVE_HOST``/``PORT``/``UDS``/``FD`` (or Uvicorn's) make,
    with ``TRIOSERVE_BIND`` kept beside them as ``--bind`` beside ``--port``; None: none set."""
    if not settings.binds:
        return None
    extra = settings.values.get("bind") or ""
    listed = [b.strip() for b in extra.split(",") if b.strip()] if isinstance(extra, str) else []
    folded: list[str] = fold_binds({**settings.binds, "bind": listed})["bind"]
    return folded

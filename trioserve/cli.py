"""``trioserve APP [options]``: the command line, generated from the config's metadata.

Flags use Uvicorn's names (``--host``, ``--port``, ``--timeout-keep-alive`` ...) and
Hypercorn's where Uvicorn has none (``-b/--bind``, ``-c/--config``); each is declared once,
on its :class:`~trioserve.config.Config` field.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from typing import Any

from ._runner import make_config, serve_config
from .config import OPTIONS, ConfigError, option_type
from .exit_codes import EXIT_USAGE
from .logs import hold, replay

# List options given as one comma-separated value rather than a repeated flag.
_COMMA_LISTS = {"forwarded_allow_ips", "forwarded_headers"}


def _version() -> str:
    import h11
    import trio
    import wsproto

    from . import __version__

    return (
        f"trioserve {__version__} (trio {trio.__version__}, h11 {h11.__version__}, "  # type: ignore[attr-defined]
        f"wsproto {wsproto.__version__}, Python {sys.version.split()[0]})"
    )


def _unit(name: str, tp: Any) -> str:
    """A metavar that says what to write: SECONDS, BYTES, N, or the option's last word."""
    if tp is float:
        return "SECONDS"
    if tp is int:
        return "BYTES" if "size" in name else "N"
    return name.rsplit("_", 1)[-1].upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioserve",
        description="Serve an ASGI app with trio. Example: trioserve main:app --reload",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("app", nargs="?", help="the ASGI app, as MODULE:ATTRIBUTE")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "-c",
        "--config",
        dest="config_file",
        metavar="FILE",
        help="config file: FILE.toml, python:MODULE or file:PATH.py (Hypercorn keys)",
    )
    parser.add_argument("--host", help="bind to this host (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="bind to this port (0: any free port; default 8000)"
    )
    parser.add_argument("--uds", metavar="PATH", help="bind to a unix domain socket")
    parser.add_argument("--fd", type=int, metavar="N", help="serve on an inherited socket fd")
    for name, field in OPTIONS.items():
        flags = field.metadata["cli"]
        if not flags:
            continue
        tp, _ = option_type(name)
        # argparse %-formats help texts; a literal '%' (as in "%(atom)s") must be doubled.
        help_text = field.metadata["help"].replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list and name not in _COMMA_LISTS:
            kwargs["action"] = "append"
        if field.metadata["choices"]:
            kwargs["choices"] = field.metadata["choices"]
        if field.metadata["metavar"]:
            kwargs["metavar"] = field.metadata["metavar"]
        elif tp is not bool and not field.metadata["choices"]:
            kwargs["metavar"] = _unit(name, tp)
        parser.add_argument(*flags, **kwargs)
    return parser


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def expand_bool_values(argv: Sequence[str]) -> list[str]:
    """Uvicorn's ``--ws-per-message-deflate false`` -> ``--no-ws-per-message-deflate``.

    Boolean flags are switches (``--flag``/``--no-flag``), and also take Uvicorn's explicit
    value (``--flag BOOL`` or ``--flag=BOOL``). Only a true/false word is taken as the value,
    so ``--reload main:app`` keeps its app.
    """
    flags = {
        flag
        for name, field in OPTIONS.items()
        if option_type(name)[0] is bool
        for flag in field.metadata["cli"]
    }
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        flag, eq, value = item.partition("=")
        if flag in flags and not eq and i + 1 < len(items) and items[i + 1].lower() in _BOOL_WORDS:
            flag, eq, value = item, "=", items[i + 1]
            i += 1
        if flag in flags and eq and value.lower() in _BOOL_WORDS:
            item = flag if _BOOL_WORDS[value.lower()] else "--no-" + flag[2:]
        out.append(item)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(expand_bool_values(sys.argv[1:] if argv is None else argv)))
    app = args.pop("app", None)
    config_file = args.pop("config_file", None)
    with hold() as notices:  # logged once logging is set up (by serve_config)
        try:
            config = make_config(app, config_file=config_file, **args)
        except ConfigError as exc:
            error: ConfigError | None = exc
        else:
            error = None
    if error is not None:
        replay(notices)
        print(f"trioserve: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not config.application_path:
        replay(notices)
        parser.print_usage(sys.stderr)
        print("trioserve: error: no app given (MODULE:ATTRIBUTE)", file=sys.stderr)
        return EXIT_USAGE
    return serve_config(config, notices=notices)

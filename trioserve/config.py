"""The one configuration object, and the loaders that fill it.

Every option is written once, as a field of :class:`Config`. Its metadata says which CLI
flags set it, whether it is implemented yet, and its help text; the TOML/Python file
loader, the ``TRIOSERVE_<NAME>`` environment loader, the CLI and the reference table in
``docs/configuration.md`` are all generated from that metadata. Field names are
Hypercorn's config keys, with Hypercorn's units (seconds, bytes), so a Hypercorn config
file works unchanged. Precedence: CLI > environment > config file > defaults.

Over the ~500-line guide on purpose: the option table is most of it, and splitting the
table from the coercion rules it is checked with would make both harder to read.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import logging
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_env import ENV_PREFIX, OptionKeys, env_bind_list, read_environ
from .sansio.proxy import DEFAULT_FORWARDED_HEADERS, FORWARDED_HEADERS

__all__ = ["ENV_PREFIX", "OPTIONS", "Config", "ConfigError", "load_config_file"]

# Configuration notices (an ignored variable, a key with no effect) are one log line each, on
# the error log: the CLI holds them until logging is set up (trioserve.logs.hold).
_log = logging.getLogger("trioserve.error")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key and the source."""


def _opt(
    default: Any = None,
    *,
    help: str,
    cli: tuple[str, ...] = (),
    implemented: bool = True,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    factory: Any = None,
    toml: bool = True,
    normalize: Any = None,
) -> Any:
    """Declare one option. ``cli`` flags starting ``--no-`` are generated for booleans.

    ``normalize`` turns an already-typed value into its canonical form (or raises
    ValueError), so every source - file, environment, CLI, keyword - agrees.
    """
    meta = {
        "help": help,
        "cli": cli,
        "implemented": implemented,
        "metavar": metavar,
        "choices": choices,
        "toml": toml,
        "normalize": normalize,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _list() -> list[Any]:
    return []


def _root_path(value: str) -> str:
    # Hypercorn strips a trailing slash so root_path + path never doubles it.
    return value.rstrip("/")


_VERIFY_MODES = {0: "CERT_NONE", 1: "CERT_OPTIONAL", 2: "CERT_REQUIRED"}


def _verify_mode(value: str) -> str:
    """``CERT_REQUIRED``, ``required``, ``2`` (Hypercorn's int/VerifyMode) -> the enum name."""
    text = value.strip().upper()
    if text.isdigit() and int(text) in _VERIFY_MODES:
        return _VERIFY_MODES[int(text)]
    if not text.startswith("CERT_"):
        text = "CERT_" + text
    if text not in _VERIFY_MODES.values():
        raise ValueError(f"expected one of {', '.join(_VERIFY_MODES.values())}")
    return text


def _verify_flags(value: str) -> str:
    """ssl.VerifyFlags names joined by ``|`` (or an int) -> canonical ``A|B`` names."""
    import ssl

    text = value.strip()
    if text.isdigit():
        flags = ssl.VerifyFlags(int(text))
        return "|".join(f.name for f in ssl.VerifyFlags if f and f in flags and f.name) or "0"
    names = []
    for part in text.split("|"):
        name = part.strip().upper()
        if name not in ssl.VerifyFlags.__members__:
            raise ValueError(f"unknown ssl.VerifyFlags name {part.strip()!r}")
        names.append(name)
    return "|".join(names)


def verify_flags_value(text: str) -> int:
    """The int value of a canonical ``verify_flags`` string."""
    import ssl

    value = 0
    for name in text.split("|"):
        if name and name != "0":
            value |= ssl.VerifyFlags[name]
    return value


def _http_parser(value: str) -> str:
    # Case-sensitive, as Uvicorn's --http: "HTTPTOOLS" is refused everywhere, not lowered in
    # files and refused on the command line.
    if value == "httptools" and importlib.util.find_spec("httptools") is None:
        raise ValueError("httptools is not installed (pip install 'trioserve[speed]')")
    return value


def _needs_aioquic(value: list[str]) -> list[str]:
    if value and not aioquic_usable():
        raise ValueError(
            "HTTP/3 needs aioquic 1.7 or later, which needs Python 3.11 "
            "(pip install 'trioserve[h3]')"
        )
    return value


def aioquic_usable() -> bool:
    """aioquic >= 1.7 is installed (sansio/quic.py relies on its interim responses and
    stream-credit release; 1.3, the last release for Python 3.10, has neither)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("aioquic").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (1, 7)


def _event_loop(value: str) -> str:
    """Uvicorn's ``--loop``: ``auto`` means trio here; ``asyncio`` runs the app on an asyncio
    loop (uvloop's when installed) beside the trio server."""
    value = value.strip().lower()
    if value == "auto":
        return "trio"
    if value == "uvloop":
        raise ValueError(
            "trioserve's server runs on trio, so uvloop cannot drive it; use --loop asyncio "
            "to run the app on an asyncio loop (uvloop's when uvloop is installed)"
        )
    if value not in ("trio", "asyncio"):
        raise ValueError("expected auto, trio or asyncio")
    return value


def _worker_class(value: str) -> str:
    """Hypercorn's ``worker_class``: ``asyncio`` and ``uvloop`` run asyncio apps there, so
    here they mean ``loop = "asyncio"`` (see ``coerce_all``); ``trio`` is the default."""
    value = value.strip().lower()
    if value not in _WORKER_CLASSES:
        raise ValueError("expected trio, or asyncio or uvloop (which mean loop = 'asyncio')")
    return value


_WORKER_CLASSES = ("trio", "asyncio", "uvloop")


def _frame_size(value: int) -> int:
    if not 2**14 <= value <= 2**24 - 1:
        raise ValueError("must be between 16384 and 16777215 (RFC 9113 6.5.2)")
    return value


def _window(value: int) -> int:
    if not 65535 <= value <= 2**31 - 1:
        raise ValueError("must be between 65535 and 2147483647")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _forwarded_headers(value: list[str]) -> list[str]:
    names = [v.strip().lower() for v in value]
    for name in names:
        if name not in FORWARDED_HEADERS:
            raise ValueError(f"{name!r} is not one of {', '.join(FORWARDED_HEADERS)}")
    return names


def _lower(value: str) -> str:
    return value.lower()


_LEVEL_NUMBERS = {5: "trace", 10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}


def _log_level(value: str) -> str:
    """A level name, or logging's number (Uvicorn's ``run(log_level=20)``)."""
    text = value.strip().lower()
    if text.isdigit():
        if int(text) not in _LEVEL_NUMBERS:
            raise ValueError(f"expected one of {sorted(_LEVEL_NUMBERS)} as a number")
        return _LEVEL_NUMBERS[int(text)]
    return text


def _interface(value: str) -> str:
    text = value.lower()
    if text == "wsgi":
        raise ValueError(
            "trioserve serves ASGI apps only; wrap a WSGI app in an ASGI adapter "
            "(a2wsgi.WSGIMiddleware) or serve it with a WSGI server such as gunicorn"
        )
    if text not in ("auto", "asgi3", "asgi2"):
        raise ValueError("expected auto, asgi3 or asgi2")
    return text


# ssl.PROTOCOL_* numbers Uvicorn users pass, and their names.
_SSL_VERSIONS = {"2": "TLS", "17": "TLS", "5": "TLSv1_2", "3": "TLSv1", "4": "TLSv1_1"}


_WS_IMPLEMENTATIONS = ("auto", "wsproto", "websockets", "websockets-sansio")


def _ws_implementation(value: str) -> str:
    text = value.lower()
    if text == "none":
        raise ValueError(
            "WebSocket upgrades cannot be turned off: they always reach the app as "
            "'websocket' scopes, and an app that does not want them closes before accepting "
            "(the client gets 403)"
        )
    if text not in _WS_IMPLEMENTATIONS:
        raise ValueError(f"expected one of {', '.join(_WS_IMPLEMENTATIONS)}")
    return text


def _ssl_version(value: str) -> str:
    text = value.strip()
    name = _SSL_VERSIONS.get(text, text.removeprefix("PROTOCOL_"))
    if name in ("TLS", "TLS_SERVER", "SSLv23"):
        return "TLS"
    if name in ("TLSv1_2", "TLSv1_3"):
        return name
    if name in ("TLSv1", "TLSv1_1", "SSLv2", "SSLv3"):
        raise ValueError(f"{name} is not supported: trioserve requires TLS 1.2 or later")
    raise ValueError("expected TLS, TLS_SERVER, TLSv1_2 or TLSv1_3 (or Uvicorn's 2, 17, 5)")


def _headers(value: list[str]) -> list[str]:
    from .sansio.headers import parse_default_headers

    parse_default_headers(value)  # ValueError (InvalidHeader) says which header and why
    return value


def _header_item(item: Any) -> Any:
    """Uvicorn's ``headers=[("X-A", "1")]`` pairs as our ``"X-A:1"`` strings."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        name, value = (v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in item)
        return f"{name}:{value}"
    return item


@dataclass(frozen=True)
class Config:
    """Everything that shapes how trioserve serves. Immutable once built: use ``replace()``."""

    # --- binding ---------------------------------------------------------------------------
    bind: list[str] = _opt(
        factory=lambda: ["127.0.0.1:8000"],
        cli=("-b", "--bind"),
        metavar="ADDRESS",
        help="Address to listen on (repeatable): HOST:PORT, [V6]:PORT, unix:PATH or fd://N.",
    )
    insecure_bind: list[str] = _opt(
        factory=_list,
        cli=("--insecure-bind",),
        metavar="ADDRESS",
        help="Plain-text address to listen on beside TLS binds (repeatable).",
    )
    backlog: int = _opt(100, cli=("--backlog",), help="Listen backlog per socket.")
    umask: int | None = _opt(
        None,
        cli=("--umask",),
        metavar="OCTAL",
        help=(
            "Umask while creating unix sockets (007 on the command line and in the "
            "environment, 0o007 in TOML). Unset: the socket is made 0666 (as Uvicorn), so a "
            "proxy running as another user can connect."
        ),
    )
    user: int | None = _opt(None, help="Owner (uid) for unix sockets.")
    group: int | None = _opt(None, help="Group (gid) for unix sockets.")

    # --- application -----------------------------------------------------------------------
    application_path: str = _opt(
        "", toml=True, help="The app import string (MODULE:ATTRIBUTE); usually given on the CLI."
    )
    app_dir: str = _opt(
        ".",
        cli=("--app-dir",),
        help="Directory put first on sys.path before importing the app.",
    )
    interface: str = _opt(
        "auto",
        cli=("--interface",),
        normalize=_interface,
        help=(
            "Application interface: auto (detect), asgi3, or asgi2 (an app(scope) class "
            "or factory). 'wsgi' is refused: trioserve serves ASGI only."
        ),
    )
    env_file: str | None = _opt(
        None,
        cli=("--env-file",),
        metavar="PATH",
        help=(
            "File of KEY=VALUE lines put into the environment before the app is imported "
            "(as Uvicorn's; variables already set win)."
        ),
    )
    factory: bool = _opt(
        False,
        cli=("--factory",),
        help="Treat the app string as a zero-argument callable that returns the app.",
    )
    reset_contextvars: bool = _opt(
        False,
        cli=("--reset-contextvars",),
        help=(
            "Run each request and WebSocket in an empty contextvars.Context, as Uvicorn's "
            "flag does (hides what the lifespan or the server's caller set). Without it each "
            "starts from a copy of its connection's starting context, never from what an "
            "earlier request on the connection set."
        ),
    )
    root_path: str = _opt(
        "",
        cli=("--root-path",),
        normalize=_root_path,
        help="ASGI root_path for apps mounted below a URL prefix.",
    )
    lifespan: str = _opt(
        "auto",
        cli=("--lifespan",),
        choices=("auto", "on", "off"),
        help="Lifespan protocol: auto (use it if the app supports it), on (required), off.",
    )
    startup_timeout: float = _opt(60.0, help="Seconds the app's lifespan startup may take.")
    shutdown_timeout: float = _opt(60.0, help="Seconds the app's lifespan shutdown may take.")

    # --- HTTP ------------------------------------------------------------------------------
    keep_alive_timeout: float = _opt(
        5.0,
        cli=("--timeout-keep-alive", "--keep-alive"),
        help="Seconds an idle keep-alive connection is kept open.",
    )
    keep_alive_max_requests: int = _opt(
        1000, help="Requests served on one connection before it is closed."
    )
    read_timeout: float | None = _opt(
        None,
        cli=("--read-timeout",),
        help="Seconds a request body read may stall (the head has request_head_timeout).",
    )
    request_head_timeout: float = _opt(
        10.0,
        cli=("--timeout-request-head",),
        help="Seconds from a request's first byte until its head must be complete (slowloris).",
    )
    request_body_timeout: float | None = _opt(
        20.0,
        cli=("--timeout-request-body",),
        help=(
            "Seconds a request body may keep the server waiting for it, plus one second for "
            "every request_body_min_rate bytes received (slow-body attacks; answered 408)."
        ),
    )
    request_body_min_rate: float = _opt(
        500.0,
        cli=("--request-body-min-rate",),
        metavar="BYTES/S",
        help="Bytes of request body that earn one more second of request_body_timeout.",
    )
    send_timeout: float | None = _opt(
        60.0,
        cli=("--timeout-send",),
        help=(
            "Seconds one write to a client may wait for it to read; then the connection is "
            "closed and the app's send() raises (clients that never read)."
        ),
    )
    http: str = _opt(
        "auto",
        cli=("--http",),
        choices=("auto", "h11", "httptools"),
        normalize=_http_parser,
        help="HTTP/1.1 parser: h11, httptools (the 'speed' extra), or auto (httptools if "
        "installed, else h11; as Uvicorn's --http auto).",
    )
    loop: str = _opt(
        "trio",
        cli=("--loop",),
        normalize=_event_loop,  # no `choices`: "auto" and "uvloop" get their own answer
        metavar="{auto,trio,asyncio}",
        help="What the app runs on: trio (auto is the same), or asyncio - each worker runs one "
        "asyncio loop (uvloop's when installed: the 'asyncio' extra) in a thread of its own and "
        "the app's calls run as asyncio tasks on it, for apps that use asyncio-only libraries "
        "(see docs/asyncio.md).",
    )
    h11_max_incomplete_size: int = _opt(
        16 * 1024,
        cli=("--h11-max-incomplete-size", "--h11-max-incomplete-event-size"),
        help="Largest request head in bytes; larger gets 431.",
    )
    h11_pass_raw_headers: bool = _opt(
        False, help="Pass header names to the app with their original case."
    )
    max_request_body_size: int | None = _opt(
        None,
        cli=("--limit-request-body",),
        help="Largest request body in bytes; larger gets 413 (default: no limit).",
    )
    include_date_header: bool = _opt(
        True, cli=("--date-header",), help="Send a Date header on every response."
    )
    include_server_header: bool = _opt(
        True, cli=("--server-header",), help="Send 'Server: trioserve' on every response."
    )
    headers: list[str] = _opt(
        factory=_list,
        cli=("--header",),
        metavar="NAME:VALUE",
        normalize=_headers,
        help="Default response header (repeatable); the app's own header of that name wins.",
    )
    server_names: list[str] = _opt(
        factory=_list,
        cli=("--server-name",),
        metavar="HOST",
        help="Host header values to serve; others get 404 (empty: all).",
    )
    limit_concurrency: int | None = _opt(
        None,
        cli=("--limit-concurrency",),
        help="Most requests in flight at once; over it requests get 503.",
    )
    max_app_queue_size: int = _opt(
        10,
        cli=("--ws-max-queue",),
        help="WebSocket messages queued for a slow app before the socket stops being read.",
    )
    wsgi_max_body_size: int = _opt(
        16 * 1024 * 1024, implemented=False, help="Hypercorn WSGI body limit (ASGI only here)."
    )

    # --- HTTP/2 ---------------------------------------------------------------------------
    alpn_protocols: list[str] = _opt(
        factory=lambda: ["h2", "http/1.1"],
        help="ALPN protocols offered over TLS, in order of preference (h2, http/1.1).",
    )
    h2_max_concurrent_streams: int = _opt(
        100,
        normalize=_positive,
        help="HTTP/2 streams per connection whose handlers may run at once (reset ones "
        "count until their handler ends); more get RST_STREAM REFUSED_STREAM.",
    )
    h2_max_header_list_size: int = _opt(
        2**16,
        help="HTTP/2 largest request header list (advertised and enforced; larger ends the "
        "connection with ENHANCE_YOUR_CALM).",
    )
    h2_max_inbound_frame_size: int = _opt(
        2**14,
        normalize=_frame_size,
        help="HTTP/2 largest frame the client may send (16384 to 16777215).",
    )
    h2_stream_window: int = _opt(
        256 * 1024,
        normalize=_window,
        help="HTTP/2 initial stream window: request body bytes buffered per stream before "
        "the app reads them (at least 65535).",
    )
    h2_connection_window: int = _opt(
        1024 * 1024,
        normalize=_window,
        help="HTTP/2 connection window: request body bytes buffered per connection.",
    )
    h2_reset_rate: float = _opt(
        50.0,
        help="HTTP/2 stream resets per second a connection may cause, by the client or by "
        "us (rapid reset, MadeYouReset); over it and h2_reset_burst: GOAWAY.",
    )
    h2_reset_burst: int = _opt(200, help="HTTP/2 stream resets allowed at once.")
    h2_small_data_rate: float = _opt(
        1000.0,
        help="HTTP/2 small DATA frames per second a connection may send, each charged for "
        "the part of 1 KiB it leaves empty (a 2-byte frame ~1, a full or last frame 0); "
        "over it and h2_small_data_burst: GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_small_data_burst: int = _opt(
        4000, normalize=_positive, help="HTTP/2 small DATA frames allowed at once."
    )
    h2_reset_grace: float = _opt(
        1.0, help="Seconds a reset HTTP/2 stream's app may run on before it is cancelled."
    )
    h2c_upgrade: bool = _opt(
        True,
        cli=("--h2c-upgrade",),
        help="Accept 'Upgrade: h2c' on cleartext HTTP/1.1 (prior knowledge always works).",
    )

    # --- HTTP/3 over QUIC (the h3 extra: pip install 'trioserve[h3]') ----------------------
    quic_bind: list[str] = _opt(
        factory=_list,
        cli=("--quic-bind",),
        metavar="ADDRESS",
        normalize=_needs_aioquic,
        help="UDP address (HOST:PORT, repeatable) to serve HTTP/3 on, with the TLS "
        "certfile/keyfile; needs the h3 extra. TCP responses then advertise it in Alt-Svc.",
    )
    alt_svc_headers: list[str] = _opt(
        factory=_list,
        cli=("--alt-svc",),
        metavar="VALUE",
        help="Alt-Svc header values for HTTP/1.1 responses (repeatable); empty: "
        "'h3=\":PORT\"; ma=86400' for each quic_bind, as Hypercorn.",
    )
    h3_max_concurrent_streams: int = _opt(
        100, help="HTTP/3 request streams a client may have open at once (QUIC MAX_STREAMS)."
    )
    h3_max_field_section_size: int = _opt(
        16 * 1024,
        help="Largest HTTP/3 request head (decoded, RFC 9114 size); larger gets 431. "
        "Advertised as SETTINGS_MAX_FIELD_SECTION_SIZE.",
    )
    h3_stream_buffer_size: int = _opt(
        256 * 1024,
        help="Bytes buffered per HTTP/3 stream each way: the receive window a client gets "
        "ahead of the app's receive(), and the response bytes queued before send() waits.",
    )
    quic_idle_timeout: float = _opt(
        30.0, help="Seconds a QUIC connection may be silent before it is closed."
    )
    quic_max_half_open: int = _opt(
        8, help="QUIC handshakes in progress per client IP address; further Initials dropped."
    )
    quic_max_connections_per_ip: int = _opt(
        64,
        cli=("--quic-max-connections-per-ip",),
        help="QUIC connections (established and half-open) per client IP address; further "
        "Initials are dropped and the client falls back to TCP or retries later.",
    )
    quic_retry: str = _opt(
        "load",
        choices=("on", "off", "load"),
        help="QUIC Retry (address validation): on, off, or load (only while more than "
        "quic_retry_threshold handshakes are in progress on a socket).",
    )
    quic_retry_threshold: int = _opt(
        64, help="Handshakes in progress on a socket above which quic_retry = load sends Retry."
    )

    # --- WebSocket -------------------------------------------------------------------------
    ws: str = _opt(
        "auto",
        cli=("--ws",),
        normalize=_ws_implementation,
        help=(
            "Uvicorn's WebSocket implementation choice: auto, wsproto, websockets and "
            "websockets-sansio all mean trioserve's one implementation (on wsproto)."
        ),
    )
    websocket_max_message_size: int = _opt(
        16 * 1024 * 1024,
        cli=("--ws-max-size",),
        help="Largest WebSocket message in bytes; larger closes with 1009.",
    )
    websocket_ping_interval: float | None = _opt(
        20.0,
        cli=("--ws-ping-interval",),
        help=(
            "Seconds between server pings (none: off). 20 as Uvicorn, so idle WebSockets "
            "outlive a proxy's idle timeout."
        ),
    )
    websocket_ping_timeout: float | None = _opt(
        20.0,
        cli=("--ws-ping-timeout",),
        help="Seconds to wait for a pong before closing the WebSocket (1011).",
    )
    websocket_max_buffered_bytes: int = _opt(
        16 * 1024 * 1024,
        cli=("--ws-max-buffered",),
        help="Bytes of received WebSocket messages (inflated) read ahead for apps away from "
        "receive(), all connections together; over it, reading ahead stops until apps drain.",
    )
    websocket_per_message_deflate: bool = _opt(
        True,
        cli=("--ws-per-message-deflate",),
        help="Accept permessage-deflate when a client offers it.",
    )

    # --- TLS -------------------------------------------------------------------------------
    certfile: str | None = _opt(
        None, cli=("--certfile", "--ssl-certfile"), help="TLS certificate chain (PEM)."
    )
    keyfile: str | None = _opt(
        None, cli=("--keyfile", "--ssl-keyfile"), help="TLS private key (PEM)."
    )
    keyfile_password: str | None = _opt(
        None, cli=("--keyfile-password", "--ssl-keyfile-password"), help="Password of keyfile."
    )
    ca_certs: str | None = _opt(
        None, cli=("--ca-certs", "--ssl-ca-certs"), help="CA bundle to verify client certificates."
    )
    ciphers: str = _opt(
        "ECDHE+AESGCM", cli=("--ciphers", "--ssl-ciphers"), help="OpenSSL cipher string."
    )
    verify_mode: str | None = _opt(
        None,
        cli=("--verify-mode", "--ssl-cert-reqs"),
        normalize=_verify_mode,
        help="Client certificate policy: CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED.",
    )
    verify_flags: str | None = _opt(
        None,
        normalize=_verify_flags,
        help="ssl.VerifyFlags names (joined by '|') or an int, applied to the context.",
    )
    ssl_version: str | None = _opt(
        None,
        cli=("--ssl-version",),
        normalize=_ssl_version,
        help=(
            "TLS protocol, as Uvicorn's --ssl-version: an ssl.PROTOCOL_* number or name. "
            "TLS/TLS_SERVER (2, 17): negotiate TLS 1.2 or 1.3 (the default); TLSv1_2 (5): "
            "TLS 1.2 only. TLS 1.0/1.1 are refused."
        ),
    )
    ssl_handshake_timeout: float = _opt(60.0, help="Seconds a TLS handshake may take.")

    # --- proxies ---------------------------------------------------------------------------
    proxy_headers: bool = _opt(
        True,
        cli=("--proxy-headers",),
        help="Trust X-Forwarded-* and Forwarded from --forwarded-allow-ips.",
    )
    forwarded_allow_ips: list[str] = _opt(
        factory=lambda: ["127.0.0.1", "::1"],
        cli=("--forwarded-allow-ips",),
        metavar="IPS",
        help="Peers whose proxy headers are trusted: IPs, CIDRs, 'unix' or '*' (comma list).",
    )
    forwarded_headers: list[str] = _opt(
        factory=lambda: list(DEFAULT_FORWARDED_HEADERS),
        cli=("--forwarded-headers",),
        metavar="NAMES",
        normalize=_forwarded_headers,
        help=(
            "Proxy headers honoured from trusted peers (comma list of x-forwarded-for, "
            "x-forwarded-proto, x-forwarded-host, x-forwarded-port, x-forwarded-prefix, "
            "forwarded). The default is Uvicorn's; name the others only if every trusted "
            "proxy sets or strips them."
        ),
    )
    proxy_protocol: bool = _opt(
        False,
        cli=("--proxy-protocol",),
        help=(
            "Require a PROXY protocol v1/v2 header on every connection (within "
            "request_head_timeout); believed from --forwarded-allow-ips only."
        ),
    )

    # --- lifecycle -------------------------------------------------------------------------
    graceful_timeout: float = _opt(
        30.0,
        cli=("--timeout-graceful-shutdown", "--graceful-timeout"),
        help=(
            "Seconds in-flight requests get to finish on shutdown (30: Kubernetes' default "
            "grace period; Uvicorn waits forever, Hypercorn 3 s)."
        ),
    )
    workers: int = _opt(1, cli=("-w", "--workers"), help="Worker processes.")
    worker_class: str = _opt(
        "trio",
        normalize=_worker_class,
        help=(
            "Hypercorn's worker class: trio, or asyncio/uvloop (Hypercorn's choices for "
            'asyncio apps), which mean loop = "asyncio" unless the same source sets loop.'
        ),
    )
    max_requests: int | None = _opt(
        None,
        cli=("--limit-max-requests", "--max-requests"),
        help="Requests before a worker restarts.",
    )
    max_requests_jitter: int = _opt(
        0,
        cli=("--max-requests-jitter", "--limit-max-requests-jitter"),
        help="Random extra requests added to max_requests.",
    )
    worker_timeout: float = _opt(
        30.0,
        cli=("--worker-timeout", "--timeout-worker-healthcheck"),
        help="Seconds a worker's event loop may stay blocked before the supervisor replaces it.",
    )
    use_reloader: bool = _opt(False, cli=("--reload",), help="Restart when code changes.")
    reload_dirs: list[str] = _opt(
        factory=_list, cli=("--reload-dir",), help="Directories watched by --reload."
    )
    reload_includes: list[str] = _opt(
        factory=_list, cli=("--reload-include",), help="Glob patterns watched by --reload."
    )
    reload_excludes: list[str] = _opt(
        factory=_list, cli=("--reload-exclude",), help="Glob patterns ignored by --reload."
    )
    reload_delay: float = _opt(0.25, cli=("--reload-delay",), help="Seconds between checks.")
    pid_path: str | None = _opt(None, cli=("--pid",), help="File to write the process id to.")
    daemon: bool = _opt(True, implemented=False, help="Hypercorn's daemon flag (ignored).")

    # --- logging ---------------------------------------------------------------------------
    loglevel: str = _opt(
        "info",
        cli=("--log-level",),
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        normalize=_log_level,
        help="Log level of the trioserve loggers (a name, or a number as logging's: 20).",
    )
    access_log: bool = _opt(True, cli=("--access-log",), help="Write one line per request.")
    accesslog: str | None = _opt(
        "-",
        cli=("--access-logfile",),
        help="Access log target: '-' for stdout (as Uvicorn and Hypercorn), stderr, or a path.",
    )
    errorlog: str | None = _opt(
        "-",
        cli=("--error-logfile",),
        help="Error log target: '-' for stderr, stdout, or a file path.",
    )
    access_log_format: str = _opt(
        '%(h)s %(l)s %(l)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
        cli=("--access-log-format",),
        help="Access log line, with Hypercorn/gunicorn %(atom)s atoms.",
    )
    logconfig: str | None = _opt(
        None,
        cli=("--log-config",),
        help=(
            "Logging config file: .ini/.conf (fileConfig), .json, .yaml/.yml (with PyYAML) "
            "or .toml; Uvicorn's formatters in it work without Uvicorn installed."
        ),
    )
    logconfig_dict: dict[str, Any] | None = _opt(None, help="Logging dictConfig mapping.")
    use_colors: bool | None = _opt(
        None,
        cli=("--use-colors",),
        help="Colour the log level names (default: when stderr is a terminal).",
    )
    log_format: str = _opt(
        "text",
        cli=("--log-format",),
        choices=("text", "json"),
        help="Log line format: text, or json (one object per line, for log shippers).",
    )
    debug: bool = _opt(False, help="Hypercorn's debug flag (enables debug logging).")

    # --- metrics, health, request ids (docs/observability.md) ------------------------------
    metrics_bind: str | None = _opt(
        None,
        cli=("--metrics-bind",),
        metavar="HOST:PORT",
        help="Own listener for /metrics (Prometheus; the 'metrics' extra), /healthz and "
        "/readyz; never the app's port.",
    )
    metrics_linger: float = _opt(
        0.0,
        cli=("--metrics-linger",),
        help="Seconds the metrics listener keeps answering after the server stopped, so a "
        "last scrape sees the final counts.",
    )
    metrics_max_connections: int = _opt(
        64,
        cli=("--metrics-max-connections",),
        normalize=_positive,
        help="Connections the metrics listener holds at once; a new one over it closes the "
        "oldest (a flood of idle connections cannot keep a scrape out).",
    )
    metrics_request_timeout: float = _opt(
        5.0,
        cli=("--metrics-request-timeout",),
        help="Seconds the metrics listener allows one whole exchange, request and answer.",
    )
    statsd_host: str | None = _opt(
        None,
        cli=("--statsd-host",),
        metavar="HOST:PORT",
        help="Send StatsD metrics (Hypercorn's names) over UDP to this address.",
    )
    statsd_prefix: str = _opt(
        "", cli=("--statsd-prefix",), help="Prefix for StatsD metric names (a dot is added)."
    )
    dogstatsd_tags: str = _opt(
        "", cli=("--dogstatsd-tags",), help="DogStatsD tags added to every metric (a,b:c)."
    )
    request_id_header: str = _opt(
        "X-Request-ID",
        cli=("--request-id-header",),
        help="Request header whose value becomes scope['request_id'] (a new id is made "
        "when it is absent or not 1-128 safe characters); empty: no request ids.",
    )
    request_id_response: bool = _opt(
        False,
        cli=("--request-id-response",),
        help="Echo the request id in the response, under request_id_header.",
    )

    def __post_init__(self) -> None:
        """Built directly (the documented API), a Config checks itself as every loader does.

        So ``Config(lifespan="bogus")`` fails here, with the message the CLI and a TOML
        file give, instead of misbehaving later; values are normalised the same way.
        """
        for name in OPTIONS:
            value = getattr(self, name)
            if name in _BIND_KEYS and isinstance(value, str):
                value = [value]
            checked = coerce(name, value, source="Config()")
            if checked is not value:
                object.__setattr__(self, name, checked)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "options") -> Config:
        """Build from already-typed or raw values (TOML, env, kwargs), checking every key."""
        return cls(**coerce_all(values, source=source))

    @property
    def ssl_enabled(self) -> bool:
        return self.certfile is not None and self.keyfile is not None


OPTIONS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Config)}

_BIND_KEYS = ("bind", "insecure_bind", "quic_bind")


def _flag_aliases() -> dict[str, str]:
    """Every long CLI flag is also a key (``--ssl-cert-reqs`` -> ``ssl_cert_reqs``): Uvicorn's
    ``run()`` keywords are its flag names, so they come from the option metadata and cannot
    drift from the command line."""
    out: dict[str, str] = {}
    for name, f in OPTIONS.items():
        for flag in f.metadata["cli"]:
            if flag.startswith("--"):
                alias = flag[2:].replace("-", "_")
                if alias != name:
                    assert alias not in OPTIONS, f"flag {flag} names another option"
                    out[alias] = name
    return out


# Other spellings (gunicorn's cert_reqs) plus every flag name, mapped onto field names.
ALIASES: dict[str, str] = {"cert_reqs": "verify_mode", **_flag_aliases()}


_HINTS: dict[str, Any] = {}


def _hint(name: str) -> Any:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(Config))
    return _HINTS[name]


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def option_type(name: str) -> tuple[Any, bool]:
    """An option's value type without ``| None``, and whether None is allowed."""
    return _strip_optional(_hint(name))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce(name: str, value: Any, *, source: str = "options") -> Any:
    """Turn a raw value (TOML value, env string, CLI string) into the field's final value.

    Errors name the key and where the value came from (the file path, ``environment``,
    ``command line``).
    """
    typed = _coerce_type(name, value, source=source)
    if typed is None:
        return None
    meta = OPTIONS[name].metadata
    if meta["normalize"] is not None:
        try:
            typed = meta["normalize"](typed)
        except ValueError as exc:
            raise ConfigError(f"{name!r} (from {source}): {value!r} is invalid: {exc}") from None
    choices = meta["choices"]
    if choices and typed not in choices:
        raise ConfigError(
            f"{name!r} (from {source}) must be one of {', '.join(choices)}, got {value!r}"
        )
    return typed


def _coerce_type(name: str, value: Any, *, source: str) -> Any:
    tp, optional = _strip_optional(_hint(name))
    where = f"{name!r} (from {source})"
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} may not be empty")
    if isinstance(value, str) and optional and value.lower() in {"none", "null", ""}:
        return None
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int):
                return bool(value)
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        if tp is int:
            if isinstance(value, bool):
                raise ConfigError(f"{where} must be an integer, got {value!r}")
            if isinstance(value, str):
                if name == "umask" and value.strip().isdigit():
                    return int(value, 8)  # "077", as umask(1) writes it
                return int(value, 0)
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{where} must be an integer, got {value!r}")
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            number = float(value)
            if number != number:  # NaN: every comparison with it is False (no deadline)
                raise ConfigError(f"{where} must be a number, got {value!r}")
            return number
        if tp is str:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            if not isinstance(value, str):
                raise ConfigError(f"{where} must be a string, got {value!r}")
            return value
        if origin is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where} must be a list, got {value!r}")
            if name == "headers":
                value = [_header_item(v) for v in value]
            return [str(v) for v in value]
        if origin is dict:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where} must be a table/dict, got {value!r}")
            return dict(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where} has a wrong type: {value!r} ({exc})") from None
    raise ConfigError(f"{where}: unsupported option type {tp!r}")  # pragma: no cover


def canonical_key(key: str, *, source: str) -> str:
    """Map a key (Hypercorn spelling, dashes allowed) to a field name, or raise with a hint."""
    name = key.replace("-", "_")
    name = ALIASES.get(name, name)
    if name in OPTIONS:
        return name
    if name in _HYPERCORN_IGNORED:
        return name
    close = difflib.get_close_matches(name, list(OPTIONS) + list(ALIASES), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown config key {key!r} in {source}{hint}")


# Hypercorn keys that make no sense here (Python objects) but must not be an error.
_HYPERCORN_IGNORED = {"logger_class"}

_warned: set[str] = set()


def coerce_all(values: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = canonical_key(key, source=source)
        if name in _HYPERCORN_IGNORED:
            _warn_unimplemented(name, source)
            continue
        # One bind string is one address (Hypercorn), except in the environment, where
        # lists are comma-separated.
        if name in _BIND_KEYS and isinstance(value, str) and source != "environment":
            value = [value]
        if name == "logconfig" and isinstance(value, Mapping):
            name = "logconfig_dict"  # Uvicorn's run(log_config={...}): a dictConfig
        out[name] = coerce(name, value, source=source)
        if not OPTIONS[name].metadata["implemented"] and out[name] != _default(name):
            _warn_unimplemented(name, source)
    if out.get("worker_class", "trio") != "trio" and "loop" not in values:
        out["loop"] = coerce("loop", "asyncio", source=f"worker_class in {source}")
        _log.info(
            'worker_class = "%s" (from %s) runs asyncio apps in Hypercorn: serving with '
            'loop = "asyncio"',
            out["worker_class"],
            source,
        )
    return out


def _default(name: str) -> Any:
    f = OPTIONS[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _warn_unimplemented(name: str, source: str) -> None:
    if name in _warned:
        return
    _warned.add(name)
    _log.warning(
        "config key %r (from %s) is accepted for Hypercorn compatibility but is not "
        "implemented by trioserve yet; it has no effect",
        name,
        source,
    )


class ConfigWarning(UserWarning):
    """No longer raised: configuration notices are log lines on ``trioserve.error``.

    Kept so that code filtering it still imports.
    """


def load_config_file(spec: str) -> dict[str, Any]:
    """Read raw options from ``file.toml``, ``python:module`` or ``file:path.py``.

    Python sources contribute their module-level names that are config keys (the rest of
    the module - imports, helpers - is ignored, as Hypercorn does).
    """
    if spec.startswith("python:"):
        return _python_object(spec[len("python:") :])
    if spec.startswith("file:"):
        path = Path(spec[len("file:") :])
        mod_spec = importlib.util.spec_from_file_location("trioserve_config", path)
        if mod_spec is None or mod_spec.loader is None:
            raise ConfigError(f"cannot load config file {path}")
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        return _python_namespace(vars(module))
    path = Path(spec)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        data: dict[str, Any] = tomllib.loads(text.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return data


def _python_object(target: str) -> dict[str, Any]:
    """``module`` or ``module.attribute`` (an object whose attributes are config keys)."""
    try:
        module = importlib.import_module(target)
    except ImportError:
        path, _, attr = target.rpartition(".")
        try:
            obj = getattr(importlib.import_module(path), attr) if path else None
        except ImportError:
            obj = None
        if obj is None:
            raise ConfigError(f"cannot import config module {target!r}") from None
        return _python_namespace({k: getattr(obj, k) for k in dir(obj)})
    return _python_namespace(vars(module))


def _python_namespace(namespace: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, types.ModuleType) or callable(value):
            continue
        out[key] = value
    return out


def build_config(
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Layer the sources: defaults < config file < environment < explicit overrides."""
    values: dict[str, Any] = {}
    if config_file is None and environ is not None:
        config_file = environ.get(ENV_PREFIX + "CONFIG")
    if environ is not None and "FORWARDED_ALLOW_IPS" in environ:
        # Uvicorn's and gunicorn's variable: a default that a config file still overrides.
        values["forwarded_allow_ips"] = coerce(
            "forwarded_allow_ips", environ["FORWARDED_ALLOW_IPS"], source="FORWARDED_ALLOW_IPS"
        )
    if config_file:
        values.update(coerce_all(load_config_file(config_file), source=config_file))
    if environ is not None:
        env = read_environ(environ, _OPTION_KEYS)
        warning = env.warning()
        if warning:
            _log.warning("%s", warning)
        values.update(coerce_all(env.values, source="environment"))
        binds = env_bind_list(env)
        if binds is not None:  # TRIOSERVE_PORT..., which a bind on the command line replaces
            values["bind"] = coerce("bind", binds, source="environment")
    if overrides:
        values.update(coerce_all(overrides, source="options"))
    return Config(**values)


def _env_key(name: str) -> str | None:
    try:
        return canonical_key(name, source="environment")
    except ConfigError:
        return None


_OPTION_KEYS = OptionKeys(
    resolve=_env_key,
    is_bool=lambda name: option_type(name)[0] is bool,
    keys=[*OPTIONS, *ALIASES],
)


def default_environ() -> Mapping[str, str]:
    return os.environ

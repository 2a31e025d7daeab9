"""Bind strings to listening sockets, without trio, so a supervisor can bind once for all.

``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH`` and ``fd://N`` (Hypercorn's forms). Sockets are
plain :mod:`socket` objects in listening state; ``serve()`` wraps them for trio, and worker
processes inherit them.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass

from .config import Config, ConfigError


@dataclass(frozen=True)
class Bind:
    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1
    secure: bool = False

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_bind(text: str, *, secure: bool = False) -> Bind:
    """Parse one bind string; errors say what shape was expected."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ConfigError(f"bind {text!r}: unix: needs a path")
        return Bind("unix", path=path, secure=secure)
    if text.startswith("fd://"):
        try:
            return Bind("fd", fd=int(text[len("fd://") :]), secure=secure)
        except ValueError:
            raise ConfigError(f"bind {text!r}: fd:// needs a number") from None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"bind {text!r}: missing ']' after the IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ConfigError(f"bind {text!r}: expected [ADDRESS]:PORT")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        if ":" in host:
            raise ConfigError(f"bind {text!r}: put IPv6 addresses in brackets: [{host}]:PORT")
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"bind {text!r}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"bind {text!r}: port out of range")
    else:
        port = 8000
    return Bind("tcp", host=host or "0.0.0.0", port=port, secure=secure)


def binds_from_config(config: Config) -> list[Bind]:
    secure = config.ssl_enabled
    binds = [parse_bind(b, secure=secure) for b in config.bind]
    binds += [parse_bind(b) for b in config.insecure_bind]
    return binds


def create_socket(
    bind: Bind, *, backlog: int = 100, config: Config | None = None
) -> socket.socket:
    """Open, bind and listen. OSError (e.g. address in use) propagates to the caller."""
    if bind.kind == "fd":
        sock = socket.socket(fileno=bind.fd)
        sock.setblocking(False)
        sock.listen(backlog)
        return sock
    if bind.kind == "unix":
        try:
            if stat.S_ISSOCK(os.stat(bind.path).st_mode):
                os.unlink(bind.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = None
        if config is not None and config.umask is not None:
            old_umask = os.umask(config.umask)
        try:
            sock.bind(bind.path)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if config is not None and (config.user is not None or config.group is not None):
            os.chown(
                bind.path,
                -1 if config.user is None else config.user,
                -1 if config.group is None else config.group,
            )
        sock.setblocking(False)
        sock.listen(backlog)
        return sock
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((bind.host, bind.port))
        sock.setblocking(False)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def create_sockets(config: Config) -> list[tuple[Bind, socket.socket]]:
    """All of a config's listening sockets; closes what it opened if one bind fails."""
    out: list[tuple[Bind, socket.socket]] = []
    try:
        for bind in binds_from_config(config):
            out.append((bind, create_socket(bind, backlog=config.backlog, config=config)))
    except BaseException:
        for _, sock in out:
            sock.close()
        raise
    return out


def socket_url(bind: Bind, sock: socket.socket) -> str:
    """The URL a person can open for a listening socket (port 0 resolved)."""
    scheme = "https" if bind.secure else "http"
    if sock.family == socket.AF_UNIX:
        return f"{scheme}+unix://{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"

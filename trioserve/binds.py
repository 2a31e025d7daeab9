"""Bind strings to listening sockets, without trio, so a supervisor can bind once for all.

``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH`` and ``fd://N`` (Hypercorn's forms), plus the
sockets systemd passes by socket activation (``LISTEN_FDS``/``LISTEN_PID``), which are picked
up automatically. Sockets are plain :mod:`socket` objects in listening state; ``serve()``
wraps them for trio, and worker processes inherit them.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping, MutableMapping
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


# Unix socket files this process created (path -> device, inode), so only those are removed
# on exit: a newer server that has since bound the same path keeps its socket file.
_created_unix: dict[str, tuple[int, int]] = {}

SD_LISTEN_FDS_START = 3
_DEFAULT_BIND = ["127.0.0.1:8000"]


def systemd_fds(environ: Mapping[str, str]) -> list[int]:
    """File descriptors systemd passed to this process (empty if none, or not for us).

    ``LISTEN_PID`` must be our pid: the variables are inherited by children that must not
    take the sockets for themselves.
    """
    try:
        pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if pid != os.getpid() or count <= 0:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def binds_from_config(config: Config, environ: Mapping[str, str] | None = None) -> list[Bind]:
    """The config's binds; systemd-activated sockets replace the default bind.

    An explicit ``bind`` (anything but the default 127.0.0.1:8000) is kept beside them.
    """
    secure = config.ssl_enabled
    env = os.environ if environ is None else environ
    activated = [Bind("fd", fd=fd, secure=secure) for fd in systemd_fds(env)]
    explicit = config.bind if not activated or config.bind != _DEFAULT_BIND else []
    binds = activated + [parse_bind(b, secure=secure) for b in explicit]
    binds += [parse_bind(b) for b in config.insecure_bind]
    return binds


def _forget_systemd(environ: MutableMapping[str, str]) -> None:
    """Once taken, the sockets are ours: children must not see the variables (sd_listen_fds)."""
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)


def create_socket(
    bind: Bind, *, backlog: int = 100, config: Config | None = None
) -> socket.socket:
    """Open, bind and listen. OSError (e.g. address in use) propagates to the caller."""
    if bind.kind == "fd":
        return _adopt_fd(bind, backlog)
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
            if old_umask is None:
                # As Uvicorn: anyone may connect (nginx runs as another user); --umask, or
                # the directory's permissions, restrict it.
                os.chmod(bind.path, 0o666)
            info = os.stat(bind.path)
        except BaseException:
            sock.close()
            raise
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        _created_unix[bind.path] = (info.st_dev, info.st_ino)
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


def _adopt_fd(bind: Bind, backlog: int) -> socket.socket:
    """``fd://N``: a listening socket we were handed (systemd, a supervisor)."""
    try:
        sock = socket.socket(fileno=bind.fd)
    except OSError as exc:
        reason = exc.strerror
        raise ConfigError(f"bind fd://{bind.fd}: not an open socket ({reason})") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError(f"bind fd://{bind.fd}: not a stream (TCP or unix) socket")
    sock.setblocking(False)
    sock.listen(backlog)
    return sock


def create_sockets(
    config: Config, environ: MutableMapping[str, str] | None = None
) -> list[tuple[Bind, socket.socket]]:
    """All of a config's listening sockets; closes what it opened if one bind fails."""
    env = os.environ if environ is None else environ
    out: list[tuple[Bind, socket.socket]] = []
    try:
        for bind in binds_from_config(config, env):
            out.append((bind, create_socket(bind, backlog=config.backlog, config=config)))
    except BaseException:
        for _, sock in out:
            sock.close()
        raise
    if systemd_fds(env):
        _forget_systemd(env)
    return out


def create_quic_sockets(config: Config, *, reuse_port: bool) -> list[tuple[Bind, socket.socket]]:
    """UDP sockets for ``quic_bind``: HOST:PORT only.

    ``reuse_port`` (several workers): each worker binds its own socket with SO_REUSEPORT and
    the kernel spreads clients over them by address (docs/http3.md gives the caveats).
    """
    out: list[tuple[Bind, socket.socket]] = []
    try:
        for text in config.quic_bind:
            bind = parse_bind(text, secure=True)
            if bind.kind != "tcp":
                raise ConfigError(f"quic_bind {text!r}: HTTP/3 needs a HOST:PORT (UDP) address")
            family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            out.append((bind, sock))
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((bind.host, bind.port))
            sock.setblocking(False)
    except BaseException:
        for _, sock in out:
            sock.close()
        raise
    return out


def alt_svc_values(config: Config, quic_sockets: list[tuple[Bind, socket.socket]]) -> list[str]:
    """The Alt-Svc values HTTP/1.1 responses carry: configured ones, else one per QUIC port."""
    if config.alt_svc_headers:
        return list(config.alt_svc_headers)
    ports = dict.fromkeys(sock.getsockname()[1] for _, sock in quic_sockets)
    return [f'h3=":{port}"; ma=86400' for port in ports]


def close_sockets(bound: list[tuple[Bind, socket.socket]]) -> None:
    """Close listening sockets; remove the unix socket files this process created (Uvicorn
    and Hypercorn leave them behind, and a stale file confuses the next start's checks)."""
    for bind, sock in bound:
        sock.close()
        if bind.kind != "unix":
            continue
        created = _created_unix.pop(bind.path, None)
        try:
            info = os.stat(bind.path)
            if created == (info.st_dev, info.st_ino):
                os.unlink(bind.path)
        except OSError:
            pass


def socket_url(bind: Bind, sock: socket.socket) -> str:
    """The URL a person can open for a listening socket (port 0 resolved)."""
    scheme = "https" if bind.secure else "http"
    if sock.family == socket.AF_UNIX:
        return f"{scheme}+unix://{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"

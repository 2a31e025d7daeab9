"""StatsD and DogStatsD, with Hypercorn's option names and metric names.

Hypercorn's names, so dashboards built for it keep working: per request
``hypercorn.requests`` (counter), ``hypercorn.request.duration`` (timer, ms) and
``hypercorn.request.status.<status>`` (counter); per error-log line
``hypercorn.log.warning``/``error``/``critical``/``exception``. ``statsd_prefix`` goes in
front (with a dot), ``dogstatsd_tags`` after (``|#tags``).

Sending can never slow or fail a request: lines are appended to a buffer and sent as
multi-line datagrams (one per ~1,400 bytes, and by the server's sampler twice a second)
on a non-blocking UDP socket whose every error is swallowed - a full buffer, an absent
agent (ECONNREFUSED) or no route lose metrics, never a request.
"""

from __future__ import annotations

import logging
import socket

from ..config import ConfigError

PACKET_SIZE = 1400


class StatsD:
    """A buffering StatsD client; ``request_done`` is a :class:`Counters` listener."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"statsd_host {address!r}: expected HOST:PORT")
        host = host.strip("[]") or "127.0.0.1"
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                host, int(port), type=socket.SOCK_DGRAM
            )[0]
        except OSError as exc:
            raise ConfigError(f"statsd_host {address!r}: {exc}") from None
        self.sock = socket.socket(family, kind, proto)
        self.sock.setblocking(False)
        try:
            self.sock.connect(sockaddr)
        except OSError:
            pass  # no route now: every send fails quietly until there is one
        if prefix and not prefix.endswith("."):
            prefix += "."
        self.prefix = prefix
        self.suffix = f"|#{tags}" if tags else ""
        self._lines: list[str] = []
        self._size = 0

    def _add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= PACKET_SIZE:
            self.flush()

    def increment(self, name: str, value: int = 1) -> None:
        self._add(f"{self.prefix}{name}:{value}|c|@1.0{self.suffix}")

    def gauge(self, name: str, value: int) -> None:
        self._add(f"{self.prefix}{name}:{value}|g{self.suffix}")

    def histogram(self, name: str, value: float) -> None:
        self._add(f"{self.prefix}{name}:{value}|ms{self.suffix}")

    def request_done(self, status: int, duration: float) -> None:
        self.histogram("hypercorn.request.duration", duration * 1_000)
        self.increment("hypercorn.requests")
        if status:
            self.increment(f"hypercorn.request.status.{status}")

    def flush(self) -> None:
        if not self._lines:
            return
        data = "\n".join(self._lines).encode("ascii", "replace")
        self._lines = []
        self._size = 0
        try:
            self.sock.send(data)
        except OSError:
            pass  # full, refused, unreachable: metrics are lost, requests are not

    def close(self) -> None:
        self.flush()
        self.sock.close()


class StatsDLogHandler(logging.Handler):
    """Counts warning-and-worse error-log lines as Hypercorn's ``hypercorn.log.*``."""

    def __init__(self, statsd: StatsD) -> None:
        super().__init__(logging.WARNING)
        self.statsd = statsd

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.levelno >= logging.ERROR:
            self.statsd.increment("hypercorn.log.exception")
        elif record.levelno >= logging.CRITICAL:
            self.statsd.increment("hypercorn.log.critical")
        elif record.levelno >= logging.ERROR:
            self.statsd.increment("hypercorn.log.error")
        else:
            self.statsd.increment("hypercorn.log.warning")

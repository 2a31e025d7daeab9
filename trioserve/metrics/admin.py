"""The admin listener: ``/metrics``, ``/healthz`` and ``/readyz`` on their own socket.

Never on the app's port: the app's listeners know nothing of these paths, so nothing here
can be reached through them. One daemon thread serves every connection, because the
answers must keep coming when the process that owns them is busy: in a supervisor there
is no event loop to borrow, and in a single process ``/healthz`` exists precisely to tell
when the event loop has stopped turning (it reads the loop's last tick rather than asking
the loop).

One thread, not one per connection: the thread waits on all sockets at once (selectors),
so a client that trickles its request a byte at a time costs a socket, not a thread.
Each connection has ``metrics_max_connections`` companions at most (default
:data:`MAX_CONNECTIONS`; over it, the oldest one is closed to make room, so a flood of idle
connections cannot keep a scrape out) and ``metrics_request_timeout`` seconds (default
:data:`REQUEST_DEADLINE`) for the whole exchange, request and answer, however the bytes
trickle in.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from email.utils import formatdate
from typing import Protocol

from ..logs import error_log

# A blocked event loop is reported after this many seconds without a tick.
STALE_LOOP_SECONDS = 5.0
# Connections open at once; a new one over it closes the oldest (a scraper asks at once).
MAX_CONNECTIONS = 64
# Seconds for a whole exchange: the request read and the answer written.
REQUEST_DEADLINE = 5.0
# A request head longer than this gets 431 (the paths served are a few bytes).
MAX_REQUEST_HEAD = 8192

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"


class AdminSource(Protocol):
    """Where the answers come from (a single server, or a supervisor and its workers)."""

    def metrics_text(self) -> bytes | None:
        """The Prometheus exposition, or None when metrics are off."""

    def health(self) -> tuple[bool, str]:
        """Whether the process is alive and turning, with a one-line reason."""

    def readiness(self) -> tuple[bool, str]:
        """Whether new work is welcome (False from the moment a drain begins)."""


def answer_for(source: AdminSource, head: bytes) -> bytes:
    """The whole HTTP/1.0 answer to a request head (request line and fields)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response(400, _TEXT, b"bad request line\n", head=False)
    method, target = parts[0], parts[1]
    if method not in (b"GET", b"HEAD"):
        return _response(501, _TEXT, b"only GET and HEAD\n", head=False)
    status, content_type, body = _route(source, target.split(b"?", 1)[0])
    return _response(status, content_type, body, head=method == b"HEAD")


def _route(source: AdminSource, path: bytes) -> tuple[int, str, bytes]:
    if path == b"/metrics":
        text = source.metrics_text()
        if text is None:
            return 404, _TEXT, b"metrics are off\n"
        from .exposition import CONTENT_TYPE_LATEST

        return 200, CONTENT_TYPE_LATEST, text
    if path in (b"/healthz", b"/readyz"):
        ok, reason = source.health() if path == b"/healthz" else source.readiness()
        return (200 if ok else 503), _TEXT, f"{reason}\n".encode()
    return 404, _TEXT, b"not found: /metrics, /healthz, /readyz\n"


def _response(status: int, content_type: str, body: bytes, *, head: bool) -> bytes:
    fields = (
        f"HTTP/1.0 {status} {_REASONS.get(status, '')}\r\n"
        f"Server: trioserve-admin\r\nDate: {formatdate(usegmt=True)}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return fields.encode("latin-1") + (b"" if head else body)


class _Exchange:
    """One connection: the request read so far, then the answer left to write."""

    __slots__ = ("deadline", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""
        self.outbox: memoryview | None = None


class AdminServer:
    """Serves an :class:`AdminSource` on an already listening socket, in one daemon thread."""

    def __init__(
        self,
        sock: socket.socket,
        source: AdminSource,
        *,
        max_connections: int = MAX_CONNECTIONS,
        deadline: float = REQUEST_DEADLINE,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.source = source
        self.max_connections = max_connections
        self.deadline = deadline
        self._selector = selectors.DefaultSelector()
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        # Insertion order is accept order: the first entry is the oldest connection.
        self._exchanges: dict[socket.socket, _Exchange] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trioserve-admin", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()
        error_log.info("Metrics and health on %s (/metrics, /healthz, /readyz)", self.url)

    def close(self) -> None:
        self._stopping = True
        if self._thread.is_alive():
            self._wake_send.send(b"x")
            self._thread.join(5)
        if not self._thread.is_alive():
            for exchange in list(self._exchanges.values()):
                self._drop(exchange)
            self._selector.close()
        self.sock.close()
        self._wake_recv.close()
        self._wake_send.close()

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        selector = self._selector
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self._wake_recv, selectors.EVENT_READ)
        while not self._stopping:
            now = time.monotonic()
            oldest = next(iter(self._exchanges.values()), None)
            timeout = 1.0 if oldest is None else min(max(oldest.deadline - now, 0.0), 1.0)
            for key, _ in selector.select(timeout):
                if key.fileobj is self.sock:
                    self._accept()
                elif key.fileobj is self._wake_recv:
                    self._drain_wakeups()
                else:
                    exchange = self._exchanges.get(key.fileobj)  # type: ignore[call-overload]
                    if exchange is not None:
                        self._serve(exchange)
            self._expire(time.monotonic())

    def _accept(self) -> None:
        for _ in range(self.max_connections):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next round
                error_log.warning("metrics listener: accept failed: %s", exc)
                return
            while len(self._exchanges) >= self.max_connections:
                self._drop(next(iter(self._exchanges.values())))
            conn.setblocking(False)
            exchange = _Exchange(conn, time.monotonic() + self.deadline)
            self._exchanges[conn] = exchange
            self._selector.register(conn, selectors.EVENT_READ)

    def _serve(self, exchange: _Exchange) -> None:
        """Read the request, or write the answer: whatever the socket is ready for."""
        try:
            if exchange.outbox is None:
                self._read(exchange)
            else:
                self._write(exchange)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(exchange)

    def _read(self, exchange: _Exchange) -> None:
        data = exchange.sock.recv(4096)
        if not data:
            self._drop(exchange)
            return
        exchange.inbox += data
        end = exchange.inbox.find(b"\r\n\r\n")
        if end < 0:
            end = exchange.inbox.find(b"\n\n")
        if end < 0 and len(exchange.inbox) <= MAX_REQUEST_HEAD:
            return
        if end < 0 or end > MAX_REQUEST_HEAD:
            answer = _response(431, _TEXT, b"request head too large\n", head=False)
        else:
            answer = self._answer(exchange.inbox[:end])
        exchange.inbox = b""
        exchange.outbox = memoryview(answer)
        self._selector.modify(exchange.sock, selectors.EVENT_WRITE)
        self._write(exchange)

    def _answer(self, head: bytes) -> bytes:
        try:
            return answer_for(self.source, head)
        except Exception:  # a failing source answers 500; the listener stays up
            error_log.exception("metrics listener: could not answer")
            return _response(500, _TEXT, b"internal error\n", head=False)

    def _write(self, exchange: _Exchange) -> None:
        outbox = exchange.outbox
        assert outbox is not None
        sent = exchange.sock.send(outbox)
        exchange.outbox = outbox = outbox[sent:]
        if not len(outbox):
            self._drop(exchange)

    def _expire(self, now: float) -> None:
        """Close the connections whose whole exchange took longer than the deadline."""
        while self._exchanges:
            oldest = next(iter(self._exchanges.values()))
            if oldest.deadline > now:
                return
            self._drop(oldest)

    def _drop(self, exchange: _Exchange) -> None:
        sock = exchange.sock
        self._exchanges.pop(sock, None)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_recv.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass

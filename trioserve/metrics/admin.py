"""The admin listener: ``/metrics``, ``/healthz`` and ``/readyz`` on their own socket.

Never on the app's port: the app's listeners know nothing of these paths, so nothing here
can be reached through them. A daemon thread with the standard library's HTTP server,
because the answers must keep coming when the process that owns them is busy: in a
supervisor there is no event loop to borrow, and in a single process ``/healthz`` exists
precisely to tell when the event loop has stopped turning (it reads the loop's last tick
rather than asking the loop).
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from ..logs import error_log

# A blocked event loop is reported after this many seconds without a tick.
STALE_LOOP_SECONDS = 5.0


class AdminSource(Protocol):
    """Where the answers come from (a single server, or a supervisor and its workers)."""

    def metrics_text(self) -> bytes | None:
        """The Prometheus exposition, or None when metrics are off."""

    def health(self) -> tuple[bool, str]:
        """Whether the process is alive and turning, with a one-line reason."""

    def readiness(self) -> tuple[bool, str]:
        """Whether new work is welcome (False from the moment a drain begins)."""


class _Handler(BaseHTTPRequestHandler):
    server_version = "trioserve-admin"
    protocol_version = "HTTP/1.0"
    timeout = 10  # a client that never finishes its request line does not hold a thread

    def do_GET(self) -> None:
        source: AdminSource = self.server.source  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        content_type = "text/plain; charset=utf-8"
        if path == "/metrics":
            text = source.metrics_text()
            if text is None:
                self._answer(404, content_type, b"metrics are off\n")
                return
            from .exposition import CONTENT_TYPE_LATEST

            self._answer(200, CONTENT_TYPE_LATEST, text)
        elif path in ("/healthz", "/readyz"):
            ok, reason = source.health() if path == "/healthz" else source.readiness()
            self._answer(200 if ok else 503, content_type, f"{reason}\n".encode())
        else:
            self._answer(404, content_type, b"not found: /metrics, /healthz, /readyz\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        error_log.debug("admin %s: " + format, self.client_address[0], *args)


class AdminServer:
    """Serves an :class:`AdminSource` on an already listening socket, in a daemon thread."""

    def __init__(self, sock: socket.socket, source: AdminSource) -> None:
        sock.setblocking(True)
        self.sock = sock
        server = ThreadingHTTPServer(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.daemon_threads = True
        server.source = source  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()
        error_log.info("Metrics and health on %s (/metrics, /healthz, /readyz)", self.url)

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

"""A trioserve subprocess per parser for the fuzzers, and a raw one-shot exchange."""

from __future__ import annotations

import socket
import time

from ..conftest import ROOT
from ..supervisor.procs import Server


def start_fuzz_server(parser: str) -> Server:
    args = ["tests.faults.apps:echo", "--bind", "127.0.0.1:0", "--http", parser]
    args += ["--no-access-log", "--timeout-request-head", "2", "--timeout-request-body", "2"]
    server = Server(ROOT, args)
    match = server.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")[0]
    server.port = int(match.group(1))
    return server


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, str]:
    """Send ``data``, half-close, read until the server closes.

    Returns what came back and how it ended: "eof", "reset", or "timeout" (a hang).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: read it
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return b"".join(chunks), "reset"
            except TimeoutError:
                return b"".join(chunks), "timeout"
            if not chunk:
                return b"".join(chunks), "eof"
            chunks.append(chunk)

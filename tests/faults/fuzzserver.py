"""A trioserve subprocess per parser for the fuzzers, and a raw one-shot exchange."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings

from ..conftest import ROOT
from ..supervisor.procs import Server


def start_fuzz_server(*args: str) -> Server:
    """The echo app in a subprocess on a free TCP port (``server.port``), ``args`` added to
    its command line."""
    argv = ["tests.faults.apps:echo", "--bind", "127.0.0.1:0", "--no-access-log"]
    server = Server(ROOT, [*argv, "--timeout-request-head", "2", *args])
    match = server.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")[0]
    server.port = int(match.group(1))
    return server


@contextmanager
def fuzz_server_running(*args: str) -> Iterator[Server]:
    """:func:`start_fuzz_server`, stopped on the way out (a module-scoped fixture's body)."""
    server = start_fuzz_server(*args)
    try:
        yield server
    finally:
        server.stop()


def fuzz_settings(examples: int) -> settings:
    """One fuzzer test's hypothesis settings: ``examples`` examples (FAULTS_FUZZ_EXAMPLES),
    no deadline (a loaded machine is not a bug), the same examples every run unless
    FAULTS_FUZZ_RANDOM is set, and the module-scoped server allowed."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=not os.environ.get("FAULTS_FUZZ_RANDOM"),
    )


def assert_serving_without_traceback(server: Server) -> None:
    """After a fuzzer's examples (module-scoped server, file order): a plain GET is still
    answered and closed cleanly, and nothing in the server's log is a traceback or an error."""
    answer, ending = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert ending == "eof"
    assert "Traceback" not in server.output, server.output[-3000:]
    assert "ERROR" not in server.output, server.output[-3000:]


def start_h3_server(cert_dir: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """The echo app over HTTP/3 (and HTTPS) with ``cert_dir``'s cert.pem and key.pem; the
    UDP port is ``server.port``. One process, so its /proc entries are the server's."""
    port = free_udp_port()
    argv = ["tests.faults.apps:echo", "--bind", "127.0.0.1:0", "--quic-bind", f"127.0.0.1:{port}"]
    argv += ["--certfile", str(cert_dir / "cert.pem"), "--keyfile", str(cert_dir / "key.pem")]
    server = Server(ROOT, [*argv, "--no-access-log", *args], env=env)
    server.wait_for(r"Running on https://127\.0\.0\.1:\d+ \(HTTP/3")
    server.port = port
    return server


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size in KiB: VmRSS (now) or VmHWM (the peak so far)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

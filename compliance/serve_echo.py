"""Start trioserve with echo_app.py on a free loopback port for a conformance run.

The server is this interpreter's ``python -m trioserve`` (so the checkout or the installed
wheel under test is what runs), picks its own port (``--port 0``) and reports it on its
"Running on" log line; it inherits the environment, so TRIOSERVE_HTTP=h11 and the like apply.
It is stopped by its PID, never by name.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
_RUNNING = re.compile(r"Running on http://(127\.0\.0\.1):(\d+)")
SERVER_ERRORS = re.compile(r"Traceback|Unexpected error|Exception in ASGI application")


@contextmanager
def serve_echo(
    extra_args: tuple[str, ...] = (), log_path: list[Path] | None = None
) -> Iterator[tuple[str, int] | None]:
    """Yield ``(host, port)`` of a running trioserve, or None (its log printed) if it failed.

    ``log_path``, when given, receives the path of the server's log so the caller can look
    for errors the server logged during the run.
    """
    with tempfile.NamedTemporaryFile("w+b", prefix="trioserve-echo-", suffix=".log") as log:
        cmd = [sys.executable, "-m", "trioserve", "echo_app:app", "--app-dir", str(HERE)]
        cmd += ["--host", "127.0.0.1", "--port", "0", "--no-access-log", "--log-level", "info"]
        proc = subprocess.Popen([*cmd, *extra_args], stdout=log, stderr=subprocess.STDOUT)
        try:
            address = _wait_for_address(proc, Path(log.name))
            if address is None:
                sys.stderr.write("trioserve did not start; its log:\n")
                sys.stderr.write(Path(log.name).read_text(errors="replace"))
            if log_path is not None:
                log_path.append(Path(log.name))
            yield address
        finally:
            _stop(proc)


def _wait_for_address(proc: subprocess.Popen[bytes], log: Path) -> tuple[str, int] | None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        match = _RUNNING.search(log.read_text(errors="replace"))
        if match:
            return match.group(1), int(match.group(2))
        time.sleep(0.05)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def logged_errors(log: Path) -> list[str]:
    """Lines of the server log that show an error the app or the server did not expect."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if SERVER_ERRORS.search(line)]

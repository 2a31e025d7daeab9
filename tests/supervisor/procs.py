"""Run ``python -m trioserve`` in a subprocess and talk to it, stopping only our own PIDs."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

APP = """
import os
import sys

import trio

VERSION = "v1"

if os.path.exists(os.path.join(os.path.dirname(__file__), "fail-imports")):
    raise RuntimeError("told to fail at import")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        print("slow request started", file=sys.stderr, flush=True)
        await trio.sleep(1.0)
    elif scope["path"] == "/long":
        print("long request started", file=sys.stderr, flush=True)
        await trio.sleep(30)
    elif scope["path"] == "/hang":
        import time

        time.sleep(30)  # blocks the event loop: no heartbeats
    body = f"{os.getpid()} {VERSION}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def app_source(version: str = "v1") -> str:
    return APP.replace('VERSION = "v1"', f"VERSION = {version!r}")


class Server:
    """One trioserve process tree; stderr is collected line by line for assertions."""

    def __init__(
        self,
        cwd: Path,
        args: Sequence[str],
        *,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.cwd = cwd
        cmd = list(command) if command else [sys.executable, "-m", "trioserve", *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<EOF>")
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        with self._cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 10.0) -> list[re.Match[str]]:
        """Block until ``n`` log lines match ``pattern`` (woken by each new line)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                # Count matches, not lines: workers share one stderr pipe, so two of
                # their messages can land on one line.
                found = [m for line in self.lines for m in re.finditer(pattern, line)]
                if len(found) >= n:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == "<EOF>"):
                    raise AssertionError(
                        f"no {n} line(s) matching {pattern!r}; output:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(left)

    def wait_serving(self, workers: int = 1, timeout: float = 15.0) -> int:
        match = self.wait_for(r"Running on http://127\.0\.0\.1:(\d+)", timeout=timeout)[0]
        self.port = int(match.group(1))
        self.wait_for(r"Worker \d+ ready", n=workers, timeout=timeout)
        return self.port

    def worker_pids(self) -> set[int]:
        """Every worker this supervisor ever started (from its own log)."""
        with self._cond:
            lines = list(self.lines)
        return {
            int(m.group(1)) for line in lines if (m := re.search(r"Started worker (\d+)", line))
        }

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
        """One request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for anything of ours still alive."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in self.worker_pids():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stderr is not None:
            self._reader.join(timeout=5)
            self.proc.stderr.close()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


class RequestLoop:
    """Sequential requests on fresh connections in a thread; counts failures."""

    def __init__(self, server: Server, path: str = "/", *, keep_alive: bool = False) -> None:
        self.server = server
        self.path = path
        self.keep_alive = keep_alive
        self.ok: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self.keep_alive:
            self._run_keep_alive()
            return
        while not self._stop.is_set():
            try:
                status, body = self.server.get(self.path)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.ok.append(body)
            else:
                self.failures.append(f"status {status}")

    def _run_keep_alive(self) -> None:
        """One httpx client reusing its connections, as a real client would."""
        url = f"http://127.0.0.1:{self.server.port}{self.path}"
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(url)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code == 200:
                    self.ok.append(response.text)
                else:
                    self.failures.append(f"status {response.status_code}")

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def pids(self) -> set[int]:
        return {int(body.split()[0]) for body in list(self.ok)}

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .procs import Server, app_source

if not sys.platform.startswith("linux"):  # pragma: no cover - they use /proc and POSIX signals
    collect_ignore_glob = ["test_*.py"]

StartServer = Callable[..., Server]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartServer]:
    """``start(*cli_args)``: trioserve on main:app in tmp_path, port 0, stopped at teardown."""
    servers: list[Server] = []
    (tmp_path / "main.py").write_text(app_source("v1"))

    def _start(
        *args: str, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Server:
        base = ["main:app", "--port", "0", "--no-access-log", "--app-dir", str(tmp_path)]
        server = Server(tmp_path, [*base, *args], command=command, env=env)
        servers.append(server)
        return server

    try:
        yield _start
    finally:
        for server in servers:
            server.stop()

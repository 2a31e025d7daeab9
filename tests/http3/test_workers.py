"""HTTP/3 with --workers 2: every worker binds the UDP port with SO_REUSEPORT, the kernel
keeps each client address on one worker, and the supervisor warns about the caveats."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tests.h3client import free_udp_port, h3_client
from tests.supervisor.procs import Server, app_source

from .conftest import Certs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT")


def test_two_workers_share_the_udp_port(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(app_source("v1"))
    port = free_udp_port()
    args = [
        "main:app",
        "--bind",
        "127.0.0.1:0",
        "--app-dir",
        str(tmp_path),
        "--no-access-log",
        "--workers",
        "2",
        "--certfile",
        str(certs.cert_file),
        "--keyfile",
        str(certs.key_file),
        "--quic-bind",
        f"127.0.0.1:{port}",
    ]
    server = Server(tmp_path, args)
    try:
        server.wait_for(r"Worker \d+ ready", n=2, timeout=20)
        server.wait_for(r"HTTP/3 with 2 worker\(s\) under the supervisor: each worker binds")
        assert server.count(r"Running on https://127\.0\.0\.1:\d+ \(HTTP/3") == 2

        async def clients() -> list[str]:
            bodies = []
            for _ in range(16):  # each client has its own source port
                async with h3_client(port, str(certs.ca_file)) as client:
                    for _ in range(2):
                        result = await client.request(b"/")
                        assert result.status == 200
                        bodies.append(bytes(result.body).decode())
            return bodies

        bodies = trio.run(clients)
        pids = {int(body.split()[0]) for body in bodies}
        assert pids <= server.worker_pids()
        assert len(pids) == 2  # 16 addresses all hashed to one worker: odds 2**-15
    finally:
        server.stop()

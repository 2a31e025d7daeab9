"""Item 6: out of descriptors in the accept loop is logged once per episode, not 10/s."""

from __future__ import annotations

import socket
import sys
import time

from ..conftest import ROOT
from ..supervisor.procs import Server

# The server process gets this few descriptors; the flood takes more than are left.
_LIMIT = 48
_FLOOD = 80

_LAUNCH = (
    "import resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({_LIMIT}, {_LIMIT}))\n"
    "from trioserve.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_descriptor_exhaustion_is_logged_once_per_episode_and_recovers() -> None:
    args = ["tests.faults.apps:hello", "--bind", "127.0.0.1:0", "--backlog", "256"]
    server = Server(ROOT, args, command=[sys.executable, "-c", _LAUNCH, *args])
    flood: list[socket.socket] = []
    try:
        match = server.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")[0]
        server.port = int(match.group(1))
        for _ in range(_FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        server.wait_for(r"accept\(\) on .* failed with EMFILE", timeout=10)
        time.sleep(1.5)  # the episode goes on: more failed attempts, no more lines
        assert server.count(r"EMFILE") == 1, server.output
        for sock in flood:
            sock.close()
        flood.clear()
        server.wait_for(r"accept\(\) on .* works again after \d+ failed attempt", timeout=10)
        status, body = server.get("/")
        assert status == 200
        assert body.isdigit()
        assert server.count(r"EMFILE") == 1, server.output
    finally:
        for sock in flood:
            sock.close()
        server.stop()

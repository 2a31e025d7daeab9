from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..supervisor.procs import Server
from .fuzzserver import fuzz_server_running


@pytest.fixture(scope="module", params=["h11", "httptools"])
def fuzz_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The HTTP/1.1 fuzzers' echo server, once per parser and module: a module's last test
    reads what the server logged during the fuzzing before it."""
    with fuzz_server_running("--http", request.param, "--timeout-request-body", "2") as server:
        yield server

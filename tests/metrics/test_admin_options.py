"""The metrics listener's limits (issue 22, row 6) are options: --metrics-max-connections
and --metrics-request-timeout change when an idle connection is closed, end to end
through the CLI (the defaults, 64 and 5 s, would keep every connection here open)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ..conftest import ROOT
from ..supervisor.procs import Server
from .test_admin_listener import _closed_within

pytest.importorskip("prometheus_client")


@pytest.fixture
def admin_port() -> Iterator[int]:
    args = ["tests.faults.apps:hello", "--bind", "127.0.0.1:0", "--no-access-log"]
    limits = ["--metrics-max-connections", "2", "--metrics-request-timeout", "2"]
    proc = Server(ROOT, [*args, "--metrics-bind", "127.0.0.1:0", *limits])
    try:
        url = proc.wait_for(r"Metrics and health on http://127\.0\.0\.1:(\d+)")[0]
        proc.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")
        yield int(url.group(1))
    finally:
        proc.stop()


def test_connection_cap_and_deadline_are_options(admin_port: int) -> None:
    start = time.monotonic()
    first, second, third = (socket.create_connection(("127.0.0.1", admin_port)) for _ in "abc")
    with first, second, third:
        # The third connection is one over the cap: the oldest is closed to make room,
        # well before anyone's deadline.
        assert _closed_within(first, 1.0)
        assert not _closed_within(second, 0.1)
        # The others are closed at their 2 s deadline (the default is 5 s).
        assert _closed_within(second, 3.5)
        assert _closed_within(third, 1.0)
        assert time.monotonic() - start < 4.5

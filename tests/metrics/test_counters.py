"""The counter array: every request lands in exactly one slot, and scrapes sum workers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioserve.metrics.counters import (
    DURATION_BUCKETS,
    HTTP_VERSIONS,
    METHODS,
    STATUS_CLASSES,
    Counters,
    Layout,
    read_snapshot,
    request_slot,
)
from trioserve.metrics.exposition import HostNumbers, render

from .helpers import parse, total, value


@given(st.text(max_size=12), st.integers(-5, 1200), st.text(max_size=5))
def test_every_request_has_a_slot_of_its_own_kind(method: str, status: int, version: str) -> None:
    slot = request_slot(method, status, version)
    assert Layout.requests <= slot < Layout.buckets
    per_method = len(STATUS_CLASSES) * len(HTTP_VERSIONS)
    name = METHODS[slot // per_method]
    assert name == (method if method in METHODS[:-1] else "other")
    status_class = STATUS_CLASSES[(slot % per_method) // len(HTTP_VERSIONS)]
    assert status_class == (f"{status // 100}xx" if 100 <= status <= 599 else "none")


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=50))
def test_histogram_is_cumulative_and_counts_everything(durations: list[float]) -> None:
    counters = Counters()
    try:
        for d in durations:
            counters.request_done("GET", 200, "1.1", d, 0, 0)
        samples = parse(render(HostNumbers(live=[counters.snapshot()])).decode())
    finally:
        counters.close()
    assert value(samples, "trioserve_request_duration_seconds_count") == len(durations)
    for bound in DURATION_BUCKETS:
        expected = sum(1 for d in durations if d <= bound)
        assert value(samples, "trioserve_request_duration_seconds_bucket", le=repr(bound)) == (
            expected
        )


def test_a_file_backed_array_is_read_by_another_reader(tmp_path: Path) -> None:
    path = f"{tmp_path}/worker.counters"
    counters = Counters(path)
    for _ in range(3):
        counters.request_done("POST", 201, "1.1", 0.01, 5, 7)
    counters.set_gauges(in_flight=2, connections=4, websockets=1)
    snapshot = read_snapshot(path)
    counters.close()
    assert snapshot is not None
    retired = list(snapshot)
    numbers = HostNumbers(live=[snapshot], retired=[v if i < Layout.in_flight else 0
                                                    for i, v in enumerate(retired)])  # fmt: skip
    samples = parse(render(numbers).decode())
    # Counters: live + retired; gauges: live only.
    assert total(samples, "trioserve_requests_total") == 6
    assert value(samples, "trioserve_bytes_received_total") == 30
    assert value(samples, "trioserve_requests_in_flight") == 2
    assert value(samples, "trioserve_connections_open") == 4
    assert read_snapshot(f"{tmp_path}/missing") is None


def test_metrics_bind_without_the_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from trioserve.config import Config, ConfigError
    from trioserve.server.observe import check_metrics_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'trioserve\[metrics\]'"):
        check_metrics_extra(Config(metrics_bind="127.0.0.1:0"))
    check_metrics_extra(Config(statsd_host="127.0.0.1:8125"))  # StatsD needs no extra

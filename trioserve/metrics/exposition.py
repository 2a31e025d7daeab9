"""Prometheus text for ``/metrics``, built from counter arrays at scrape time.

prometheus-client (the ``metrics`` extra) writes the exposition format; trioserve only
hands it metric families. Counters are summed over every worker that ever ran in this
server (live and exited: a restart must not make a counter go down); gauges over the
live workers only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .counters import (
    DURATION_BUCKETS,
    HTTP_VERSIONS,
    LIFESPAN_STATES,
    METHODS,
    REFUSAL_REASONS,
    SLOTS,
    STATUS_CLASSES,
    Layout,
)

__all__ = ["CONTENT_TYPE_LATEST", "HostNumbers", "render"]


@dataclass
class HostNumbers:
    """What one scrape reports: counter arrays plus the supervisor's own counts."""

    live: list[list[int]]  # one array per running worker (or the single process)
    retired: list[int] = field(default_factory=lambda: [0] * SLOTS)  # exited workers, summed
    supervised: bool = False
    shutting_down: bool = False
    worker_starts: int = 0
    worker_exits: dict[str, int] = field(default_factory=dict)  # by cause
    worker_restarts: dict[str, int] = field(default_factory=dict)  # by cause


def _sum(arrays: Iterable[Sequence[int]], start: int, stop: int) -> list[int]:
    total = [0] * (stop - start)
    for values in arrays:
        for i in range(start, stop):
            total[i - start] += values[i]
    return total


class _HostCollector(Collector):
    def __init__(self, numbers: HostNumbers) -> None:
        self.numbers = numbers

    def collect(self) -> Iterator[Metric]:
        n = self.numbers
        every = [*n.live, n.retired]
        c = _sum(every, 0, Layout.in_flight)
        yield from _requests(c)
        yield _counter("bytes_received", "Request body bytes received.", c[Layout.bytes_received])
        yield _counter("bytes_sent", "Response body bytes sent.", c[Layout.bytes_sent])
        yield _counter("app_exceptions", "Exceptions raised by the app.", c[Layout.app_exceptions])
        refusals = CounterMetricFamily(
            "trioserve_refusals",
            "Requests refused by the server itself, by status.",
            labels=["reason"],
        )
        for i, reason in enumerate(REFUSAL_REASONS):
            refusals.add_metric([reason], c[Layout.refusals + i])
        yield refusals
        yield _counter(
            "websockets", "WebSocket sessions (and refused upgrades).", c[Layout.websockets_total]
        )
        g = _sum(n.live, Layout.in_flight, Layout.lifespan_state)
        yield _gauge("requests_in_flight", "Requests being served.", g[0])
        yield _gauge("connections_open", "Open client connections.", g[1])
        yield _gauge("websockets_open", "Open WebSockets.", g[2])
        states = GaugeMetricFamily(
            "trioserve_lifespan_state",
            "Processes in each lifespan state (starting, serving, draining, stopped).",
            labels=["state"],
        )
        for index, name in enumerate(LIFESPAN_STATES):
            count = sum(1 for values in n.live if values[Layout.lifespan_state] == index)
            states.add_metric([name], count)
        yield states
        yield _gauge(
            "shutting_down", "1 once this server has begun to shut down.", int(n.shutting_down)
        )
        if n.supervised:
            yield from _workers(n)


def _requests(c: list[int]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "trioserve_requests",
        "HTTP requests finished, by method, status class and HTTP version.",
        labels=["method", "status_class", "http_version"],
    )
    index = 0
    for method in METHODS:
        for status in STATUS_CLASSES:
            for version in HTTP_VERSIONS:
                if c[index]:
                    requests.add_metric([method, status, version], c[index])
                index += 1
    yield requests
    cumulative = 0
    buckets = []
    for i, bound in enumerate((*DURATION_BUCKETS, float("inf"))):
        cumulative += c[Layout.buckets + i]
        buckets.append((repr(bound) if bound != float("inf") else "+Inf", cumulative))
    yield HistogramMetricFamily(
        "trioserve_request_duration_seconds",
        "Time from the request head to the end of the response.",
        buckets=buckets,
        sum_value=c[Layout.duration_us] / 1_000_000,
    )


def _workers(n: HostNumbers) -> Iterator[Metric]:
    yield _gauge("workers", "Worker processes running.", len(n.live))
    yield _counter("worker_starts", "Worker processes started.", n.worker_starts)
    exits = CounterMetricFamily(
        "trioserve_worker_exits", "Worker processes that exited, by cause.", labels=["cause"]
    )
    for cause, count in sorted(n.worker_exits.items()):
        exits.add_metric([cause], count)
    yield exits
    restarts = CounterMetricFamily(
        "trioserve_worker_restarts", "Worker replacements started, by cause.", labels=["cause"]
    )
    for cause, count in sorted(n.worker_restarts.items()):
        restarts.add_metric([cause], count)
    yield restarts


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"trioserve_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"trioserve_{name}", doc, value=value)


def render(numbers: HostNumbers) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HostCollector(numbers))
    return generate_latest(registry)

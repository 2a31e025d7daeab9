"""Metrics, StatsD and the admin listener for one serving process.

:class:`Observer` owns what ``serve()`` needs for them: the counters (in the run's
metrics directory under a supervisor), the StatsD client, and - for a server that is not
supervised - the admin listener, to which it answers ``/metrics``, ``/healthz`` and
``/readyz`` itself. A sampler task copies the live gauges into the counters and flushes
StatsD; it is also the event loop's heartbeat that ``/healthz`` reads.
"""

from __future__ import annotations

import importlib.util
import time

import trio

from ..binds import create_socket, parse_bind
from ..config import Config, ConfigError
from ..logs import error_log
from ..metrics import admin as admin_module
from ..metrics.admin import AdminServer
from ..metrics.counters import Counters, Layout, Metrics, lifespan_name
from ..metrics.statsd import StatsD, StatsDLogHandler
from .state import ServerState

SAMPLE_INTERVAL = 0.5


def check_metrics_extra(config: Config) -> None:
    if config.metrics_bind and importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError("metrics_bind needs prometheus-client: pip install 'trioserve[metrics]'")


class Observer:
    """The metrics side of one ``serve()``; a no-op when nothing is configured."""

    def __init__(self, config: Config, metrics_path: str | None = None) -> None:
        self.config = config
        self.state: ServerState | None = None
        self.statsd: StatsD | None = None
        self._log_handler: StatsDLogHandler | None = None
        self.admin: AdminServer | None = None
        wanted = bool(config.metrics_bind or config.statsd_host or metrics_path)
        if not wanted:
            self.metrics: Metrics = Metrics()
            return
        check_metrics_extra(config)
        counters = Counters(metrics_path)
        self.metrics = counters
        if config.statsd_host:
            self.statsd = StatsD(config.statsd_host, config.statsd_prefix, config.dogstatsd_tags)
            counters.listeners.append(self.statsd.request_done)
            self._log_handler = StatsDLogHandler(self.statsd)
            error_log.addHandler(self._log_handler)
        if config.metrics_bind and metrics_path is None:
            # Not supervised: this process answers the admin listener itself.
            sock = create_socket(parse_bind(config.metrics_bind), backlog=64)
            self.admin = AdminServer(
                sock,
                self,
                max_connections=config.metrics_max_connections,
                deadline=config.metrics_request_timeout,
            )
            self.admin.start()

    async def run(self) -> None:
        """The sampler: gauges in, StatsD out, and the heartbeat ``/healthz`` looks at."""
        if not self.metrics.enabled:
            return
        while True:
            self.sample()
            await trio.sleep(SAMPLE_INTERVAL)

    def sample(self) -> None:
        state = self.state
        if state is not None:
            self.metrics.set_gauges(state.in_flight, state.connections, state.websockets)
        elif isinstance(self.metrics, Counters):
            self.metrics.tick()
        if self.statsd is not None:
            self.statsd.flush()

    async def linger(self) -> None:
        """After a graceful stop: the admin listener answers a while with the final counts."""
        if self.admin is not None and self.config.metrics_linger > 0:
            self.metrics.set_lifespan("stopped")
            self.sample()
            await trio.sleep(self.config.metrics_linger)

    def close(self) -> None:
        self.metrics.set_lifespan("stopped")
        if self.state is not None:
            self.sample()
        if self.admin is not None:
            self.admin.close()
        if self._log_handler is not None:
            error_log.removeHandler(self._log_handler)
        if self.statsd is not None:
            self.statsd.close()
        self.metrics.close()

    # -- AdminSource -------------------------------------------------------------------------
    def _values(self) -> list[int]:
        assert isinstance(self.metrics, Counters)
        return self.metrics.snapshot()

    def metrics_text(self) -> bytes | None:
        if not isinstance(self.metrics, Counters):
            return None
        from ..metrics.exposition import HostNumbers, render

        values = self._values()
        state = self.state
        if state is not None:  # the freshest gauges, not the last sample's
            values[Layout.in_flight] = state.in_flight
            values[Layout.connections] = state.connections
            values[Layout.websockets] = state.websockets
        shutting_down = state is not None and state.shutting_down
        return render(HostNumbers(live=[values], shutting_down=shutting_down))

    def health(self) -> tuple[bool, str]:
        age = time.monotonic() - self._values()[Layout.tick_ms] / 1000
        if age > admin_module.STALE_LOOP_SECONDS:
            return False, f"event loop blocked for {age:.1f}s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        state = lifespan_name(self._values()[Layout.lifespan_state])
        return state == "serving", state

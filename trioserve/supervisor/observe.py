"""The supervisor's side of metrics: the run's counters directory and the admin listener.

Each worker counts into its own small file in a directory made for this run (removed when
the supervisor exits). A scrape sums them: every worker alive now, plus the counts of
those that exited, folded into ``retired`` when they are reaped (their files are then
deleted, so recycling workers for weeks leaves no trail of files). ``/readyz`` is the
host's answer: ready while a worker serves and nothing is draining.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from ..binds import create_socket, parse_bind
from ..config import Config
from ..logs import error_log
from ..metrics.admin import AdminServer
from ..metrics.counters import SLOTS, Layout, lifespan_name, read_snapshot


class Worker(Protocol):
    """What the observer reads of a worker (``manager.Worker``; typed here rather than
    imported, since the manager imports this module)."""

    @property
    def pid(self) -> int: ...
    @property
    def ready(self) -> bool: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def killed(self) -> bool: ...
    @property
    def wants_restart(self) -> bool: ...


class Supervisor(Protocol):
    """What the observer reads of the supervisor (``manager.Supervisor``)."""

    @property
    def stopping(self) -> bool: ...
    @property
    def workers(self) -> Sequence[Worker]: ...


def exit_cause(worker: Worker, code: int) -> str:
    """The ``cause`` label of a worker's exit."""
    if worker.killed:
        return "killed"  # by the supervisor: a blocked loop, or a drain that overran
    if worker.stopping:
        return "stopped"
    if code < 0:
        return "signal"
    return "exited" if code == 0 else "failed"


class SupervisorObserver:
    """Counts worker starts, exits and restarts; answers the admin listener."""

    def __init__(self, config: Config, supervisor: Supervisor) -> None:
        from ..server.observe import check_metrics_extra

        check_metrics_extra(config)
        self.supervisor = supervisor
        self.directory = tempfile.mkdtemp(prefix="trioserve-metrics-")
        self.retired = [0] * SLOTS
        self.merged: set[int] = set()
        self.starts = 0
        self.exits: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.admin: AdminServer | None = None
        assert config.metrics_bind
        try:
            sock = create_socket(parse_bind(config.metrics_bind), backlog=64)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.admin = AdminServer(
            sock,
            self,
            max_connections=config.metrics_max_connections,
            deadline=config.metrics_request_timeout,
        )
        self.admin.start()
        error_log.info("Workers count into %s", self.directory)

    def path(self, pid: int) -> str:
        return os.path.join(self.directory, f"worker-{pid}.counters")

    def started(self, worker: Worker, restart_cause: str | None) -> None:
        self.starts += 1
        if restart_cause is not None:
            self.restarts[restart_cause] += 1

    def exited(self, worker: Worker, code: int) -> None:
        """Fold a reaped worker's final counts into ``retired`` and delete its file."""
        self.exits[exit_cause(worker, code)] += 1
        if worker.ready and not worker.stopping and not self.supervisor.stopping:
            self.restarts["killed" if worker.killed else "died"] += 1
        path = self.path(worker.pid)
        values = read_snapshot(path)
        with self._lock:
            if values is not None:
                for i in range(Layout.in_flight):  # counters only: its gauges died with it
                    self.retired[i] += values[i]
            self.merged.add(worker.pid)
        try:
            os.unlink(path)
        except OSError:
            pass

    def close(self, linger: float = 0.0) -> None:
        if linger > 0 and self.admin is not None:
            error_log.info("Workers stopped; metrics stay up for %ss", linger)
            time.sleep(linger)  # the admin thread answers meanwhile, with the final counts
        if self.admin is not None:
            self.admin.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- AdminSource (called from the admin thread) ---------------------------------------
    def _live(self) -> tuple[list[tuple[Worker, list[int]]], list[int]]:
        out = []
        with self._lock:
            for worker in list(self.supervisor.workers):
                if worker.pid in self.merged:
                    continue
                values = read_snapshot(self.path(worker.pid))
                if values is not None and values[Layout.pid] == worker.pid:
                    out.append((worker, values))
            retired = list(self.retired)
        return out, retired

    def metrics_text(self) -> bytes | None:
        from ..metrics.exposition import HostNumbers, render

        live, retired = self._live()
        numbers = HostNumbers(
            live=[values for _, values in live],
            retired=retired,
            supervised=True,
            shutting_down=self.supervisor.stopping,
            worker_starts=self.starts,
            worker_exits=dict(self.exits),
            worker_restarts=dict(self.restarts),
        )
        return render(numbers)

    def health(self) -> tuple[bool, str]:
        # The supervisor answers, so it is alive; a worker whose loop blocks is its job
        # (worker_timeout), not a reason to restart the whole host.
        return True, f"alive: {len(self.supervisor.workers)} worker(s)"

    def readiness(self) -> tuple[bool, str]:
        supervisor = self.supervisor
        if supervisor.stopping:
            return False, "shutting down"
        serving = 0
        for worker, values in self._live()[0]:
            state = lifespan_name(values[Layout.lifespan_state])
            if state == "draining" or worker.stopping or worker.wants_restart:
                return False, f"draining: worker {worker.pid} is being replaced"
            if state == "serving":
                serving += 1
        if not serving:
            return False, "starting: no worker serves yet"
        return True, f"ready: {serving} worker(s) serving"

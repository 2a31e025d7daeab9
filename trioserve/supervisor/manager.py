"""The supervisor: worker processes on shared sockets, restarts, signals, reload.

Plain Python, single-threaded, event-driven: the one place it blocks is a selector over
the signal wake-up socket (``signal.set_wakeup_fd``; SIGCHLD included), every worker's
channel and the reload watcher, with a timeout equal to the nearest deadline (a heartbeat,
a stop, a back-off). Nothing is polled on a fixed tick.

Every worker owns a *slot*. A worker that must be replaced (SIGHUP, reload, max_requests)
gets a *successor*; the successor takes over the slot once it reports READY, and only then
is the old worker asked to drain. If the successor dies first, the old one keeps serving.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from ..binds import Bind, socket_url
from ..config import Config
from ..exit_codes import EXIT_ERROR, EXIT_OK, EXIT_STARTUP_FAILED, EXIT_USAGE
from ..logs import error_log
from .observe import SupervisorObserver
from .policy import backoff_delay, describe_exit
from .protocol import FORCE, READY, RETIRE, STOP, Payload, send_payload, set_process_title
from .reload import Watcher

HANDLED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)
# Exit codes that mean "this app cannot start": before any worker ever served, give up.
FATAL_STARTUP_CODES = (EXIT_ERROR, EXIT_USAGE, EXIT_STARTUP_FAILED)


@dataclass(eq=False)
class Worker:
    proc: subprocess.Popen[bytes]
    channel: socket.socket
    started: float
    last_seen: float
    ready: bool = False
    stopping: bool = False
    kill_at: float | None = None
    wants_restart: bool = False
    successor: Worker | None = None
    predecessor: Worker | None = None
    channel_open: bool = True
    killed: bool = False
    restart_cause: str = "died"  # why its replacement is started (a metrics label)

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    def __init__(
        self,
        config: Config,
        sockets: list[tuple[Bind, socket.socket]],
        watcher: Watcher | None = None,
    ) -> None:
        self.config = config
        self.sockets = sockets
        self.watcher = watcher
        self.target = max(1, config.workers)
        self.workers: list[Worker] = []
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.forced = False
        self.failures = 0
        self.respawn_at = 0.0
        self.ever_ready = False
        self.paused = False  # reload mode: the code doesn't start; wait for the next change
        self.exit_code = EXIT_OK
        self.heartbeat_interval = max(0.05, min(1.0, config.worker_timeout / 4))
        self.observer = SupervisorObserver(config, self) if config.metrics_bind else None
        app = config.application_path
        self.title = f"trioserve: worker [{app}]"
        set_process_title(f"trioserve: supervisor [{app}]")

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {s: signal.signal(s, _noop) for s in HANDLED_SIGNALS}
        self.selector.register(wake_r, selectors.EVENT_READ, "signals")
        if self.watcher is not None:
            self.selector.register(self.watcher.fileno(), selectors.EVENT_READ, "reload")
            self.watcher.start()
        urls = ", ".join(socket_url(bind, sock) for bind, sock in self.sockets)
        error_log.info(
            "Supervisor %d serving %s with %d worker(s)%s",
            os.getpid(),
            urls,
            self.target,
            " and reload" if self.watcher is not None else "",
        )
        try:
            self.reconcile(time.monotonic())
            while not (self.stopping and not self.workers):
                for key, _ in self.selector.select(self.next_timeout(time.monotonic())):
                    if key.data == "signals":
                        self.on_signals(wake_r)
                    elif key.data == "reload":
                        self.on_changes()
                    else:
                        self.on_message(key.data)
                now = time.monotonic()
                self.reap(now)
                self.check_deadlines(now)
                self.reconcile(now)
        finally:
            for worker in list(self.workers):
                self.kill(worker, "the supervisor is exiting")
            for worker in list(self.workers):
                try:
                    worker.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL ignored
                    pass
                self.forget(worker)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(old_wakeup)
            if self.observer is not None:
                self.observer.close(linger=self.config.metrics_linger)
            self.selector.close()
            wake_r.close()
            wake_w.close()
        error_log.info("Supervisor %d exiting", os.getpid())
        return self.exit_code

    def next_timeout(self, now: float) -> float | None:
        deadlines = [self.respawn_at] if self.needs_spawn() else []
        for w in self.workers:
            if w.killed:
                continue  # SIGCHLD comes next
            deadlines.append(self.liveness_deadline(w))
            if w.kill_at is not None:
                deadlines.append(w.kill_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    # --- events ---------------------------------------------------------------------------

    def on_signals(self, wake_r: socket.socket) -> None:
        try:
            data = wake_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGCHLD:
                continue  # reap() runs after every wake-up
            name = signal.Signals(signum).name
            if signum in (signal.SIGINT, signal.SIGTERM):
                self.shutdown(name)
            elif signum == signal.SIGHUP:
                if not self.stopping:
                    error_log.info("Received SIGHUP: rolling restart of all workers")
                    self.paused = False  # also a manual retry after start-up failures
                    self.failures = 0
                    self.respawn_at = 0.0
                    self.restart_all("sighup")
            elif signum == signal.SIGTTIN and not self.stopping:
                self.target += 1
                error_log.info("Received SIGTTIN: workers %d -> %d", self.target - 1, self.target)
            elif signum == signal.SIGTTOU and not self.stopping:
                if self.target > 1:
                    self.target -= 1
                    error_log.info(
                        "Received SIGTTOU: workers %d -> %d", self.target + 1, self.target
                    )
                else:
                    error_log.info("Received SIGTTOU: keeping the last worker")

    def shutdown(self, name: str) -> None:
        if not self.stopping:
            self.stopping = True
            error_log.info(
                "Received %s: stopping %d worker(s), waiting up to %ss for requests in flight",
                name,
                len(self.workers),
                self.config.graceful_timeout,
            )
            for w in list(self.workers):
                self.stop(w)
        elif name == "SIGINT" and not self.forced:
            # Only a second Ctrl+C means "now": SIGTERM often arrives twice by accident
            # (timeout(1) and some process managers signal the process and its group).
            self.forced = True
            error_log.info("Received SIGINT again: cancelling the workers' requests in flight")
            for w in self.workers:
                self.send(w, FORCE)
        elif name == "SIGTERM":
            error_log.info("Received SIGTERM again: still draining (SIGINT twice cancels)")

    def on_changes(self) -> None:
        assert self.watcher is not None
        changes = self.watcher.take_changes()
        if not changes or self.stopping:
            return
        shown = ", ".join(_short(p) for p in changes[:3])
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        error_log.info("Detected changes in %s%s; reloading", shown, more)
        self.paused = False
        self.failures = 0
        self.respawn_at = 0.0
        self.restart_all("reload")

    def restart_all(self, cause: str) -> None:
        """Mark every slot for replacement; a successor with old code is dropped."""
        for w in list(self.workers):
            if w.stopping or w.predecessor is not None:
                continue
            w.wants_restart = True
            w.restart_cause = cause
            if w.successor is not None:
                stale, w.successor = w.successor, None
                stale.predecessor = None
                self.stop(stale)

    def on_message(self, worker: Worker) -> None:
        try:
            data = worker.channel.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close_channel(worker)
            return
        worker.last_seen = time.monotonic()
        if READY in data and not worker.ready:
            self.on_ready(worker)
        if RETIRE in data and not worker.stopping and not worker.wants_restart:
            error_log.info("Worker %d reached max_requests; starting its replacement", worker.pid)
            worker.wants_restart = True
            worker.restart_cause = "max_requests"

    def on_ready(self, worker: Worker) -> None:
        worker.ready = True
        if worker.stopping:
            return  # a successor made stale by a newer reload: it drains at once
        self.ever_ready = True
        self.failures = 0
        old = worker.predecessor
        if old is not None:
            worker.predecessor = None
            old.successor = None
            error_log.info("Worker %d ready; worker %d drains and stops", worker.pid, old.pid)
            self.stop(old)
        else:
            error_log.info("Worker %d ready", worker.pid)

    # --- processes ------------------------------------------------------------------------

    def spawn(self, predecessor: Worker | None = None) -> Worker:
        parent, child = socket.socketpair()
        fds = [sock.fileno() for _, sock in self.sockets]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trioserve.supervisor.worker", str(child.fileno())],
                pass_fds=[child.fileno(), *fds],
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        now = time.monotonic()
        worker = Worker(proc=proc, channel=parent, started=now, last_seen=now)
        payload = Payload(
            config=self.config,
            binds=[bind for bind, _ in self.sockets],
            fds=fds,
            sys_path=list(sys.path),
            heartbeat_interval=self.heartbeat_interval,
            title=self.title,
            metrics_dir=None if self.observer is None else self.observer.directory,
        )
        try:
            send_payload(parent, payload)
        except OSError:
            pass  # it died already: reap() reports it
        parent.setblocking(False)
        self.selector.register(parent, selectors.EVENT_READ, worker)
        self.workers.append(worker)
        if self.observer is not None:
            self.observer.started(worker, predecessor.restart_cause if predecessor else None)
        if predecessor is not None:
            predecessor.successor = worker
            worker.predecessor = predecessor
            error_log.info("Started worker %d to replace worker %d", proc.pid, predecessor.pid)
        else:
            error_log.info("Started worker %d", proc.pid)
        return worker

    def stop(self, worker: Worker) -> None:
        """Ask for a graceful stop; SIGKILL follows if it outlives its drain and shutdown."""
        if worker.stopping:
            return
        worker.stopping = True
        grace = self.config.graceful_timeout + self.config.shutdown_timeout + 5.0
        worker.kill_at = time.monotonic() + grace
        self.send(worker, STOP)

    def send(self, worker: Worker, command: bytes) -> None:
        if worker.channel_open:
            try:
                worker.channel.send(command)
            except OSError:
                pass  # gone: reap() reports it

    def kill(self, worker: Worker, why: str) -> None:
        if worker.proc.poll() is None and not worker.killed:
            worker.killed = True
            error_log.warning("Killing worker %d: %s", worker.pid, why)
            _signal(worker, signal.SIGKILL)

    def close_channel(self, worker: Worker) -> None:
        if worker.channel_open:
            worker.channel_open = False
            self.selector.unregister(worker.channel)
            worker.channel.close()

    def forget(self, worker: Worker) -> None:
        self.close_channel(worker)
        if worker in self.workers:
            self.workers.remove(worker)

    def reap(self, now: float) -> None:
        for worker in list(self.workers):
            code = worker.proc.poll()
            if code is not None:
                self.forget(worker)
                if self.observer is not None:
                    self.observer.exited(worker, code)
                self.on_exit(worker, code, now)

    def on_exit(self, worker: Worker, code: int, now: float) -> None:
        how = describe_exit(code)
        old, new = worker.predecessor, worker.successor
        if old is not None:
            old.successor = None
        if new is not None:
            new.predecessor = None  # the successor inherits the slot now
        if worker.stopping:
            error_log.info("Worker %d stopped (%s)", worker.pid, how)
            return
        if worker.ready:
            if code == 0:  # e.g. someone sent it SIGTERM: it drained and left
                error_log.info("Worker %d exited (%s); starting a new one", worker.pid, how)
            else:
                error_log.error("Worker %d died (%s); starting a new one", worker.pid, how)
            return
        # Died before it ever served: a start-up failure.
        self.failures += 1
        if self.watcher is not None:
            if old is not None:
                error_log.error(
                    "Reload failed: the new worker %d exited before serving (%s). Still "
                    "serving the previous code from worker %d; fix the error and save again.",
                    worker.pid,
                    how,
                    old.pid,
                )
                old.wants_restart = False
            else:
                error_log.error(
                    "Worker %d exited before serving (%s); waiting for file changes to retry",
                    worker.pid,
                    how,
                )
                self.paused = True
            return
        if not self.ever_ready and code in FATAL_STARTUP_CODES:
            error_log.error(
                "Worker %d could not start (%s) and no worker ever served; giving up",
                worker.pid,
                how,
            )
            self.exit_code = code
            self.stopping = True
            for w in list(self.workers):
                self.stop(w)
            return
        delay = backoff_delay(self.failures)
        self.respawn_at = now + delay
        error_log.error(
            "Worker %d exited before serving (%s); %d start-up failure(s) in a row, "
            "next attempt in %.1fs",
            worker.pid,
            how,
            self.failures,
            delay,
        )

    def liveness_deadline(self, worker: Worker) -> float:
        if worker.ready:
            return worker.last_seen + self.config.worker_timeout
        return worker.started + self.config.startup_timeout + self.config.worker_timeout

    def check_deadlines(self, now: float) -> None:
        for w in list(self.workers):
            if w.killed:
                continue
            if w.kill_at is not None and now >= w.kill_at:
                self.kill(w, "it did not stop in time")
            elif now >= self.liveness_deadline(w):
                if w.ready:
                    why = f"no heartbeat for {self.config.worker_timeout}s (event loop blocked?)"
                else:
                    why = "it did not start serving in time"
                self.kill(w, why)

    # --- keeping the slots filled ---------------------------------------------------------

    def slots(self) -> list[Worker]:
        return [w for w in self.workers if not w.stopping and w.predecessor is None]

    def needs_spawn(self) -> bool:
        if self.stopping or self.paused:
            return False
        slots = self.slots()
        return len(slots) < self.target or any(
            w.wants_restart and w.successor is None for w in slots
        )

    def reconcile(self, now: float) -> None:
        if self.stopping:
            return
        slots = self.slots()
        for w in sorted(slots, key=lambda w: w.started)[: max(0, len(slots) - self.target)]:
            error_log.info("Stopping worker %d (fewer workers wanted)", w.pid)
            if w.successor is not None:
                self.stop(w.successor)
            self.stop(w)
        if self.paused or now < self.respawn_at:
            return
        slots = self.slots()
        try:
            for w in slots:
                if w.wants_restart and w.successor is None:
                    self.spawn(predecessor=w)
            for _ in range(self.target - len(slots)):
                self.spawn()
        except OSError as exc:  # e.g. out of processes or file descriptors
            self.failures += 1
            self.respawn_at = now + backoff_delay(self.failures)
            error_log.error(
                "Could not start a worker: %s; next attempt in %.1fs",
                exc,
                self.respawn_at - now,
            )


def _noop(signum: int, frame: object) -> None:
    """The signal is read from the wake-up fd; the handler only has to exist."""


def _signal(worker: Worker, signum: int) -> None:
    try:
        worker.proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _short(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path
